"""Tuning: one short workflow per stage — ``sft`` (a causal LM with PEFT methods or in full, :mod:`.sft`) and
``head`` (a sentence encoder + head, :mod:`.head`) — plus merging and GGUF export of the result (:mod:`.export`)."""

from taskfit.tuning.common import TuneConfig, TuneResult, load_tune_config
from taskfit.tuning.export import export_gguf, merge
from taskfit.tuning.head import train_head
from taskfit.tuning.sft import train_sft

STAGES = {"sft": train_sft, "head": train_head}


def tune(config: TuneConfig, resume: bool = False) -> TuneResult:
    """Run the stage ``config.stage`` (data -> model -> train -> save -> run card)."""
    return STAGES[config.stage](config, resume)


__all__ = ["STAGES", "TuneConfig", "TuneResult", "export_gguf", "load_tune_config", "merge", "tune"]
