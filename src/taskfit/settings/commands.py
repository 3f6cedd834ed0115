"""The settings of the commands that read run folders, files or the assistant's database rather than a YAML of
settings: ``compare-results``, ``report``, ``grid``, ``fit``, ``reward eval`` / ``reward score``, ``feedback export``
/ ``feedback leaderboard``, ``merge`` and ``export``. Their flags (and positional arguments, marked
:func:`~taskfit.settings.common.positional`) are generated from these models as every other command's are, so a
default such as the resampling seed is written once."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from taskfit.models.catalog import GGUF_TYPES
from taskfit.settings.common import DB_HELP, flag_named, positional
from taskfit.settings.run import ModelSection, OutputSection, TaskSection
from taskfit.strict import StrictModel

RESAMPLES = OutputSection.model_fields["bootstrap_samples"].default
SEED = TaskSection.model_fields["seed"].default
MODEL = ModelSection.model_fields["model"].default


class ResamplingSection(StrictModel):
    bootstrap_samples: int = Field(RESAMPLES, ge=0, description="bootstrap / permutation resamples")
    seed: int = Field(SEED, description="the resampling seed")


class CompareSettings(ResamplingSection):
    """``taskfit compare-results A B``."""

    a: str = positional("results.json (or run folder) of run A")
    b: str = positional("results.json (or run folder) of run B")
    intersect: bool = Field(False, description="runs on different example sets: compare only the shared examples "
                                               "(default: refuse)")


class ReportSettings(ResamplingSection):
    """``taskfit report RUN...``."""

    runs: list[str] = positional("run folders, or folders holding them (a grid's output)")
    html: Path | None = Field(None, description="write the self-contained HTML report here")
    md: Path | None = Field(None, description="write the markdown report here (neither --html nor --md: markdown "
                                              "on stdout)")
    baseline: str | None = Field(None, description="the method the Δ column compares with: its label or run folder "
                                                   "name (default: the first untuned zero-shot run)")
    volume: int | None = Field(None, gt=0, description="predictions to price: total cost and break-even of tuned "
                                                       "methods")
    bootstrap_samples: int = Field(RESAMPLES, ge=100, description="bootstrap / permutation resamples (at least 100)")


class GridSettings(StrictModel):
    """``taskfit grid PLAN``."""

    plan: Path = positional("plan YAML (tasks, models, strategies, defaults, tune, output)")
    dry_run: bool = Field(False, description="list the cells and a rough estimate of their cost")
    print_commands: bool = Field(False, description="print one `taskfit` command per cell (tune cells first) for a "
                                                    "scheduler, and run nothing")
    jobs: int = Field(1, ge=1, description="cells at once, each its own process with the cores shared out (1: one "
                                           "after another in this process)")
    executor: Literal["local", "ray"] = Field("local", description="local: this machine (--jobs); ray: every cell a "
                                              "Ray task with the plan's `resources`, on the cluster at --ray-address "
                                              "(default: a local Ray started here)")
    ray_address: str | None = Field(None, description="--executor ray: an existing cluster (`ray start --head` "
                                                      "prints it), e.g. 10.0.0.1:6379 or auto")

    @model_validator(mode="after")
    def _ray_address_needs_ray(self) -> GridSettings:
        if self.ray_address and self.executor != "ray":
            raise ValueError("--ray-address goes with --executor ray")
        return self


class FitSettings(StrictModel):
    """``taskfit fit TASK``."""

    task: str = positional("built-in task or task YAML")
    budget: str = Field("60m", description="wall time for everything: 60m, 1h30m, 900s")
    data_dir: Path | None = Field(None, description="folder laid out as D/<dataset>/<split>.jsonl")
    split: str | None = Field(None, description="the split to evaluate on (default: the task's eval split); nothing "
                                                "trains on it")
    model: str = Field(MODEL, description="known model or hf:<folder>")
    output: Path | None = Field(None, description="folder for every run and the report (default runs/fit-<task>)")
    seed: int = Field(SEED, description="seed for sampling, demos, training and the bootstrap")

    def output_folder(self) -> Path:
        return self.output or Path(f"runs/fit-{Path(self.task).stem}")


class RewardScoreSettings(StrictModel):
    """``taskfit reward score``."""

    reward: str = Field(description="a `taskfit reward train` folder, or length:shorter / length:longer")
    data: list[Path] = Field(min_length=1, description="preference file")
    output: Path = Field(description="JSONL file to write")


class RewardEvalSettings(ResamplingSection, RewardScoreSettings):
    """``taskfit reward eval``."""

    output: Path = Field(description="run folder to write (results.json, samples.jsonl)")
    limit: int | None = Field(None, gt=0, description="a seeded random sample of N pairs")


class FeedbackExportSettings(StrictModel):
    """``taskfit feedback export``."""

    format: Literal["dpo", "kto", "sft"] = flag_named("as", ..., "dpo pairs, kto rated rows or sft rows")
    db: Path | None = Field(None, description=DB_HELP)
    where: list[str] = Field([], description="CRITERION=good|bad: only answers users rated so on a criterion (serve "
                                             "--criteria), e.g. correct=bad: only answers rated incorrect become "
                                             "rejected (all must hold)")
    output: Path = Field(description="JSONL file to write (`taskfit align --data` / `taskfit tune --train-file` read "
                                     "it)")


class LeaderboardSettings(StrictModel):
    """``taskfit feedback leaderboard``."""

    db: Path | None = Field(None, description=DB_HELP)
    as_json: bool = flag_named("json", False, "print JSON instead of markdown tables")
    resamples: int = Field(1000, ge=1, description="bootstrap resamples of the votes")
    seed: int = Field(0, description="the bootstrap's seed")


class MergeSettings(StrictModel):
    """``taskfit merge ADAPTER OUTPUT``."""

    adapter: Path = positional("adapter folder from `taskfit tune`")
    output: Path = positional("folder for the merged model (use it as --model hf:<folder>)")


class ExportSettings(StrictModel):
    """``taskfit export OUTPUT``."""

    output: Path = positional("the .gguf file to write")
    model: str = Field(MODEL, description="base model, or hf:<folder> of a full fine-tune")
    adapter: Path | None = Field(None, description="LoRA / IA3 adapter folder from `taskfit tune`, merged before "
                                                   "export")
    type: Literal[tuple(GGUF_TYPES)] = Field(  # type: ignore[valid-type]
        "q8_0", description="weight type; bits per weight: " + ", ".join(f"{k} {v:g}" for k, v in GGUF_TYPES.items()))
    template: Path | None = Field(None, description="a GGUF of the base model to copy tokenizer and metadata from "
                                                    "(default: the embedded model's own file)")
