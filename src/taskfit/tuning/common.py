"""The data side every tuning stage shares: the config (written with the other settings in :mod:`taskfit.settings`),
the result, the examples of a task to train on, and preference files split by prompt. The training side (arguments,
LoRA, output folder, run card) is :mod:`taskfit.tuning.skeleton`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskfit.data.preferences import PreferenceData, PreferencePair, read_preferences, split_by_prompt
from taskfit.data.sampling import sample_indices
from taskfit.settings import TuneConfig, load_tune_config
from taskfit.tasks.task import load_task
from taskfit.tuning.skeleton import evaluated_as

__all__ = ["TuneConfig", "TuneResult", "load_tune_config", "task_examples", "preference_split", "data_line"]


@dataclass
class PreferenceSplit:
    """A stage's preference data: what the files held, the pairs, and the training / held-out split by prompt."""

    data: PreferenceData
    unpaired: int
    train: list[PreferencePair]
    dev: list[PreferencePair]


def preference_split(files: list[Path], limit: int | None, dev_share: float, seed: int) -> PreferenceSplit:
    data = read_preferences(files)
    pairs, unpaired = data.as_pairs()
    train, dev = split_by_prompt(pairs, limit, dev_share, seed)
    return PreferenceSplit(data, unpaired, train, dev)


def tune_evaluated_as(config: TuneConfig, out: Path | None = None) -> dict[str, Any]:
    """How ``taskfit eval`` loads what ``taskfit tune`` writes (to ``out``, default ``config.output``): the head,
    a full model's folder, or the adapter on its base. Known before training, so a grid plans its eval cells."""
    out = Path(out or config.output)
    if config.stage == "head" or config.method == "head":
        return {"model": f"head:{out}"}
    return evaluated_as(config.model, out, merged=config.method == "full")


@dataclass
class TuneResult:
    card: dict[str, Any]
    model: Any  # the trained model in memory (PEFT-wrapped for adapter methods)


def task_examples(config: TuneConfig, task=None):
    """The task (loaded unless given, its answer space set up) and the examples of its split to train on: all, or
    ``limit`` rows drawn by the same seeded sampler as ``taskfit eval --sample random`` (several data files are
    sorted by label)."""
    task = task or load_task(config.task)
    # --train-file with --task: rows in the task's own columns (taskfit synth's output), prompted as the task's are
    examples = (task.file_examples(config.train_file) if getattr(config, "train_file", None)
                else task.examples(config.split, config.data_dir))
    if config.limit:
        examples = [examples[i] for i in sample_indices(len(examples), config.limit, config.seed)]
    # the answer space as evaluation sets it up (KBQA: its knowledge base, the whole split's triples), so the
    # training prompt shows the facts the evaluated prompt shows
    task.prepare_answers(examples, config.split, config.data_dir, None)
    return task, examples


def data_line(data: dict[str, Any]) -> str:
    """The run card's line on what an sft or head run trained on."""
    if "mixture" in data:
        mix = data["mixture"]
        source = "a mixture of " + ", ".join(f"{t['task']} ({t['rows']} rows, {len(t['templates'])} templates)"
                                             for t in mix["tasks"])
        if mix["plain_text_rows"]:
            source += f" and {mix['plain_text_rows']} plain-text rows"
    else:
        where = f"file {data['file']}" if "file" in data else data.get("split")
        source = f"task {data['task']} ({where})" if "task" in data else f"file {data['file']}"
    return (f"- data: {source}: {data['n']} samples, {data['tokens']} tokens, {data['answer_tokens']} answer tokens "
            f"with loss; chat template {'on' if data['chat_template'] else 'off'}")
