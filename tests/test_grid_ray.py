"""`taskfit grid --executor ray`: the plan's cells as Ray tasks on a local Ray cluster started here (2 CPUs), the
same run folders as without Ray, and a Ray worker killed mid-cell: the cell is retried and the grid completes with
identical results."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from taskfit import grid

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
PLAN = {"defaults": {"limit": 16}, "tasks": ["demo"], "models": ["smollm2-135m-instruct"],
        "strategies": ["zero_shot", {"strategy": "few_shot", "strategy_args": {"k": 1, "selector": "random"}},
                       {"strategy": "few_shot", "strategy_args": {"k": 4, "selector": "random"}, "limit": 96,
                        "batch_size": 4},
                       {"strategy": "few_shot", "strategy_args": {"k": 2, "selector": "fixed", "indices": [0, 1]}}]}
# the k=4 random cell: three chunks of samples (32, 32 and 16 of the demo task's 80 rows at batch 4), each row its own
# demos: the cell the kill test cuts after its first chunk


def write_plan(folder: Path, **plan) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump({"output": str(folder / "out"), **plan}), encoding="utf-8")
    return path


def grid_cli(path: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "taskfit.cli", "grid", str(path), *extra], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def samples(path: Path) -> dict[str, bytes]:
    return {c.name: (c.folder / "samples.jsonl").read_bytes() for c in grid.cells(grid.load_plan(path), path)}


@pytest.fixture(scope="module")
def without_ray(tmp_path_factory):
    """The plan run by the local process pool (2 processes, one thread each, as Ray's 1-CPU cells run)."""
    path = write_plan(tmp_path_factory.mktemp("local"), **PLAN)
    process = grid_cli(path, "--jobs", "2")
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    return samples(path)


def test_a_plan_on_ray_gives_the_run_folders_the_process_pool_gives(tmp_path, without_ray):
    path = write_plan(tmp_path, **PLAN)
    process = grid_cli(path, "--executor", "ray")
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    assert samples(path) == without_ray  # byte-identical samples.jsonl, cell by cell
    summary = json.loads((tmp_path / "out" / "grid.json").read_text())
    assert summary["executor"] == "ray" and len(summary["cells"]) == 4
    assert all(c["status"] == "done" and c["node"] for c in summary["cells"])
    # complete cells are skipped, as without Ray; this time on a cluster started as on a head node and joined by
    # its address (Ray 2.60's `ray start` turns token authentication on: the grid must present the token)
    ray = str(Path(sys.executable).parent / "ray")
    port = str(_free_port())
    started = subprocess.run([ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", port,
                              "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"],
                             capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
        again = grid_cli(path, "--executor", "ray", "--ray-address", f"127.0.0.1:{port}", env=env)
        output, _ = again.communicate(timeout=600)
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=300)
    assert again.returncode == 0 and "4 of 4 cells done" in output, output[-3000:]


def _taskfit_child(folder: Path) -> int | None:
    """The pid of the `taskfit eval` process writing ``folder`` (a Ray worker's child), if one runs."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"taskfit.cli" in cmd and str(folder).encode() in cmd:
            return int(entry.name)
    return None


def test_a_ray_worker_killed_mid_cell_is_retried_and_the_grid_completes(tmp_path, without_ray):
    path = write_plan(tmp_path, **PLAN)
    target = next(c for c in grid.cells(grid.load_plan(path), path) if c.config.limit == 96)
    rows = without_ray[target.name].count(b"\n")
    out = target.folder / "samples.jsonl"
    process = grid_cli(path, "--executor", "ray")
    deadline = time.time() + 600
    child = None
    while time.time() < deadline and process.poll() is None and child is None:
        child = _taskfit_child(target.folder)
        time.sleep(0.05)
    assert child, "the cell never started"
    # Freeze the cell's process at each look, so it cannot finish between the look and the kill: a chunk takes far
    # longer than the 20 ms it runs between two looks.
    while time.time() < deadline:
        os.kill(child, signal.SIGSTOP)
        cut = out.read_bytes().count(b"\n") if out.is_file() else 0
        if cut >= 32:
            break
        os.kill(child, signal.SIGCONT)
        time.sleep(0.02)
    worker = int(Path(f"/proc/{child}/stat").read_text().split(")")[1].split()[1])  # the child's parent: Ray's worker
    os.kill(worker, signal.SIGKILL)  # the frozen child dies with it (PR_SET_PDEATHSIG is SIGKILL)
    assert 32 <= cut < rows and not (target.folder / "results.json").exists()  # killed mid-cell
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    assert samples(path) == without_ray
    assert json.loads((tmp_path / "out" / "grid.json").read_text())["executor"] == "ray"
