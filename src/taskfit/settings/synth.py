"""``taskfit synth``'s settings: the task and output, generation (Self-Instruct's order, sampling, filters) and the
model on its backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from taskfit.errors import UserError
from taskfit.models.options import OPERATIONAL
from taskfit.settings.common import merged
from taskfit.settings.run import BackendChoice, ModelChoice, ModelSection, backend_sections
from taskfit.strict import StrictModel, validate


class SynthDataSection(StrictModel):
    task: str = Field(description="the task whose rows are written (a built-in name or a task YAML)")
    data_dir: Path | None = Field(None, description="folder laid out as D/<dataset>/<split>.jsonl")
    split: str = Field("train", description="split the seed rows come from")
    seed_rows: int = Field(16, gt=0, description="seed rows shown to the model, drawn as `taskfit tune --limit N` "
                                                 "draws them (the same rows for the same seed)")
    target: int = Field(200, gt=0, description="rows to keep")
    output: Path = Field(description="the JSONL file to write (the task's own columns; train on it with `taskfit "
                                     "tune --task T --train-file FILE`)", json_schema_extra=OPERATIONAL)
    seed: int = Field(1234, description="seed for the seed rows, the rows each request shows and sampling")


class SynthGenerationSection(StrictModel):
    shots: int = Field(4, gt=0, description="seed rows shown per request")
    order: Literal["auto", "input_first", "output_first"] = Field(
        "auto", description="output_first writes the label, then an input for it (balanced labels; auto: for "
                            "classification), input_first an input, then its answer (auto: the other types)")
    max_requests: int | None = Field(None, gt=0, description="stop after this many requests (default 4 x --target)")
    round_size: int = Field(32, gt=0, description="requests sent to the backend together (the backend batches them "
                                                  "further); the rows kept do not depend on it",
                            json_schema_extra=OPERATIONAL)
    temperature: float = Field(0.9, gt=0, description="sampling temperature")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling")
    rouge_threshold: float = Field(0.7, gt=0, le=1, description="a row whose input has ROUGE-L F >= this with a kept "
                                                                "or seed input is a near-duplicate (Self-Instruct)")


class SynthConfig(SynthGenerationSection, SynthDataSection, ModelChoice):
    """Everything ``taskfit synth`` needs (Self-Instruct for a task's rows)."""

    model_config = BackendChoice.model_config  # a run-time backend's options are extra keys

    def requests_allowed(self) -> int:
        return self.max_requests or 4 * self.target


SYNTH_SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("task and output", SynthDataSection), ("generation", SynthGenerationSection), ("model", ModelSection),
    backend_sections]


def load_synth_config(path: str | Path | None, overrides: dict[str, Any]) -> SynthConfig:
    data, source = merged(path, overrides)
    config = validate(SynthConfig, data, source)
    if config.shots > config.seed_rows:
        raise UserError(f"--shots {config.shots} is more than --seed-rows {config.seed_rows}; show at most the seed "
                        "rows there are")
    return config

