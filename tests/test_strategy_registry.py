"""A strategy is one file and its registry line: a strategy written here (and nothing else) is checked by the run
config, runs in eval, is priced by `grid --dry-run` with its own cost prior, and is compared by the report."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from pydantic import Field

from taskfit import grid
from taskfit.cli import main
from taskfit.errors import UserError
from taskfit.prompting.options import STRATEGY_OPTIONS, BaseOptions
from taskfit.prompting.strategies import STRATEGIES, Strategy, register_strategy
from taskfit.report.render import build
from taskfit.settings import load_run_config


class AgainOptions(BaseOptions):
    times: int = Field(2, ge=1, description="how often the question is asked")

    def seconds_per_row(self, generate: bool) -> float:
        return 3.0 * self.times


class AskAgain(Strategy):
    """Asks the task's question ``times`` times and keeps the last answer (a toy: the answers are the same)."""

    name = "ask_again"
    Options = AgainOptions

    def run(self, example):
        outcome = None
        for _ in range(self.opts.times):
            outcome = yield from self.ask.direct(example)
        self.info["asked"] = self.info.get("asked", 0) + self.opts.times
        return outcome


@pytest.fixture
def again():
    register_strategy(AskAgain)  # the registry line
    yield AskAgain
    STRATEGIES.pop("ask_again")
    STRATEGY_OPTIONS.pop("ask_again")


def test_the_run_config_checks_its_options(again):
    assert load_run_config(None, {"task": "demo", "strategy": "ask_again",
                                  "strategy_args": {"times": 3}}).strategy_options().times == 3
    with pytest.raises(UserError, match=r"strategy_args of ask_again: key 'times' has invalid value 0"):
        load_run_config(None, {"task": "demo", "strategy": "ask_again", "strategy_args": {"times": 0}})


def test_it_runs_in_eval_is_priced_by_the_grid_and_compared_by_the_report(again, tiny_model_dir, tmp_path):
    common = ["--task", "demo", "--model", f"hf:{tiny_model_dir}", "--limit", "6", "--no-cache", "--no-progress",
              "--bootstrap-samples", "200"]
    assert main(["eval", *common, "--output", str(tmp_path / "runs" / "zero")]) == 0
    assert main(["eval", *common, "--strategy", "ask_again", "--strategy-arg", "times=2",
                 "--output", str(tmp_path / "runs" / "again")]) == 0
    results = json.loads((tmp_path / "runs" / "again" / "results.json").read_text())
    assert results["config"]["strategy"] == "ask_again" and results["strategy_info"]["asked"] == 12
    zero = [json.loads(line)["prediction"] for line in (tmp_path / "runs" / "zero" / "samples.jsonl").open()]
    again_ = [json.loads(line)["prediction"] for line in (tmp_path / "runs" / "again" / "samples.jsonl").open()]
    assert again_ == zero  # the same question, the same greedy scores

    plan: dict[str, Any] = {"output": str(tmp_path / "grid"), "defaults": {"limit": 20},
                            "tasks": ["demo"], "strategies": [{"strategy": "ask_again", "strategy_args": {"times": 5}}]}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    cells = grid.cells(grid.load_plan(tmp_path / "plan.yaml"), tmp_path / "plan.yaml")
    assert grid.estimate(cells[0]) == (20, 20 * 15.0)  # its own prior: 3 s x 5 times a row
    assert "1 cells, about 5 minutes" in grid.dry_run(cells)

    (task,) = build([tmp_path / "runs"], n_resamples=200).tasks
    assert sorted(m.label for m in task.methods) == ["ask_again(times=2)", "zero_shot"]
