"""``taskfit reward train``: a reward model from preference pairs.

Methods: ``lora`` (LoRA on the language model, the one-output head trained in full; PEFT's sequence-classification
task), ``full``, ``top`` (the last ``top_layers`` decoder layers, the final norm and the head) — all on TRL's
RewardTrainer with the pairs tokenized by taskfit's own renderer (TRL reads them as ``chosen_ids`` /
``rejected_ids`` and tokenizes nothing itself), CPU-safe settings (no bf16, no gradient checkpointing) and the
model and tokenizer passed in (no hub). ``minilm``: a linear reward on the packaged MiniLM sentence embeddings of
(last user turn, answer), fitted as a Bradley-Terry model (logistic regression on embedding differences) — the
cheap baseline, and an independent judge.

A share of the prompts (``dev_share``) is held out before training: written to ``<output>/dev.jsonl`` and evaluated
after training into ``<output>/dev-eval`` (a run folder: accuracy with its CI, the length baselines on the same
pairs), so a reward model's quality is measured on pairs it never saw.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from taskfit.adapters.apply import quiet_checkpointing_rename
from taskfit.data.preferences import PreferencePair, pair_row
from taskfit.errors import UserError
from taskfit.models.catalog import resolve_model
from taskfit.models.loading import resolve_device
from taskfit.models.reward import REWARD_CONFIG, sequence_classifier
from taskfit.prompting.preference_tokens import PreferenceTokenizer
from taskfit.prompting.tokens import Tokenizer
from taskfit.runs import peak_rss_mib, write_run_card
from taskfit.settings import RewardConfig
from taskfit.tuning.common import LORA_TARGETS, fresh_output, plot_loss, preference_split
from taskfit.tuning.reward_eval import evaluate_reward
from taskfit.tuning.reward_minilm import train_minilm

log = logging.getLogger(__name__)

def train_reward(config: RewardConfig) -> dict[str, Any]:
    """Train, save, evaluate on the held-out prompts; returns the run card."""
    started = time.perf_counter()
    out = fresh_output(config.output, "reward", config.method)
    split = preference_split(config.data, config.limit, config.dev_share, config.seed)
    data, unpaired, train, dev = split.data, split.unpaired, split.train, split.dev
    if len(train) < 2:
        raise UserError(f"only {len(train)} training pairs after the dev split; give more data or a smaller "
                        "--dev-share")
    out.mkdir(parents=True, exist_ok=True)
    if dev:
        (out / "dev.jsonl").write_text("".join(json.dumps(pair_row(p), ensure_ascii=False) + "\n" for p in dev),
                                       encoding="utf-8")
    provenance = {"files": [str(f) for f in config.data], "formats": dict(data.formats),
                  "dropped_when_read": dict(data.dropped), "rated_rows_unpaired": unpaired,
                  "pairs": len(train) + len(dev), "train_pairs": len(train), "dev_pairs": len(dev)}
    if config.method == "minilm":
        card = train_minilm(config, train, out)
    else:
        card = _train_lm(config, train, out)
    card["data"] = {**provenance, **card.get("data", {})}
    card.update(created=datetime.now(UTC).isoformat(timespec="seconds"), method=f"reward-{config.method}",
                config=json.loads(config.model_dump_json()), total_s=round(time.perf_counter() - started, 2),
                peak_rss_mib=peak_rss_mib(), output=str(out))
    if dev:
        results = evaluate_reward(str(out), [out / "dev.jsonl"], out / "dev-eval", seed=config.seed)
        card["dev"] = {"accuracy": results["metrics"]["accuracy"], "baselines": results["baselines"],
                       "mean_margin": results["mean_margin"], "n": results["counts"]["n"]}
    write_run_card(out, card, _markdown(card))
    return card


def _train_lm(config: RewardConfig, train: list[PreferencePair], out: Path) -> dict[str, Any]:
    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    _, location = resolve_model(config.model)
    model, tokenizer = sequence_classifier(location)
    renderer = PreferenceTokenizer(Tokenizer(tokenizer, config.chat_template), config.max_length)
    ids = renderer.pairs(train)
    rows = [{"chosen_ids": p.chosen, "rejected_ids": p.rejected} | ({"margin": p.margin} if p.margin is not None
                                                                       else {}) for p in ids]
    if any("margin" in r for r in rows) and not all("margin" in r for r in rows):
        rows = [{k: v for k, v in r.items() if k != "margin"} for r in rows]  # margins only when every pair has one
    peft_config, trainable_note = _method(config, model)
    per_epoch = math.ceil(len(rows) / (config.batch_size * config.gradient_accumulation))
    total_steps = config.max_steps if config.max_steps > 0 else math.ceil(per_epoch * config.epochs)
    with quiet_checkpointing_rename():
        return _fit(config, model, tokenizer, rows, peft_config, trainable_note, renderer, ids, location, out,
                    warmup_steps=int(config.warmup_ratio * total_steps))


def _fit(config, model, tokenizer, rows, peft_config, trainable_note, renderer, ids, location, out,
         warmup_steps) -> dict[str, Any]:
    import datasets
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    gpu = resolve_device(config.device) == "cuda"
    args = TRLRewardConfig(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation, learning_rate=config.learning_rate(),
        num_train_epochs=config.epochs, max_steps=config.max_steps, weight_decay=config.weight_decay,
        warmup_steps=warmup_steps, logging_steps=config.logging_steps, save_strategy="no",
        seed=config.seed, data_seed=config.seed, report_to=config.report_to, use_cpu=not gpu, bf16=False,
        gradient_checkpointing=False, max_length=config.max_length,
        disable_tqdm=not config.progress, dataloader_num_workers=0, center_rewards_coefficient=None,
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                            processing_class=tokenizer, peft_config=peft_config)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    train_start = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - train_start
    trainer.model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / REWARD_CONFIG).write_text(json.dumps({
        "kind": "lm", "base_model": str(location), "adapter": peft_config is not None,
        "chat_template": config.chat_template, "max_length": config.max_length}, indent=2) + "\n", encoding="utf-8")
    history = [h for h in trainer.state.log_history if "loss" in h]
    plot_loss(history, out / "loss.png", f"reward model ({config.method})")
    tokens = sum(len(p.chosen) + len(p.rejected) for p in ids) * config.epochs
    return {
        "base_model": {"name": config.model, "path": str(location)},
        "data": {"tokenized": dict(renderer.counts)},
        "trainable_parameters": trainable, "total_parameters": total, "trainable_share": trainable / total,
        "trainable": trainable_note, "steps": trainer.state.global_step,
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": history[-1]["loss"] if history else result.training_loss,
        "loss_history": [{"step": h["step"], "loss": h["loss"]} for h in history],
        "accuracy_history": [{"step": h["step"], "accuracy": h["accuracy"]} for h in history if "accuracy" in h],
        "train_s": round(train_s, 2), "tokens_per_s": round(tokens / train_s, 1) if train_s > 0 else None,
    }


def _method(config: RewardConfig, model) -> tuple[Any, str]:
    """The PEFT config (``lora``) or the frozen layers (``top``) of a reward method."""
    if config.method == "lora":
        from peft import LoraConfig, TaskType

        return LoraConfig(task_type=TaskType.SEQ_CLS, r=config.rank, lora_alpha=config.alpha,
                          lora_dropout=config.dropout, target_modules=config.target_modules or LORA_TARGETS), \
            "LoRA on the attention and MLP projections, the reward head in full"
    if config.method == "top":
        layers = model.base_model.layers
        if config.top_layers > len(layers):
            raise UserError(f"--top-layers {config.top_layers}: the model has {len(layers)} layers")
        for p in model.parameters():
            p.requires_grad = False
        for module in [*layers[-config.top_layers:], model.base_model.norm, model.score]:
            for p in module.parameters():
                p.requires_grad = True
        return None, f"the last {config.top_layers} decoder layers, the final norm and the reward head"
    return None, "every weight"


def _markdown(card: dict[str, Any]) -> str:
    data = card["data"]
    lines = [f"# Run card: {card['method']}", "",
             f"- data: {', '.join(data['files'])} — {data['pairs']} pairs ({data['train_pairs']} train, "
             f"{data['dev_pairs']} dev); formats {data['formats']}; dropped when read {data['dropped_when_read']}; "
             f"tokenized {data.get('tokenized', {})}",
             f"- trainable: {card.get('trainable', '')} ({card.get('trainable_parameters', 0):,} parameters)",
             f"- steps {card.get('steps')}, loss {card.get('first_loss')} -> {card.get('final_loss')}, "
             f"{card.get('train_s')} s training, {card.get('tokens_per_s')} tokens/s, "
             f"peak RSS {card['peak_rss_mib']} MiB"]
    if "dev" in card:
        dev = card["dev"]
        acc = dev["accuracy"]
        lines.append(f"- dev ({dev['n']} pairs never trained on): accuracy {acc['value']:.4f} "
                     f"[{acc['ci_low']:.4f}, {acc['ci_high']:.4f}]; shorter answer wins "
                     f"{dev['baselines']['shorter']['value']:.4f}; longer answer wins "
                     f"{dev['baselines']['longer']['value']:.4f}; mean margin {dev['mean_margin']:.4f}")
    lines += ["", "```json", json.dumps(card["config"], indent=2), "```", ""]
    return "\n".join(lines)
