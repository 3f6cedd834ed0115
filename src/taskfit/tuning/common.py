"""What every tuning stage shares: the config (written with the other settings in :mod:`taskfit.settings`), the
result, the examples of a task to train on, the loss plot and the run card's text."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from taskfit.data.preferences import PreferenceData, PreferencePair, read_preferences, split_by_prompt
from taskfit.data.sampling import sample_indices
from taskfit.paths import output_folder
from taskfit.settings import TuneConfig, load_tune_config
from taskfit.tasks.task import load_task

LLAMA_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
LLAMA_MLP = ["gate_proj", "up_proj", "down_proj"]
LORA_TARGETS = LLAMA_ATTENTION + LLAMA_MLP  # every projection of a Llama-family decoder layer

__all__ = ["TuneConfig", "TuneResult", "load_tune_config", "task_examples", "plot_loss", "card_markdown"]


@dataclass
class PreferenceSplit:
    """A stage's preference data: what the files held, the pairs, and the training / held-out split by prompt."""

    data: PreferenceData
    unpaired: int
    train: list[PreferencePair]
    dev: list[PreferencePair]


def fresh_output(output: Path | None, stage: str, method: str) -> Path:
    """The output folder of a new run (default runs/<stage>/<method>-<time>), checked before anything loads: a file,
    a folder that cannot be written or one holding files is refused."""
    return output_folder(output or f"runs/{stage}/{method}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}",
                         fresh=True)


def preference_split(files: list[Path], limit: int | None, dev_share: float, seed: int) -> PreferenceSplit:
    data = read_preferences(files)
    pairs, unpaired = data.as_pairs()
    train, dev = split_by_prompt(pairs, limit, dev_share, seed)
    return PreferenceSplit(data, unpaired, train, dev)


@dataclass
class TuneResult:
    card: dict[str, Any]
    model: Any  # the trained model in memory (PEFT-wrapped for adapter methods)


def task_examples(config: TuneConfig, task=None):
    """The task (loaded unless given, its answer space set up) and the examples of its split to train on: all, or
    ``limit`` rows drawn by the same seeded sampler as ``taskfit eval --sample random`` (several data files are
    sorted by label)."""
    task = task or load_task(config.task)
    examples = task.examples(config.split, config.data_dir)
    if config.limit:
        examples = [examples[i] for i in sample_indices(len(examples), config.limit, config.seed)]
    # the answer space as evaluation sets it up (KBQA: its knowledge base, the whole split's triples), so the
    # training prompt shows the facts the evaluated prompt shows
    task.prepare_answers(examples, config.split, config.data_dir, None)
    return task, examples


def plot_loss(history: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if history:
        ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker="o", markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (answer tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def card_markdown(card: dict[str, Any]) -> str:
    data = card["data"]
    if "mixture" in data:
        mix = data["mixture"]
        source = "a mixture of " + ", ".join(f"{t['task']} ({t['rows']} rows, {len(t['templates'])} templates)"
                                             for t in mix["tasks"])
        if mix["plain_text_rows"]:
            source += f" and {mix['plain_text_rows']} plain-text rows"
    else:
        source = f"task {data['task']} ({data['split']})" if "task" in data else f"file {data['file']}"
    return "\n".join([
        f"# Run card: {card['method']} on {source}",
        "",
        f"- base model: {card['base_model']['name']} ({card['base_model']['path']})",
        (f"- data: {data['n']} samples, {data['tokens']} tokens, {data['answer_tokens']} answer tokens with loss; "
         f"chat template {'on' if data['chat_template'] else 'off'}"),
        (f"- trainable parameters: {card['trainable_parameters']:,} of {card['total_parameters']:,} "
         f"({100 * card['trainable_share']:.3f}%)"),
        f"- steps: {card['steps']}, loss {card['first_loss']} -> {card['final_loss']}",
        f"- time: {card['train_s']} s training, {card['tokens_per_s']} tokens/s, peak RSS {card['peak_rss_mib']} MiB",
        "",
        "![loss](loss.png)",
        "",
        "Config:",
        "",
        "```json",
        json.dumps(card["config"], indent=2),
        "```",
        "",
    ])
