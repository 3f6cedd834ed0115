"""``taskfit align --method dpo | kto``: preference optimisation with TRL's trainers on taskfit's renderer.

The start policy is the base model, or an SFT adapter from ``taskfit tune`` merged into it; a new LoRA trains on top,
so the reference is exactly the start policy (TRL disables the LoRA to compute it): nothing is loaded twice and the
reference cannot drift. Rows are tokenized by :class:`taskfit.prompting.tokens.Tokenizer` (the hf backend's chat
template, the answer, the end-of-turn token) with prompts cut by whole turns; TRL receives ``prompt_ids`` and the
answers' ids and tokenizes nothing itself. TRL's option names are taskfit's (``beta``, ``loss_type``,
``desirable_weight``, ``undesirable_weight``).

Held-out prompts (``dev_share``) measure the result: the implicit reward of an answer is β · (log π(y|x) −
log π_ref(y|x)); on each held-out pair its margin (chosen − rejected) is recorded, with the mean margin's 95% CI and
the share of pairs ranked right.

Output: without ``--adapter``, the new LoRA (evaluate with ``taskfit eval --adapter DIR``); from an SFT adapter, the
merged model (``--model hf:DIR``), since the new LoRA only makes sense on the SFT weights.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from taskfit.adapters.apply import quiet_checkpointing_rename
from taskfit.errors import UserError
from taskfit.metrics.paired import sign_test
from taskfit.metrics.registry import mean_with_ci
from taskfit.models.catalog import resolve_model
from taskfit.models.kv import after_prefixes, length_passes
from taskfit.prompting.preference_tokens import PairIds, PreferenceTokenizer
from taskfit.prompting.tokens import Tokenizer
from taskfit.settings import AlignConfig
from taskfit.tuning.common import preference_split
from taskfit.tuning.skeleton import (
    RunCard,
    begin,
    count_parameters,
    evaluated_as,
    load_start_policy,
    lora_config,
    loss_history,
    one_process,
    plot_loss,
    seed_and_threads,
    stage_autocast,
    stage_output,
    training_arguments,
)

log = logging.getLogger(__name__)

def train_align(config: AlignConfig) -> dict[str, Any]:
    started = time.perf_counter()
    out, _ = stage_output(config, "align")
    split = preference_split(config.data, config.limit, config.dev_share, config.seed)
    data, unpaired, train_pairs, dev_pairs = split.data, split.unpaired, split.train, split.dev
    seed_and_threads(config)
    name, location = resolve_model(config.model)
    loaded = load_start_policy(location, config.adapter)
    tokenizer = loaded.tokenizer
    renderer = PreferenceTokenizer(Tokenizer(tokenizer, config.chat_template), config.max_length)
    if config.method == "dpo":
        rows = [{"prompt_ids": p.chosen[:p.prompt_length], "chosen_ids": p.chosen[p.prompt_length:],
                 "rejected_ids": p.rejected[p.prompt_length:]} for p in renderer.pairs(train_pairs)]
    else:
        # the file's pairs as two rated rows each, and its rated rows as they are (as_pairs also paired rated rows
        # up for the dev split; those pairs are not counted again)
        from_files = {id(p) for p in data.pairs}
        dev_prompts = {d.prompt for d in dev_pairs}
        rated = ([r for p in train_pairs if id(p) in from_files for r in p.rated()]
                 + [r for r in data.rated if r.prompt not in dev_prompts])
        rows = [{"prompt_ids": r.ids[:r.prompt_length], "completion_ids": r.ids[r.prompt_length:], "label": r.label}
                for r in renderer.rated(rated)]
        rows = kto_order(rows, config.batch_size, config.seed)
    if len(rows) < 2:
        raise UserError(f"only {len(rows)} training rows after the dev split and cutting; give more data")
    begin(out, config)
    with quiet_checkpointing_rename():
        trainer, result, train_s = _train(config, loaded.model, tokenizer, rows, out)
        dev_renderer = PreferenceTokenizer(renderer.tokenizer, config.max_length)
        with stage_autocast(config):
            dev = (_dev_margins(trainer.model, dev_renderer.pairs(dev_pairs), config.kl_beta(),
                               config.micro_batch_tokens) if dev_pairs else None)
        model = trainer.model
        if config.adapter:
            model = model.merge_and_unload()
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    history = loss_history(trainer)
    plot_loss(history, out / "loss.png", f"{config.method} on {', '.join(Path(f).name for f in config.data)}")
    trainable, total = count_parameters(trainer.model)
    start = str(config.adapter) if config.adapter else "the base model"
    reference = ("the SFT adapter merged into the base weights; the new LoRA disabled" if config.adapter else
                 "the base model (the new LoRA disabled)")
    card_data = {"files": [str(f) for f in config.data], "formats": dict(data.formats),
                 "dropped_when_read": dict(data.dropped), "rated_rows_unpaired": unpaired,
                 "train_rows": len(rows), "dev_pairs": len(dev_pairs), "tokenized": dict(renderer.counts)}
    lines = [f"- start: {start}; reference: {reference}",
             f"- data: {', '.join(card_data['files'])}: {len(rows)} training rows, {len(dev_pairs)} dev pairs; "
             f"formats {card_data['formats']}; dropped when read {card_data['dropped_when_read']}; tokenized "
             f"{card_data['tokenized']}"]
    if dev is not None:
        m, a = dev["mean_margin"], dev["accuracy"]
        lines.append(f"- held-out pairs ({dev['n']}): mean implicit reward margin {m['value']:.4f} "
                     f"[{m['ci_low']:.4f}, {m['ci_high']:.4f}], ranked right {a['value']:.4f} "
                     f"[{a['ci_low']:.4f}, {a['ci_high']:.4f}]")
    return RunCard(
        method=config.method, base_model={"name": name, "path": str(location)}, data=card_data, config=config,
        output=out, started=started, evaluate_with=evaluated_as(config.model, out, merged=bool(config.adapter)),
        result="" if dev is None else (
            f"held-out pairs ({dev['n']}): implicit reward margin {dev['mean_margin']['value']:.4f} "
            f"[{dev['mean_margin']['ci_low']:.4f}, {dev['mean_margin']['ci_high']:.4f}], ranked right "
            f"{dev['accuracy']['value']:.3f}"),
        trainable_parameters=trainable, total_parameters=total, steps=trainer.state.global_step,
        loss_history=history, fallback_loss=result.training_loss, train_s=train_s,
        tokens=sum(len(v) for row in rows for k, v in row.items() if k.endswith("_ids")) * config.epochs,
        extras={"start": start, "reference": reference, **({"dev": dev} if dev is not None else {})},
        lines=lines).write()


def kto_order(rows: list[dict[str, Any]], batch_size: int, seed: int) -> list[dict[str, Any]]:
    """The order KTO reads its rows in: seeded shuffle, then batches of distinct prompts where the data allows.

    TRL's KTO reads rows sequentially (``train_sampling_strategy='sequential'``, which it requires) and estimates the
    KL baseline of a batch from its completions rotated by one row: (x_i, y_{i-1}). Rows in file order would train
    on the file's first rows only, and a pair split into two rated rows puts its chosen and rejected answers side by
    side, so the "mismatched" KL completion would be the same prompt's other answer. Each batch is filled from the
    shuffled rows with the first row whose prompt it does not hold yet; a duplicate prompt goes in only when no
    other row is left."""
    one_process("align --method dpo / kto")
    import random

    pool = list(rows)
    random.Random(seed).shuffle(pool)
    ordered: list[dict[str, Any]] = []
    while pool:
        batch: list[dict[str, Any]] = []
        seen: set[tuple[int, ...]] = set()
        i = 0
        while len(batch) < batch_size and pool:
            if i >= len(pool):  # only rows of prompts already in the batch are left
                i = 0
                seen.clear()
            key = tuple(pool[i]["prompt_ids"])
            if key in seen:
                i += 1
                continue
            batch.append(pool.pop(i))
            seen.add(key)
        ordered += batch
    return ordered


def _pretokenized(trainer_class):
    """A TRL trainer that takes rows already tokenized by taskfit (``prompt_ids`` + answer ids) as they are."""

    class Pretokenized(trainer_class):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" not in dataset.column_names:
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if getattr(self, "calculate_KL", False):  # KTO's KL estimate: completions rotated by one in each batch
                def rotate(batch):
                    batch["KL_completion_ids"] = [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]
                    return batch

                dataset = dataset.map(rotate, batched=True, batch_size=args.per_device_train_batch_size)
            return dataset

    return Pretokenized


def _train(config: AlignConfig, model, tokenizer, rows: list[dict[str, Any]], out: Path):
    import datasets
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    own = dict(save_strategy="no", max_length=config.max_length, beta=config.kl_beta(),
               remove_unused_columns=False)
    if config.loss_type:
        own["loss_type"] = [config.loss_type] if config.method == "dpo" else config.loss_type
    if config.method == "dpo":
        args = training_arguments(config, out / "checkpoints", len(rows), DPOConfig, **own)
        trainer_class = _pretokenized(DPOTrainer)
    else:
        args = training_arguments(config, out / "checkpoints", len(rows), KTOConfig, **own,
                                  desirable_weight=config.desirable_weight,
                                  undesirable_weight=config.undesirable_weight)
        trainer_class = _pretokenized(KTOTrainer)
    trainer = trainer_class(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                            processing_class=tokenizer, peft_config=lora_config(config, "CAUSAL_LM"))
    started = time.perf_counter()
    result = trainer.train()
    return trainer, result, time.perf_counter() - started


def pair_logps(model, pairs: list[PairIds], budget: int = 512, batch_size: int = 8) -> tuple[list[float], list[float]]:
    """Each pair's summed answer log-probabilities after its prompt, (chosen, rejected): the prompt runs once for
    both answers.

    Pairs run longest first in groups of similar length (:func:`length_passes` over prompt + longer answer with
    ``budget`` padded tokens; ``batch_size`` pairs at a time with budget 0). A group's prompts run left-padded
    (positions counting real tokens), keeping their KV cache and the last position's logits (the first answer
    token's); the cache is repeated for the two answers of each pair, which continue it right-padded. The vocabulary
    projection runs only at answer positions, and a prompt - most of each row - once instead of twice."""
    import torch

    lengths = [max(len(p.chosen), len(p.rejected)) for p in pairs]
    if budget > 0:
        groups = length_passes(lengths, budget)
    else:
        order = sorted(range(len(pairs)), key=lambda i: (-lengths[i], i))
        groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    values = [[0.0, 0.0] for _ in pairs]
    model.eval()
    with torch.inference_mode():
        for group in groups:
            batch = [pairs[i] for i in group]
            prompts = [p.chosen[:p.prompt_length] for p in batch]
            answers = [a for p in batch for a in (p.chosen[p.prompt_length:], p.rejected[p.prompt_length:])]
            out, rest, tokens = after_prefixes(model, prompts, [answers[i:i + 2] for i in range(0, len(answers), 2)],
                                               logits_to_keep=1)
            first = out.logits[:, -1].float().log_softmax(-1).repeat_interleave(2, dim=0)  # [2 x rows, vocabulary]
            if rest is not None:  # the logits at answer positions predict the answers' next tokens
                logits = rest.logits[:, :-1].float()
                picked = logits.gather(-1, tokens[:, 1:, None]).squeeze(-1) - logits.logsumexp(-1)
            for row, answer in enumerate(answers):
                if answer:
                    rest = float(picked[row, :len(answer) - 1].sum()) if len(answer) > 1 else 0.0
                    values[group[row // 2]][row % 2] = float(first[row, answer[0]]) + rest
    return [v[0] for v in values], [v[1] for v in values]


def _dev_margins(model, pairs: list[PairIds], beta: float, budget: int) -> dict[str, Any]:
    """Implicit rewards on held-out pairs: β (log π − log π_ref) of each answer, the LoRA disabled for π_ref."""
    policy = dict(zip(("chosen", "rejected"), pair_logps(model, pairs, budget)))
    with model.disable_adapter():
        reference = dict(zip(("chosen", "rejected"), pair_logps(model, pairs, budget)))
    records = []
    for i in range(len(pairs)):
        chosen = beta * (policy["chosen"][i] - reference["chosen"][i])
        rejected = beta * (policy["rejected"][i] - reference["rejected"][i])
        records.append({"margin": chosen - rejected, "correct": float(chosen > rejected)})
    margin = mean_with_ci([r["margin"] for r in records])
    accuracy = mean_with_ci([r["correct"] for r in records])
    right = sum(r["margin"] > 0 for r in records)
    wrong = sum(r["margin"] < 0 for r in records)
    return {"n": len(records), "mean_margin": margin.as_dict(), "accuracy": accuracy.as_dict(),
            "ranked_right": right, "ranked_wrong": wrong, "sign_p": sign_test(right, wrong)}
