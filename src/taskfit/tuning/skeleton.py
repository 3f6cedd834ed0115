"""What every tuning stage shares, written once: the Trainer's arguments, the LoRA configuration, the output folder
and its resume rule, and the run card.

A stage (``sft``, ``head``, ``reward``, ``dpo`` / ``kto``, ``raft``) is its own module read top to bottom — output
folder, data, model, trainer, train, save, card — and keeps only what is its own: its data, its model set-up, its
loss and its extra card fields. TRL's ``RewardConfig(TrainingArguments)`` and LLaMA-Factory's per-stage workflows
are the models: a stage adds keywords to :func:`training_arguments`, it never re-lists the common ones.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from taskfit.errors import UserError
from taskfit.models.loading import autocast, load_causal_lm, mixed_precision, resolve_device
from taskfit.paths import output_folder
from taskfit.runs import RUN_CARD, peak_rss_mib, read_run_card, write_json, write_run_card
from taskfit.settings import eval_command, run_identity

log = logging.getLogger(__name__)

LLAMA_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
LLAMA_MLP = ["gate_proj", "up_proj", "down_proj"]
LORA_TARGETS = LLAMA_ATTENTION + LLAMA_MLP  # every projection of a Llama-family decoder layer

SETTINGS_FILE = "settings.json"  # a run's identity: what must match for --resume to continue it
LEGACY_SETTINGS = (("tune.json", None), ("raft.json", "settings"))  # where sft and RAFT kept them before


# ------------------------------------------------------------------------------------------------ processes
def world() -> tuple[int, int]:
    """(this process's rank, the number of processes) of a distributed launch (``torchrun`` / ``accelerate
    launch`` set ``RANK`` and ``WORLD_SIZE``); (0, 1) in one process."""
    import os

    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this process writes the run's files: the only one, or rank 0 of a distributed launch (the others
    train their share and write nothing)."""
    return world()[0] == 0


def one_process(stage: str) -> None:
    """Refuse a distributed launch for a stage that has only run in one process here (sft has run in several)."""
    if world()[1] > 1:
        raise UserError(f"{stage} runs in one process; launch it with plain `taskfit` (several processes are "
                        "tested for `taskfit tune` only: torchrun --nproc_per_node N -m taskfit.cli tune ...)")


# ------------------------------------------------------------------------------------------------ set-up
def seed_and_threads(config) -> None:
    """Seed torch with the run's seed and use ``--threads`` CPU threads (all cores when unset)."""
    import torch

    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)


def training_arguments(config, output_dir: Path, rows: int, args_class: type | None = None, **stage: Any):
    """The Trainer's arguments of a stage: the keywords every stage shares, from ``config``'s optimisation and
    bookkeeping sections, and ``stage``'s own (``beta``, ``max_length``, checkpointing ...), which win.

    ``args_class`` is ``TrainingArguments`` or a TRL config built on it (``RewardConfig``, ``DPOConfig``,
    ``KTOConfig``); ``rows`` sets the warm-up steps (``warmup_ratio`` of the steps the run will take). The precision
    is :func:`stage_precision`'s: on a GPU every stage trains in mixed precision (bf16 where supported, else fp16),
    on the CPU in fp32, or in bf16 mixed precision with ``--precision bf16``."""
    from transformers import TrainingArguments

    gpu = resolve_device(config.device) == "cuda"
    mixed = stage_precision(config)
    per_epoch = math.ceil(rows / (config.batch_size * config.gradient_accumulation))
    total_steps = config.max_steps if config.max_steps > 0 else math.ceil(per_epoch * config.epochs)
    common = dict(
        output_dir=str(output_dir), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation, learning_rate=config.learning_rate(),
        num_train_epochs=config.epochs, max_steps=config.max_steps, weight_decay=config.weight_decay,
        warmup_steps=int(config.warmup_ratio * total_steps), lr_scheduler_type="linear",
        logging_steps=config.logging_steps, seed=config.seed, data_seed=config.seed, report_to=config.report_to,
        use_cpu=not gpu, bf16=mixed == "bf16", fp16=mixed == "fp16", disable_tqdm=not config.progress,
        dataloader_num_workers=0,
    )
    args_class = args_class or TrainingArguments
    if args_class is not TrainingArguments:  # TRL's configs turn gradient checkpointing on by default
        common["gradient_checkpointing"] = False
    return args_class(**(common | stage))


def stage_precision(config) -> str | None:
    """The mixed precision (``bf16`` / ``fp16``, ``None`` for fp32) of a stage's forward and backward passes, from
    its ``--precision`` and ``--device`` (``models.loading.mixed_precision``: bf16 on a CPU without bf16
    instructions is refused)."""
    return mixed_precision(config.precision, resolve_device(config.device))


def stage_autocast(config):
    """The context a stage's own passes outside the Trainer's model call run in (held-out scoring, a loss that
    calls the model's body): the precision the Trainer trains in."""
    return autocast(stage_precision(config), resolve_device(config.device))


def lora_config(config, task_type: str):
    """The LoRA every stage trains (``task_type``: ``CAUSAL_LM``, or ``SEQ_CLS`` for a reward model): rank, alpha,
    dropout and target modules from the settings, every projection of a Llama layer by default."""
    from peft import LoraConfig, TaskType

    return LoraConfig(task_type=getattr(TaskType, task_type), r=config.rank, lora_alpha=config.alpha,
                      lora_dropout=config.dropout, target_modules=config.target_modules or LORA_TARGETS)


def load_start_policy(location: str, adapter: Path | None):
    """The model a preference or RL stage starts from: the base, or an SFT adapter merged into it (LoRA, IA3, full;
    a prefix / prompt adapter cannot be merged), with a pad token for batches."""
    loaded = load_causal_lm(location, adapter=adapter)
    if loaded.virtual is not None:
        raise UserError(f"--adapter {adapter}: prefix / prompt adapters cannot be merged; start from a LoRA, IA3 or "
                        "full SFT run")
    if loaded.tokenizer.pad_token_id is None:
        loaded.tokenizer.pad_token = loaded.tokenizer.eos_token
    return loaded


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters of ``model``."""
    return (sum(p.numel() for p in model.parameters() if p.requires_grad),
            sum(p.numel() for p in model.parameters()))


def loss_history(trainer) -> list[dict[str, Any]]:
    """The Trainer's logged training losses, oldest first: ``[{"step", "loss"}, ...]``."""
    return [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]


# ------------------------------------------------------------------------------------------------ output
def stage_output(config, stage: str, *, resume: bool = False, resumable: bool = False) -> tuple[Path, bool]:
    """The output folder of a run and whether it continues one, checked before any data or model loads.

    A new run needs an empty (or new) folder. A folder holding a run (its ``settings.json``) is continued only with
    ``--resume``, by a stage that can (``resumable``), and only with the same identity — the settings minus the
    operational ones (where output goes, threads, logging, device ...); the keys that differ are named. Any other
    folder that holds files is refused, so nothing is overwritten. A ``--precision`` this machine cannot run is
    refused here too."""
    stage_precision(config)
    out = output_folder(config.output or
                        f"runs/{stage}/{config.method}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}")
    if not is_main_process():  # rank 0 checks the folder (and stops the launch if it refuses); the others follow
        return out, resume
    if resume and not resumable:
        raise UserError(f"--resume: {stage} --method {config.method} trains in one go and keeps no checkpoints; run "
                        "it again without --resume")
    if not (out.is_dir() and any(out.iterdir())):
        if resume:
            raise UserError(f"--resume: {out} holds no run to continue; run the command without --resume")
        return out, False
    saved = saved_identity(out)
    if saved is None or not resumable:
        raise UserError(f"{out} is not empty; choose another --output")
    now = run_identity(config)
    changed = sorted(k for k in now if saved.get(k) != now[k])
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} then, {now[k]!r} now" for k in changed[:4])
        raise UserError(f"{'--resume: ' if resume else ''}{out} holds a run with other settings ({detail}); give the "
                        "same command as that run, or another --output")
    if not resume:
        raise UserError(f"{out} holds this run already; pass --resume to continue it, or choose another --output")
    return out, True


def checkpoint_to_resume(out: Path) -> int:
    """The step of the last ``checkpoint-N`` in ``out`` that ``--resume`` continues from (stages that checkpoint)."""
    steps = [int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
    if not steps:
        raise UserError(f"--resume: no checkpoint-* folder in {out}; the run stopped before its first checkpoint "
                        "(--save-steps): run it again without --resume into another --output")
    return max(steps)


def begin(out: Path, config) -> None:
    """Create the output folder of a new run with its identity, once its data has been read and checked."""
    if not is_main_process():
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SETTINGS_FILE, run_identity(config))


def saved_identity(out: Path) -> dict[str, Any] | None:
    """The identity of the run in ``out`` (None: no run of taskfit's there)."""
    for name, key in ((SETTINGS_FILE, None), *LEGACY_SETTINGS):
        path = out / name
        if path.is_file():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                return None
            saved = saved.get(key) if key and isinstance(saved, dict) else saved
            if isinstance(saved, dict):
                return saved
    return None


def finished_card(out: Path) -> dict[str, Any] | None:
    """The run card of a run that finished in ``out`` (nothing left to resume), or None."""
    return read_run_card(out) if (out / RUN_CARD).is_file() else None


# ------------------------------------------------------------------------------------------------ the card
@dataclass
class Trained:
    """What a stage's training step reports for its card (a reward model's LM or MiniLM fit, ...)."""

    base_model: dict[str, Any]
    note: str  # what trained, in words
    trainable: int
    total: int
    steps: int
    loss_history: list[dict[str, Any]]
    train_s: float
    fallback_loss: float | None = None
    tokens: float | None = None
    data: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


def evaluated_as(model: str, out: Path, merged: bool) -> dict[str, Any]:
    """How ``taskfit eval`` loads what a stage wrote to ``out``: the merged model folder, or the adapter on
    ``model`` (the model it was trained on)."""
    return {"model": f"hf:{out}"} if merged else {"model": model, "adapter": str(out)}


@dataclass
class RunCard:
    """What a training run did: the fields every stage's card has, the stage's extras, and its own markdown lines.

    ``evaluate_with`` is how to evaluate what was trained (``taskfit eval`` settings: RunConfig keys such as
    ``model`` and ``adapter``), written by the stage that knows, so the CLI, grids, the autopilot and the feedback
    loop read it instead of re-deriving it from the method's name."""

    method: str
    base_model: dict[str, Any]
    data: dict[str, Any]
    config: Any
    output: Path
    started: float  # time.perf_counter() when the stage began
    evaluate_with: dict[str, Any] | None = None
    result: str = ""  # the stage's own result in a clause (held-out margins, reward change), for its summary line
    trainable_parameters: int = 0
    total_parameters: int = 0
    steps: int = 0
    loss_history: list[dict[str, Any]] = field(default_factory=list)
    fallback_loss: float | None = None  # the final loss when none was logged (the Trainer's mean training loss)
    train_s: float = 0.0
    tokens: float | None = None  # tokens trained on, for tokens/s
    extras: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)  # the stage's own lines of RUN_CARD.md

    def as_dict(self) -> dict[str, Any]:
        import time

        history = self.loss_history
        return {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "method": self.method,
            "base_model": self.base_model,
            "data": self.data,
            "config": json.loads(self.config.model_dump_json()),
            "trainable_parameters": self.trainable_parameters,
            "total_parameters": self.total_parameters,
            "trainable_share": self.trainable_parameters / self.total_parameters if self.total_parameters else None,
            "steps": self.steps,
            "first_loss": history[0]["loss"] if history else None,
            "final_loss": history[-1]["loss"] if history else self.fallback_loss,
            "loss_history": history,
            "train_s": round(self.train_s, 2),
            "total_s": round(time.perf_counter() - self.started, 2),
            "tokens_per_s": round(self.tokens / self.train_s, 1) if self.tokens and self.train_s > 0 else None,
            "peak_rss_mib": peak_rss_mib(),
            "output": str(self.output),
            "evaluate_with": self.evaluate_with,
            "result": self.result,
            **self._processes(),
            **self.extras,
        }

    def _processes(self) -> dict[str, Any]:
        """How many processes trained and the global batch (per-process batch x accumulation x processes)."""
        size = world()[1]
        batch = getattr(self.config, "batch_size", None)
        accumulation = getattr(self.config, "gradient_accumulation", 1) or 1
        return {"world_size": size, "global_batch": batch * accumulation * size if batch else None}

    def write(self) -> dict[str, Any]:
        """``run_card.json`` and ``RUN_CARD.md`` in the output folder; returns the card."""
        card = self.as_dict()
        if is_main_process():
            write_run_card(self.output, card, card_markdown(card, self.lines))
        return card


def summary(card: dict[str, Any]) -> str:
    """What a training command prints when it is done: the common facts, the stage's own result, where the output
    went and how to evaluate it."""
    share = card.get("trainable_share")
    parts = [f"{card['steps']} steps", f"loss {card['first_loss']} -> {card['final_loss']}"]
    if share:
        parts.append(f"{card['trainable_parameters']:,} trainable parameters ({100 * share:.3f}%)")
    parts.append(f"{card['train_s']} s")
    text = f"{card['method']}: {', '.join(parts)}" + (f"; {card['result']}" if card.get("result") else "")
    evaluate = card.get("evaluate_with")
    return text + f"\noutput: {card['output']}" + (f" (evaluate with `{eval_command(evaluate)}`)" if evaluate else "")


def heldout_result(change: dict[str, Any] | None, win: float | None) -> str:
    """RAFT's and GRPO / RLOO's result: the held-out mean reward, trained minus start, with its CI."""
    if not change or change.get("ci_low") is None:
        return "held-out mean reward trained - start: -"
    return (f"held-out mean reward trained - start {change['value']:+.4f} [{change['ci_low']:+.4f}, "
            f"{change['ci_high']:+.4f}], win rate {win}")


def card_markdown(card: dict[str, Any], lines: list[str]) -> str:
    """RUN_CARD.md: the common facts, the stage's own lines, the loss curve, the config."""
    share = card["trainable_share"]
    out = [f"# Run card: {card['method']}", "",
           f"- base model: {card['base_model']['name']} ({card['base_model']['path']})",
           *lines,
           f"- trainable parameters: {card['trainable_parameters']:,} of {card['total_parameters']:,}"
           + (f" ({100 * share:.3f}%)" if share is not None else ""),
           f"- steps: {card['steps']}, loss {card['first_loss']} -> {card['final_loss']}",
           f"- time: {card['train_s']} s training, {card['tokens_per_s']} tokens/s, "
           f"peak RSS {card['peak_rss_mib']} MiB"]
    if card.get("evaluate_with"):
        out.append(f"- evaluate with `{eval_command(card['evaluate_with'])}`")
    if (Path(card["output"]) / "loss.png").is_file():
        out += ["", "![loss](loss.png)"]
    out += ["", "Config:", "", "```json", json.dumps(card["config"], indent=2), "```", ""]
    return "\n".join(out)


def plot_loss(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """The training loss against the optimizer step, as a PNG beside the run card."""
    if not is_main_process():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if history:
        ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker="o", markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
