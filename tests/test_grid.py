"""`taskfit grid PLAN.yaml`: plans become ordinary run folders, complete cells are skipped, cut ones resume, a
failed cell does not stop the others, and every cell is one `taskfit` command."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
import yaml

from taskfit import grid
from taskfit.cli import build_parser, main, settings_from
from taskfit.errors import ServerError, UserError
from taskfit.report.render import build
from taskfit.settings import load_run_config, load_tune_config


def write_plan(tmp_path: Path, **plan) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"output": str(tmp_path / "out"), **plan}), encoding="utf-8")
    return path


PLAN = {
    "defaults": {"limit": 8},
    "tasks": ["demo", {"task": "sst2", "data_dir": "../shared/data", "limit": 4}],
    "models": ["smollm2-135m-instruct", {"model": "smollm2-135m-instruct", "backend": "llamacpp"}],
    "strategies": ["zero_shot", {"strategy": "few_shot", "strategy_args": {"k": 2, "selector": "random"}}],
    "tune": [{"name": "lora-demo", "method": "lora", "task": "demo", "max_steps": 2, "evaluate": ["zero_shot"]}],
}


def test_plan_becomes_cells_tune_first_each_one_command(tmp_path):
    path = write_plan(tmp_path, **PLAN)
    cells = grid.cells(grid.load_plan(path), path)
    assert [c.kind for c in cells[:2]] == ["tune", "eval"]
    assert len(cells) == 2 + 2 * 2 * 2
    assert cells[1].after == "tuned/lora-demo" and cells[1].config.adapter == tmp_path / "out/tuned/lora-demo"
    names = [c.name for c in cells]
    assert "sst2/smollm2-135m-instruct-llamacpp/few_shot-k=2-selector=random" in names
    sst2 = next(c for c in cells if c.name.startswith("sst2/"))
    assert sst2.config.limit == 4 and str(sst2.config.data_dir) == "../shared/data"  # the task's keys win
    for cell in cells:  # the printed command rebuilds the cell's config exactly
        words = shlex.split(cell.command)
        args = build_parser().parse_args(words[1:])
        load = load_tune_config if cell.kind == "tune" else load_run_config
        assert load(None, settings_from(args)).model_dump() == cell.config.model_dump()


@pytest.mark.parametrize("change, message", [
    ({"strategies": [{"strategy": "few_shot", "strategy_args": {"kk": 2}}]}, "cell demo/"),
    ({"strategies": ["zero_shot", "zero_shot"]}, "share the folder"),
    ({"tasks": [], "tune": []}, "no tasks and no tune jobs"),
    ({"tune": [{"method": "lora"}]}, "a tune job needs `task:`"),
    ({"colour": "red"}, "colour"),
])
def test_bad_plans_are_refused_before_any_work(tmp_path, change, message):
    path = write_plan(tmp_path, **{**PLAN, **change})
    with pytest.raises(UserError, match=message):
        grid.cells(grid.load_plan(path), path)
    assert main(["grid", str(path), "--dry-run"]) == 2
    assert not (tmp_path / "out").exists()


def test_failed_cell_does_not_stop_the_others_and_complete_cells_are_skipped(tmp_path):
    path = write_plan(tmp_path, **PLAN)
    cells = grid.cells(grid.load_plan(path), path)
    done_before = cells[3]
    done_before.folder.mkdir(parents=True)
    (done_before.folder / "results.json").write_text("{}")
    ran = []

    def fake(cell):
        ran.append(cell.name)
        if cell.kind == "tune":
            raise UserError("no space left")

    grid.run_cells(cells, runner=fake)
    assert ran[0] == "tuned/lora-demo" and done_before.name not in ran
    assert cells[0].status == "failed" and cells[0].note == "no space left"
    assert cells[1].status == "skipped" and "lora-demo did not run" in cells[1].note
    assert done_before.status == "done" and done_before.note == "complete before this run"
    assert all(c.status == "done" for c in cells[2:])
    summary = json.loads(grid.write_summary(grid.load_plan(path), cells).read_text())
    assert [c["status"] for c in summary["cells"][:2]] == ["failed", "skipped"]
    # a rerun skips the cells that finished, and grid.json keeps where and how long they ran
    cells[2].seconds, cells[2].node = 12.34, "10.0.0.7"
    grid.write_summary(grid.load_plan(path), cells, "ray")
    again = grid.cells(grid.load_plan(path), path)
    for cell in again[2:]:
        cell.folder.mkdir(parents=True, exist_ok=True)
        (cell.folder / "results.json").write_text("{}")
    grid.run_cells(again, runner=fake)
    rows = json.loads(grid.write_summary(grid.load_plan(path), again).read_text())["cells"]
    assert rows[2] | {"command": ""} == {"name": cells[2].name, "kind": "eval", "status": "done", "seconds": 12.3,
                                        "note": "complete before this run", "command": "", "node": "10.0.0.7",
                                        "executor": "ray"}
    assert rows[0]["status"] == "failed" and "executor" not in rows[0]  # ran now: this run's record


@pytest.mark.slow
def test_grid_runs_resumes_after_a_cut_and_feeds_the_report(tmp_path):
    plan = {"defaults": {"limit": 12}, "tasks": ["demo"], "models": ["smollm2-135m-instruct"],
            "strategies": ["zero_shot", {"strategy": "few_shot", "strategy_args": {"k": 2, "selector": "random"}}]}
    path = write_plan(tmp_path, **plan)
    assert main(["grid", str(path)]) == 0
    out = tmp_path / "out"
    cells = grid.cells(grid.load_plan(path), path)
    assert all(c.complete() for c in cells)
    first = cells[1].folder
    whole = (first / "samples.jsonl").read_bytes()
    # a cut: the results and the second half of the samples (plus half a line) are gone, as after kill -9
    lines = whole.splitlines(keepends=True)
    (first / "samples.jsonl").write_bytes(b"".join(lines[:5]) + lines[5][:10])
    (first / "results.json").unlink()
    untouched = (cells[0].folder / "results.json").stat().st_mtime_ns
    assert main(["grid", str(path), "--jobs", "2"]) == 0
    assert (first / "samples.jsonl").read_bytes() == whole
    assert (cells[0].folder / "results.json").stat().st_mtime_ns == untouched  # complete: not rerun
    (task,) = build([out], n_resamples=200).tasks
    assert {m.label for m in task.methods} == {"zero_shot", "few_shot(k=2, selector=random)"}
    assert json.loads((out / "grid.json").read_text())["cells"][1]["status"] == "done"


def test_dry_run_names_cells_that_will_fail_on_their_data(tmp_path, shared_data, capsys):
    path = write_plan(tmp_path, defaults={"data_dir": str(shared_data), "limit": 5}, tasks=["squad"],
                      strategies=["zero_shot", {"strategy": "few_shot", "strategy_args": {"k": 2}}])
    cells = grid.cells(grid.load_plan(path), path)
    assert grid.problem(cells[0]) is None
    assert "squad_v1.1/train.jsonl not found" in grid.problem(cells[1])
    assert main(["grid", str(path), "--dry-run"]) == 0
    assert "1 cells will fail on their data" in capsys.readouterr().out


class _Ray:
    """Ray's ``init`` as the grid calls it, failing as an unreachable cluster does."""

    def init(self, address=None, **_):
        raise ConnectionError(f"Failed to connect to Ray cluster at {address}")


def test_joining_a_ray_cluster_presents_a_token_at_hand_and_says_what_to_check(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.setenv(name, "")  # records the value to restore, also for the mode set here
        monkeypatch.delenv(name)
    mode = []

    def present(address):
        grid.present_ray_token(address)
        mode.append(os.environ.get("RAY_AUTH_MODE"))

    present("10.0.0.1:6379")  # no token anywhere: Ray's own default
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("secret")
    present(None)  # a local Ray finds its token by itself
    present("10.0.0.1:6379")
    assert mode == [None, None, "token"]
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the user's choice stands
    present("10.0.0.1:6379")
    assert mode[-1] == "disabled"
    with pytest.raises(ServerError, match=r"10\.0\.0\.1:6379.*ray status.*ray get-auth-token"):
        grid.join_ray(_Ray(), "10.0.0.1:6379")
