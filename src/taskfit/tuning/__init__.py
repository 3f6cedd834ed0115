"""Tuning: one short workflow per stage — ``sft`` (a causal LM with PEFT methods or in full, :mod:`.sft`) and
``head`` (a sentence encoder + head, :mod:`.head`). Merging and GGUF export are :mod:`taskfit.models.export`."""

from taskfit.tuning.common import TuneConfig, TuneResult, load_tune_config
from taskfit.tuning.head import train_head
from taskfit.tuning.sft import train_sft

STAGES = {"sft": train_sft, "head": train_head}


def tune(config: TuneConfig, resume: bool = False) -> TuneResult:
    """Run the stage ``config.stage`` (data -> model -> train -> save -> run card)."""
    return STAGES[config.stage](config, resume)


__all__ = ["STAGES", "TuneConfig", "TuneResult", "load_tune_config", "tune"]
