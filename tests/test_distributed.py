"""Training in several processes: `torchrun --nproc_per_node 2 -m taskfit.cli tune` (DDP over gloo on the CPU) trains
what one process with the global batch trains, only rank 0 writes, and `--resume` continues after the launch is
killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def tune_argv(shared: Path, out: Path, batch: int, *extra: str) -> list[str]:
    return ["tune", "--task", "sst2", "--data-dir", str(shared), "--limit", "64", "--method", "lora",
            "--batch-size", str(batch), "--max-steps", "6", "--logging-steps", "1", "--threads", "1",
            "--output", str(out), *extra]


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "taskfit.cli", *args]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first found through /proc)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def card(out: Path) -> dict:
    return json.loads((out / "run_card.json").read_text())


def test_two_processes_train_what_one_process_with_the_global_batch_trains(shared_data, tmp_path):
    two = subprocess.run(torchrun(*tune_argv(shared_data, tmp_path / "two", 4)), cwd=REPO, capture_output=True,
                         text=True, timeout=900)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    one = subprocess.run([sys.executable, "-m", "taskfit.cli", *tune_argv(shared_data, tmp_path / "one", 8)],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-2000:]
    a, b = card(tmp_path / "two"), card(tmp_path / "one")
    assert (a["world_size"], a["global_batch"], b["world_size"], b["global_batch"]) == (2, 8, 1, 8)
    assert [h["loss"] for h in a["loss_history"]] == pytest.approx([h["loss"] for h in b["loss_history"]], rel=1e-3)
    assert two.stdout.count("output: ") == 1  # rank 0 reports; rank 1 writes nothing
    accuracy = {}
    for name in ("two", "one"):
        done = subprocess.run([sys.executable, "-m", "taskfit.cli", "eval", "--task", "sst2", "--data-dir",
                               str(shared_data), "--limit", "200", "--adapter", str(tmp_path / name), "--no-cache",
                               "--output", str(tmp_path / f"eval-{name}")], cwd=REPO, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        accuracy[name] = json.loads((tmp_path / f"eval-{name}" / "results.json").read_text())["metrics"]["accuracy"]
    assert abs(accuracy["two"]["value"] - accuracy["one"]["value"]) * 200 <= 1  # the same accuracy, +-1 row


def test_a_killed_launch_resumes_from_its_checkpoint(shared_data, tmp_path):
    out = tmp_path / "cut"
    argv = torchrun(*tune_argv(shared_data, out, 4, "--save-steps", "2"))
    launch = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not (out / "checkpoint-2" / "trainer_state.json").is_file():
        time.sleep(0.2)
    for pid in [launch.pid, *descendants(launch.pid)]:  # the launcher and its workers (their own sessions), at once
        os.kill(pid, signal.SIGKILL)
    launch.wait(60)
    time.sleep(2)  # nothing runs on: no later checkpoint appears
    assert not (out / "run_card.json").exists() and not (out / "checkpoint-6").exists()
    again = subprocess.run(argv + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    resumed = card(out)
    assert resumed["steps"] == 6 and resumed["world_size"] == 2 and resumed["resumed_from_step"] >= 2
