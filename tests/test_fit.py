"""`taskfit fit TASK --budget`: the budget parser, the plan for each kind of task, shrinking to the budget, and a
whole fit on the built-in demo task."""

from __future__ import annotations

import pytest

from taskfit.cli import main
from taskfit.errors import UserError
from taskfit.fit import LORA_MIN_ROWS, MIN_EVAL_ROWS, Candidate, FitPlan, fit_to_budget, parse_budget, propose
from taskfit.tasks.task import load_task


@pytest.mark.parametrize("text, seconds", [("60m", 3600), ("1h", 3600), ("1h30m", 5400), ("900s", 900),
                                           ("90", 90), ("2.5m", 150)])
def test_budget_parses(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10s", "5x"])
def test_bad_budget_is_refused(text):
    with pytest.raises(UserError, match="--budget"):
        parse_budget(text)


def test_plan_follows_the_task(shared_data):
    def names(task, split=None, data=shared_data):
        return [c.name for c in propose(load_task(task), data, "smollm2-135m-instruct", split)[0]]

    assert names("sst2") == ["zero-shot", "kNN few-shot", "LoRA", "specialist head"]
    assert names("gsm8k", "train") == ["zero-shot", "chain of thought"]  # evaluated on train: nothing trains on it
    assert names("demo", data=None) == ["zero-shot"]  # one split only: nothing to learn from without cheating


def priced() -> FitPlan:
    return FitPlan("t", 3600, 1000, [
        Candidate("zero-shot", "", {}, fixed_s=10, per_row_s=0.2, optional=False),
        Candidate("kNN few-shot", "", {}, fixed_s=100, per_row_s=1.7),
        Candidate("LoRA", "", {}, fixed_s=40, per_row_s=0.2, train_rows=2000, train_per_row_s=0.94),
    ])


def test_a_plan_that_fits_is_left_alone():
    plan = priced()
    plan.budget_s = 10 * 3600
    fit_to_budget(plan)
    assert plan.decisions == [] and plan.eval_rows == 1000 and len(plan.candidates) == 3


def test_shrinking_goes_rows_then_training_then_the_dearest_method():
    plan = priced()  # 2110 + 1880 + 50 + 200 = 4,240 s against 3,312 s
    fit_to_budget(plan)
    assert plan.total() <= plan.budget_s * 0.92
    assert plan.decisions[0].startswith("Evaluation rows 1000 -> ")
    assert plan.eval_rows >= MIN_EVAL_ROWS and len(plan.candidates) == 3

    tight = priced()
    tight.budget_s = 700
    fit_to_budget(tight)
    assert tight.eval_rows == MIN_EVAL_ROWS
    assert any(d.startswith("LoRA training rows 2000 -> ") for d in tight.decisions)
    assert [c.name for c in tight.candidates] == ["zero-shot", "kNN few-shot"]
    assert tight.decisions[-1].startswith("Dropped LoRA")
    assert tight.total() <= 700 * 0.92
    assert LORA_MIN_ROWS == 500


def test_time_left_over_goes_to_more_lora_training_rows():
    plan = priced()
    plan.candidates[2].train_available = 6000
    plan.budget_s = 1.5 * 3600  # 4,240 s planned against 4,968 s usable
    fit_to_budget(plan)
    lora = plan.candidates[2]
    assert plan.decisions and plan.decisions[-1].startswith("LoRA training rows 2000 -> ")
    assert 2000 < lora.train_rows < 6000
    assert plan.budget_s * 0.92 - 1 <= plan.total() <= plan.budget_s * 0.92
    roomy = priced()
    roomy.candidates[2].train_available = 3000
    roomy.budget_s = 10 * 3600
    fit_to_budget(roomy)
    assert roomy.candidates[2].train_rows == 3000  # never more rows than the split holds


def test_training_is_priced_by_timing_real_steps(tmp_path, tiny_model_dir, shared_data):
    from taskfit.fit import probe_training

    lora = Candidate("LoRA", "", {}, train_rows=2000,
                     tune_settings={"method": "lora", "task": "sst2", "data_dir": shared_data, "epochs": 1,
                                    "model": f"hf:{tiny_model_dir}", "batch_size": 8, "threads": 1})
    per_row = probe_training(lora, tmp_path / "probe", seed=1)
    assert 0 < per_row < 5
    cards = sorted(p.parent.name for p in (tmp_path / "probe").glob("*/run_card.json"))
    assert cards == ["long", "short"]


@pytest.mark.slow
def test_fit_on_the_demo_task_stays_in_budget_and_explains_itself(tmp_path):
    import time

    started = time.monotonic()
    assert main(["fit", "demo", "--budget", "3m", "--output", str(tmp_path / "fit")]) == 0
    assert time.monotonic() - started < 180 * 1.1
    md = (tmp_path / "fit" / "report.md").read_text(encoding="utf-8")
    assert md.index("## What was chosen and why") < md.index("## demo")
    assert "Chose zero-shot: always" in md
    assert (tmp_path / "fit" / "report.html").stat().st_size > 0
