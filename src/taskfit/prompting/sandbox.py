"""Running a model-written program: a separate Python process with a time and memory limit, no network, no file
access outside a fresh temporary folder, and only a small set of modules.

The child (``python -I -S``: no user site, no environment) imports the allowed modules first, then installs an
audit hook (PEP 578) that refuses, for the rest of its life, every socket, process, ctypes and ``os`` file-system
event and every ``open`` of a path outside its folder; the program's ``import`` statements go through an allow-list.
The parent kills it at the time limit; ``RLIMIT_AS`` bounds its memory and ``RLIMIT_CPU`` / ``RLIMIT_FSIZE`` back
the rest up. Whatever the program does, the caller gets a :class:`ProgramRun` — never an exception.

The result is the program's ``answer`` variable when it sets one, else the last line it printed, else (PAL's
convention) the return value of its ``solution()`` function, or of the last function it defines that takes no
arguments.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass

ALLOWED_MODULES = ("math", "cmath", "fractions", "decimal", "statistics", "itertools", "functools", "collections",
                   "operator", "re", "string", "datetime", "heapq", "bisect", "numbers", "random", "calendar")
OUTPUT_LIMIT = 4000  # characters of stdout / error text kept
MARKER = "\x1etaskfit-sandbox-result\x1e"  # the child's report follows the last one on its stdout

_CHILD = r'''
import builtins, json, os, resource, sys
folder, memory, cpu_s, allowed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), set(sys.argv[4].split(","))
MARKER, LIMIT = sys.argv[5], int(sys.argv[6])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
for name in sorted(allowed):
    __import__(name)
import io, traceback
os.chdir(folder)
code = sys.stdin.read()
real_stdout = sys.stdout
inside = os.path.realpath(folder) + os.sep
BLOCKED = ("socket.", "subprocess.", "os.", "ctypes.", "shutil.", "winreg.", "_posixsubprocess.", "pty.", "fcntl.",
           "mmap.", "resource.", "signal.", "sys.setprofile", "sys.settrace", "webbrowser.", "urllib.")

def hook(event, args):
    if event == "open":
        path = args[0]
        if isinstance(path, int):
            raise PermissionError("the sandbox allows no file descriptors")
        full = os.path.realpath(os.fsdecode(path))
        if not full.startswith(inside):
            raise PermissionError(f"the sandbox allows files inside its folder only, not {full}")
    elif event == "import":
        if args[0].split(".")[0] not in allowed and args[0] not in sys.modules:
            raise ImportError(f"module {args[0]!r} is not allowed in the sandbox")
    elif event.startswith(BLOCKED):
        raise PermissionError(f"{event} is not allowed in the sandbox")

def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level or name.split(".")[0] not in allowed:
        raise ImportError(f"module {name!r} is not allowed in the sandbox; allowed: {', '.join(sorted(allowed))}")
    return builtins.__import__(name, globals, locals, fromlist, level)

safe = dict(vars(builtins))
safe["__import__"] = guarded_import
for name in ("input", "breakpoint", "help", "exit", "quit"):
    safe.pop(name, None)
namespace = {"__builtins__": safe, "__name__": "__main__"}
printed = io.StringIO()
sys.stdout = printed
sys.addaudithook(hook)
result = {"ok": True, "error": None}
try:
    exec(compile(code, "program.py", "exec"), namespace)
except BaseException as exc:
    result["ok"] = False
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    result["error"] = "".join(line for line in lines if "program.py" in line or not line.startswith("  File")).strip()
if result["ok"] and namespace.get("answer") is None and not printed.getvalue().strip():
    # PAL's convention: a program that only defines solution() (or one function taking nothing) is run by calling it
    import types
    functions = [f for f in namespace.values() if isinstance(f, types.FunctionType)
                 and f.__code__.co_filename == "program.py" and f.__code__.co_argcount == 0]
    chosen = namespace.get("solution") if namespace.get("solution") in functions else (functions or [None])[-1]
    if chosen is not None:
        try:
            namespace["answer"] = chosen()
        except BaseException as exc:
            result["ok"] = False
            lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
            result["error"] = "".join(line for line in lines
                                      if "program.py" in line or not line.startswith("  File")).strip()
sys.stdout = real_stdout
answer = namespace.get("answer")
result["answer"] = None if answer is None or callable(answer) else str(answer)
result["stdout"] = printed.getvalue()[-LIMIT:]
result["error"] = result["error"] and result["error"][-LIMIT:]
real_stdout.write("\n" + MARKER + json.dumps(result))
'''


@dataclass(frozen=True)
class ProgramRun:
    """What one run of a program gave: its result (``answer`` or the last printed line), what it printed, and the
    error that stopped it (None when it ran to the end)."""

    ok: bool
    result: str | None
    stdout: str
    error: str | None
    seconds: float

    def as_dict(self) -> dict:
        return {"ok": self.ok, "result": self.result, "stdout": self.stdout, "error": self.error,
                "seconds": round(self.seconds, 3)}


def run_program(code: str, timeout_s: float = 5.0, memory_mb: int = 256,
                modules: tuple[str, ...] = ALLOWED_MODULES) -> ProgramRun:
    """Run ``code`` in the sandbox (see the module docstring). A program that sets no ``answer`` and prints nothing
    is a failed run ("no result")."""
    import time

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="taskfit-program-") as folder:
        argv = [sys.executable, "-I", "-S", "-c", _CHILD, folder, str(memory_mb * 2**20),
                str(max(1, int(timeout_s) + 1)), ",".join(modules), MARKER, str(OUTPUT_LIMIT)]
        try:
            proc = subprocess.run(argv, input=code, capture_output=True, text=True, timeout=timeout_s, cwd=folder,
                                  env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        except subprocess.TimeoutExpired:
            return ProgramRun(False, None, "", f"timed out after {timeout_s:g} s", time.perf_counter() - started)
    seconds = time.perf_counter() - started
    at = proc.stdout.rfind(MARKER)
    try:
        report = json.loads(proc.stdout[at + len(MARKER) :]) if at >= 0 else None
    except json.JSONDecodeError:
        report = None
    if report is None:
        why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        if proc.returncode < 0:
            why = f"killed by signal {-proc.returncode} (a memory or CPU limit)"
        return ProgramRun(False, None, proc.stdout[-OUTPUT_LIMIT:], why[-OUTPUT_LIMIT:], seconds)
    stdout = report["stdout"][-OUTPUT_LIMIT:]
    error = report["error"][-OUTPUT_LIMIT:] if report["error"] else None
    result = report["answer"]
    if result is None and stdout.strip():
        result = stdout.strip().splitlines()[-1]
    if report["ok"] and result is None:
        return ProgramRun(False, None, stdout, "the program ran but set no `answer` and printed nothing", seconds)
    return ProgramRun(bool(report["ok"]), result if report["ok"] else None, stdout, error, seconds)
