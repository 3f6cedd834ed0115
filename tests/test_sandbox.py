"""The program sandbox: every way out is a failed attempt with its reason, never a crash of the run."""

import os
import socket
import threading

import pytest

from taskfit.prompting.sandbox import run_program


def test_a_correct_program_gives_its_answer_variable_or_last_printed_line():
    run = run_program("from fractions import Fraction\nimport math\nanswer = Fraction(3, 4) * 8 + math.floor(2.5)")
    assert run.ok and run.result == "8" and run.error is None
    printed = run_program("total = sum(range(5))\nprint('working...')\nprint(total)")
    assert printed.ok and printed.result == "10" and "working" in printed.stdout


def test_a_program_that_only_defines_solution_is_run_by_calling_it():
    run = run_program("def helper(x):\n    return x * 2\n\ndef solution():\n    return helper(21)\n")
    assert run.ok and run.result == "42"
    last = run_program("def total():\n    return 7 + 8\n")
    assert last.ok and last.result == "15"
    failing = run_program("def solution():\n    return 1 / 0\n")
    assert not failing.ok and "ZeroDivisionError" in failing.error


def test_no_result_and_exceptions_are_failed_attempts_with_the_error():
    silent = run_program("x = 1 + 1")
    assert not silent.ok and "set no `answer`" in silent.error
    broken = run_program("eggs = 12\nanswer = eggs / (3 - 3)")
    assert not broken.ok and broken.result is None
    assert "ZeroDivisionError" in broken.error and "program.py" in broken.error
    syntax = run_program("answer = (1 +")
    assert not syntax.ok and "SyntaxError" in syntax.error


def test_a_program_that_loops_forever_is_stopped():
    run = run_program("while True:\n    pass", timeout_s=1.5)
    assert not run.ok and "timed out" in run.error
    assert run.seconds < 10


def test_a_program_that_allocates_too_much_is_stopped():
    run = run_program("block = bytearray(2 * 1024 ** 3)\nanswer = len(block)", memory_mb=128)
    assert not run.ok and run.result is None
    assert "MemoryError" in run.error or "memory" in run.error


def test_a_program_cannot_open_a_socket():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    for code in (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}))\nanswer = 1",
                 "import urllib.request\nanswer = urllib.request.urlopen('http://127.0.0.1').read()",
                 # around the import allow-list: the real __import__ from a class's module globals
                 "imp = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'catch_warnings'][0]"
                 ".__init__.__globals__['__builtins__']['__import__']\n"
                 f"s = imp('socket').create_connection(('127.0.0.1', {port}))\nanswer = 1"):
        run = run_program(code)
        assert not run.ok, code
        assert "not allowed" in run.error or "Permission" in run.error or "files inside" in run.error
    server.close()
    assert not accepted


def test_a_program_cannot_read_outside_its_folder_or_write_elsewhere(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret")
    read = run_program(f"answer = open({str(secret)!r}).read()")
    assert not read.ok and "files inside its folder only" in read.error
    target = tmp_path / "written.txt"
    write = run_program(f"open({str(target)!r}, 'w').write('x')\nanswer = 1")
    assert not write.ok and not target.exists()
    remove = run_program(f"import os\nos.remove({str(secret)!r})\nanswer = 1")
    assert not remove.ok and secret.exists()
    escape = run_program("f = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
                         f".__init__.__globals__['remove']\nf({str(secret)!r})\nanswer = 1")
    assert not escape.ok and secret.exists()
    shell = run_program("f = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
                        f".__init__.__globals__['system']\nanswer = f('touch {tmp_path}/pwned')")
    assert not shell.ok and not (tmp_path / "pwned").exists()
    inside = run_program("open('notes.txt', 'w').write('scratch')\nanswer = open('notes.txt').read()")
    assert inside.ok and inside.result == "scratch"  # its own folder is writable


@pytest.mark.skipif(os.cpu_count() is None, reason="needs a cpu count")
def test_a_program_cannot_start_processes():
    run = run_program("import subprocess\nanswer = subprocess.run(['true'])")
    assert not run.ok and "not allowed" in run.error
