"""`taskfit align --method dpo | kto` on a tiny random Llama: step-0 losses that only hold when the reference is the
start policy (DPO ln 2, KTO 0.5), held-out implicit reward margins, and the output's evaluation hint."""

from __future__ import annotations

import json
import math

import pytest

from taskfit.api import Message
from taskfit.cli import main
from taskfit.data.preferences import PreferencePair, RatedRow, pair_row, rated_row


def prefs(n: int) -> list[PreferencePair]:
    return [PreferencePair((Message("user", f"Review {i}: good or bad?"),), "great and positive", "terrible negative")
            for i in range(n)]


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("method, step0", [("dpo", math.log(2)), ("kto", 0.5)])
def test_step_zero_loss_holds_only_with_the_reference(tiny_model_dir, tmp_path, method, step0):
    data = jsonl(tmp_path / "prefs.jsonl", [pair_row(p) for p in prefs(16)])
    out = tmp_path / method
    assert main(["align", "--method", method, "--model", f"hf:{tiny_model_dir}", "--data", str(data),
                 "--max-steps", "2", "--batch-size", "4", "--logging-steps", "1", "--lr", "1e-2",
                 "--dev-share", "0.25", "--output", str(out), "--no-progress"]) == 0
    card = json.loads((out / "run_card.json").read_text())
    assert card["loss_history"][0]["loss"] == pytest.approx(step0, abs=1e-3)
    assert card["dev"]["n"] == 4 and card["dev"]["mean_margin"]["ci_low"] is not None
    assert card["evaluate_with"] == f"--adapter {out}" and (out / "adapter_config.json").is_file()
    assert card["data"]["train_rows"] == (12 if method == "dpo" else 24)


def test_feedback_style_rows_run_one_kto_step(tiny_model_dir, tmp_path):
    rows = [rated_row(RatedRow((Message("user", f"Q{i}"),), "great" if i % 2 else "terrible", bool(i % 2)))
            | {"feedback_id": i} for i in range(8)]
    data = jsonl(tmp_path / "kto.jsonl", rows)
    assert main(["align", "--method", "kto", "--model", f"hf:{tiny_model_dir}", "--data", str(data), "--max-steps",
                 "1", "--batch-size", "4", "--dev-share", "0", "--output", str(tmp_path / "k"), "--no-progress"]) == 0
