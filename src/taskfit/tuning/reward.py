"""``taskfit reward train``: a reward model from preference pairs.

Methods: ``lora`` (LoRA on the language model, the one-output head trained in full; PEFT's sequence-classification
task), ``full``, ``top`` (the last ``top_layers`` decoder layers, the final norm and the head) — all on TRL's
RewardTrainer with the pairs tokenized by taskfit's own renderer (TRL reads them as ``chosen_ids`` /
``rejected_ids`` and tokenizes nothing itself), the arguments every stage shares (:mod:`taskfit.tuning.skeleton`:
fp32 on the CPU, mixed precision on a GPU, no gradient checkpointing) and the model and tokenizer passed in (no
hub). ``minilm``: a linear reward on the packaged MiniLM sentence embeddings of
(last user turn, answer), fitted as a Bradley-Terry model (logistic regression on embedding differences) — the
cheap baseline, and an independent judge.

A share of the prompts (``dev_share``) is held out before training: written to ``<output>/dev.jsonl`` and evaluated
after training into ``<output>/dev-eval`` (a run folder: accuracy with its CI, the length baselines on the same
pairs), so a reward model's quality is measured on pairs it never saw.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from taskfit.adapters.apply import quiet_checkpointing_rename
from taskfit.data.preferences import PreferencePair, pair_row
from taskfit.errors import UserError
from taskfit.models.catalog import resolve_model
from taskfit.models.kv import common_prefix_length, length_passes
from taskfit.models.reward import REWARD_CONFIG, prefix_rewards, sequence_classifier
from taskfit.prompting.preference_tokens import PreferenceTokenizer
from taskfit.prompting.tokens import Tokenizer
from taskfit.settings import RewardConfig
from taskfit.tuning.common import preference_split
from taskfit.tuning.reward_eval import evaluate_reward
from taskfit.tuning.reward_minilm import train_minilm
from taskfit.tuning.skeleton import (
    RunCard,
    Trained,
    begin,
    count_parameters,
    lora_config,
    loss_history,
    one_process,
    plot_loss,
    seed_and_threads,
    stage_output,
    training_arguments,
)

log = logging.getLogger(__name__)

def train_reward(config: RewardConfig) -> dict[str, Any]:
    """Train, save, evaluate on the held-out prompts; returns the run card."""
    one_process("reward train")
    started = time.perf_counter()
    out, _ = stage_output(config, "reward")
    split = preference_split(config.data, config.limit, config.dev_share, config.seed)
    data, unpaired, train, dev = split.data, split.unpaired, split.train, split.dev
    if len(train) < 2:
        raise UserError(f"only {len(train)} training pairs after the dev split; give more data or a smaller "
                        "--dev-share")
    begin(out, config)
    if dev:
        (out / "dev.jsonl").write_text("".join(json.dumps(pair_row(p), ensure_ascii=False) + "\n" for p in dev),
                                       encoding="utf-8")
    provenance = {"files": [str(f) for f in config.data], "formats": dict(data.formats),
                  "dropped_when_read": dict(data.dropped), "rated_rows_unpaired": unpaired,
                  "pairs": len(train) + len(dev), "train_pairs": len(train), "dev_pairs": len(dev)}
    trained = train_minilm(config, train, out) if config.method == "minilm" else _train_lm(config, train, out)
    card = RunCard(method=f"reward-{config.method}", base_model=trained.base_model,
                   data={**provenance, **trained.data}, config=config, output=out, started=started,
                   trainable_parameters=trained.trainable, total_parameters=trained.total, steps=trained.steps,
                   loss_history=trained.loss_history, fallback_loss=trained.fallback_loss, train_s=trained.train_s,
                   tokens=trained.tokens, extras={"trainable": trained.note, **trained.extras},
                   result=f"{len(train)} training pairs")
    data = card.data
    card.lines = [f"- data: {', '.join(data['files'])} — {data['pairs']} pairs ({data['train_pairs']} train, "
                  f"{data['dev_pairs']} dev); formats {data['formats']}; dropped when read "
                  f"{data['dropped_when_read']}; tokenized {data.get('tokenized', {})}",
                  f"- trainable: {trained.note}",
                  f"- evaluate with `taskfit reward eval --reward {out} --data FILE`"]
    if dev:
        results = evaluate_reward(str(out), [out / "dev.jsonl"], out / "dev-eval", seed=config.seed)
        card.extras["dev"] = {"accuracy": results["metrics"]["accuracy"], "baselines": results["baselines"],
                              "mean_margin": results["mean_margin"], "n": results["counts"]["n"]}
        acc, base = results["metrics"]["accuracy"], results["baselines"]
        card.result += (f"; dev accuracy {acc['value']:.4f} [{acc['ci_low']:.4f}, {acc['ci_high']:.4f}] on "
                        f"{results['counts']['n']} held-out pairs (shorter answer wins {base['shorter']['value']:.4f})")
        card.lines.append(f"- dev ({results['counts']['n']} pairs never trained on): accuracy {acc['value']:.4f} "
                          f"[{acc['ci_low']:.4f}, {acc['ci_high']:.4f}]; shorter answer wins "
                          f"{base['shorter']['value']:.4f}; longer answer wins {base['longer']['value']:.4f}; "
                          f"mean margin {results['mean_margin']:.4f}")
    return card.write()


def _train_lm(config: RewardConfig, train: list[PreferencePair], out: Path) -> Trained:
    """LoRA / full / top layers of the LM under a one-output head, on TRL's RewardTrainer."""
    import datasets
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    seed_and_threads(config)
    _, location = resolve_model(config.model)
    model, tokenizer = sequence_classifier(location)
    renderer = PreferenceTokenizer(Tokenizer(tokenizer, config.chat_template), config.max_length)
    ids = renderer.pairs(train)
    rows = [{"chosen_ids": p.chosen, "rejected_ids": p.rejected} | ({"margin": p.margin} if p.margin is not None
                                                                       else {}) for p in ids]
    if any("margin" in r for r in rows) and not all("margin" in r for r in rows):
        rows = [{k: v for k, v in r.items() if k != "margin"} for r in rows]  # margins only when every pair has one
    peft, note = _method(config, model)
    args = training_arguments(config, out / "checkpoints", len(rows), TRLRewardConfig, save_strategy="no",
                              max_length=config.max_length, center_rewards_coefficient=None)
    with quiet_checkpointing_rename():
        trainer = shared_prompt_trainer(RewardTrainer, config.micro_batch_tokens)(
            model=model, args=args, train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer,
            peft_config=peft)
        trainable, total = count_parameters(trainer.model)
        train_start = time.perf_counter()
        result = trainer.train()
        train_s = time.perf_counter() - train_start
        trainer.model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / REWARD_CONFIG).write_text(json.dumps({
        "kind": "lm", "base_model": str(location), "adapter": peft is not None,
        "chat_template": config.chat_template, "max_length": config.max_length}, indent=2) + "\n", encoding="utf-8")
    history = loss_history(trainer)
    plot_loss(history, out / "loss.png", f"reward model ({config.method})")
    return Trained(base_model={"name": config.model, "path": str(location)}, note=note, trainable=trainable,
                   total=total, steps=trainer.state.global_step, loss_history=history,
                   fallback_loss=result.training_loss, train_s=train_s,
                   tokens=sum(len(p.chosen) + len(p.rejected) for p in ids) * config.epochs,
                   data={"tokenized": dict(renderer.counts)},
                   extras={"accuracy_history": [{"step": h["step"], "accuracy": h["accuracy"]}
                                                for h in trainer.state.log_history if "accuracy" in h]})


def _method(config: RewardConfig, model) -> tuple[Any, str]:
    """The PEFT config (``lora``) or the frozen layers (``top``) of a reward method."""
    if config.method == "lora":
        return lora_config(config, "SEQ_CLS"), "LoRA on the attention and MLP projections, the reward head in full"
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


def shared_prompt_trainer(trainer_class, budget: int):
    """TRL's RewardTrainer with the training loss computed on shared prompts, in passes of similar length.

    TRL runs a batch's chosen and rejected sequences as 2 x batch rows padded to the longest, so every prompt runs
    twice and short rows carry long padding. Here each pair's shared start (the prompt: the longest common prefix
    of its two sequences, less at least one answer token each) runs once and both answers continue its KV cache
    (:func:`prefix_rewards`), the pairs grouped in passes of at most ``budget`` padded tokens (``length_passes``):
    all but the last pass run forward and backward here. The loss is TRL's (the mean over pairs of
    -log sigmoid(r_chosen - r_rejected - margin)) and its logged metrics are TRL's; evaluation runs TRL's own."""
    import torch

    class SharedPromptRewardTrainer(trainer_class):
        loss_is_scaled_for_ga = True  # divided by the accumulation steps here

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or not model.training:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            ids, mask = inputs["input_ids"], inputs["attention_mask"]
            n = len(ids) // 2
            lengths = mask.sum(-1).tolist()
            rows = [ids[i, :lengths[i]].tolist() for i in range(2 * n)]
            pairs = [(rows[i], rows[n + i]) for i in range(n)]
            shared = [min(common_prefix_length(pair), len(pair[0]) - 1, len(pair[1]) - 1) for pair in pairs]
            margin = inputs.get("margin")
            scale = 1 / (n * getattr(self, "current_gradient_accumulation_steps", 1))
            body = self.accelerator.unwrap_model(model)
            body = body.get_base_model() if hasattr(body, "get_base_model") else body
            rewards = torch.zeros(n, 2)
            done = 0.0
            passes = length_passes([max(len(c), len(r)) for c, r in pairs], budget)
            for k, group in enumerate(passes):
                with self.accelerator.autocast():  # the body is called directly: the model's autocast is bypassed
                    both = prefix_rewards(body, [pairs[i][0][:shared[i]] for i in group],
                                          [[pairs[i][0][shared[i]:], pairs[i][1][shared[i]:]] for i in group])
                chosen, rejected = both[0::2], both[1::2]
                diff = chosen - rejected - (margin[group] if margin is not None else 0)
                part = -torch.nn.functional.logsigmoid(diff).sum()
                if self.args.center_rewards_coefficient is not None:
                    part = part + self.args.center_rewards_coefficient * ((chosen + rejected) ** 2).sum()
                part = part * scale
                rewards[group] = torch.stack([chosen, rejected], -1).detach().float().cpu()
                if k < len(passes) - 1:
                    self.accelerator.backward(part)
                    done = done + part.detach()
                else:
                    loss = part + done
            self._record(rewards, lengths)
            return loss

        def _record(self, rewards, lengths):
            """The metrics TRL's compute_loss logs for a training batch."""
            self._total_train_tokens += sum(lengths)
            metrics = self._metrics["train"]
            metrics["num_tokens"] = [self._total_train_tokens]
            metrics["min_reward"].append(rewards.min().item())
            metrics["mean_reward"].append(rewards.mean().item())
            metrics["max_reward"].append(rewards.max().item())
            metrics["accuracy"].append((rewards[:, 0] > rewards[:, 1]).float().mean().item())
            metrics["margin"].append((rewards[:, 0] - rewards[:, 1]).mean().item())

    return SharedPromptRewardTrainer
