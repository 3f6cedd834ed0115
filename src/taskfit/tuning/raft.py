"""``taskfit align --method raft``: Reward rAnked FineTuning (Dong et al. 2023) on today's stack.

Per iteration t: take ``prompts`` (b) training prompts (a seeded draw per iteration), sample ``samples`` (K)
answers each from the current policy (the hf backend with the policy's adapter; each answer seeded by (seed, t,
prompt, k), so a sample's text does not depend on the batch), score them, discard empty and degenerate answers,
keep the best answer per prompt (``selection: best``) or the best b overall (``global``, the paper's Algorithm 1),
and fine-tune the same LoRA adapter on them with ``tune``'s answer-only loss (``epochs`` passes). With a verifiable
reward, ``min_reward`` keeps only answers that reach it (1.0: only right answers, rejection-sampling fine-tuning as in
STaR, Zelikman et al. 2022), so a prompt none of whose samples is right teaches nothing rather than a wrong answer.
Then the new policy answers the held-out prompts (the same seeds every iteration, so rewards pair up across
iterations).

The reward is a reward model folder (``taskfit reward train``) or one of the task's own per-example metrics
(``metric:accuracy`` for GSM8K's number answers, ``metric:rouge_l`` / ``metric:mrr`` for KBQA, ``metric:exact_match``
/ ``metric:f1`` for SQuAD) on its prompts (``--task``): the answer is read by the task type's parser and scored as an
evaluation would score it, which is RAFT with a verifiable reward on the user's own task.

Every candidate with its seed, reward and fate is written to ``iter_<t>/candidates.jsonl``; each iteration's adapter
to ``iter_<t>/adapter``; the held-out answers to ``iter_<t>/heldout.jsonl``. ``--resume`` (or rerunning into the same
folder with the same settings) continues after the last finished iteration, and gives what an uninterrupted run
gives: everything an iteration uses is derived from the seed and the previous iteration's files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from taskfit.adapters.apply import quiet_checkpointing_rename
from taskfit.api import GenerateRequest, Prompt
from taskfit.data.preferences import read_preferences, split_by_prompt
from taskfit.data.sampling import sample_indices
from taskfit.errors import UserError
from taskfit.metrics.registry import mean_with_ci
from taskfit.models.catalog import resolve_model
from taskfit.models.hf import HFBackend
from taskfit.models.loading import load_causal_lm
from taskfit.paths import output_folder
from taskfit.prompting.prompts import task_prompt
from taskfit.prompting.tokens import Pair, Tokenizer
from taskfit.runs import peak_rss_mib, write_json, write_run_card
from taskfit.settings import AlignConfig, TuneConfig
from taskfit.tasks.task import load_task
from taskfit.tuning.common import LORA_TARGETS, plot_loss
from taskfit.tuning.rewards import load_reward
from taskfit.tuning.sft import Method, _trainer

log = logging.getLogger(__name__)
STATE = "raft.json"


@dataclass(frozen=True)
class RaftPrompt:
    key: str  # stable id: a hash of the prompt
    prompt: Prompt
    example: Any = None  # the task's example (gold answer) when prompts come from a task


METRIC_FIELDS = {"accuracy": "correct", "exact_match": "em", "f1": "f1", "rouge_l": "rouge_l", "mrr": "rr",
                 "map": "ap"}


class MetricReward:
    """A task's own per-example metric as the reward: the answer is read by the task type's parser (a number for
    GSM8K, a span for SQuAD, an entity for KBQA) and scored against the example's gold answer, exactly as an
    evaluation of that task would score it."""

    def __init__(self, metric: str, task, examples: dict[tuple, Any]):
        if metric not in METRIC_FIELDS or metric not in task.config.metrics:
            usable = [m for m in task.config.metrics if m in METRIC_FIELDS]
            raise UserError(f"--reward metric:{metric}: task {task.name} scores per example with "
                            f"{', '.join('metric:' + m for m in usable) or 'no per-example metric'}")
        self.field, self.task, self.examples, self.name = METRIC_FIELDS[metric], task, examples, f"metric:{metric}"

    def score(self, prompts: Sequence[tuple], answers: Sequence[str]) -> list[float]:
        values = []
        for prompt, answer in zip(prompts, answers):
            example = self.examples[prompt]
            prediction, _ = self.task.space.parse(answer, example)
            values.append(float(self.task.space.score(example, prediction).get(self.field) or 0.0))
        return values

    def describe(self) -> dict[str, Any]:
        return {"kind": "task metric", "metric": self.name, "task": self.task.name}


def _key(prompt: Prompt) -> str:
    blob = json.dumps([[m.role, m.content] for m in prompt.messages] + [prompt.answer_prefix], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def raft_prompts(config: AlignConfig, task=None) -> tuple[list[RaftPrompt], list[RaftPrompt]]:
    """Training and held-out prompts: from a task's split (with its examples) or from preference files."""
    if task is not None:
        examples = task.examples(config.split, config.data_dir)
        task.prepare_answers(examples, config.split, config.data_dir, None)  # KBQA: the facts each prompt shows
        rows = [RaftPrompt("", task_prompt(task, ex, "generate"), ex) for ex in examples]
    else:
        pairs, _ = read_preferences(config.data).as_pairs()
        rows = [RaftPrompt("", Prompt(p.prompt)) for p in pairs]
    rows = list({_key(r.prompt): RaftPrompt(_key(r.prompt), r.prompt, r.example) for r in rows}.values())
    return split_by_prompt(rows, config.limit, config.dev_share, config.seed)


def sample_seed(seed: int, iteration: int, key: str, k: int) -> int:
    return int(hashlib.sha256(f"{seed}:{iteration}:{key}:{k}".encode()).hexdigest()[:8], 16)


_WORD = re.compile(r"\w", re.UNICODE)


def degenerate(text: str) -> str | None:
    """Why an answer may not be learned from (empty, no word characters, a word repeated over and over), or None."""
    stripped = text.strip()
    if not stripped:
        return "empty"
    if not _WORD.search(stripped):
        return "no words"
    words = stripped.split()
    if len(words) >= 8 and len(set(words)) / len(words) < 0.25:
        return "repetitive"
    return None


def prompt_means(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Each prompt's mean reward over its scored answers (NaN rewards left out; a prompt with none is left out)."""
    values: dict[str, list[float]] = {}
    for r in records:
        if not math.isnan(r["reward"]):
            values.setdefault(r["prompt"], []).append(r["reward"])
    return {k: sum(v) / len(v) for k, v in values.items()}


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the answers (Li et al. 2016), on whitespace words."""
    grams = [tuple(words[i:i + n]) for t in texts for words in [t.split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def train_raft(config: AlignConfig, resume: bool = False) -> dict[str, Any]:
    import torch

    started = time.perf_counter()
    if config.reward is None:
        raise UserError("RAFT needs --reward: a reward model folder or metric:NAME (with --task)")
    out = output_folder(config.output or f"runs/align/raft-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}")
    settings = json.loads(config.model_dump_json(exclude={"output", "threads", "progress", "report_to"}))
    state_path = out / STATE
    if out.exists() and any(out.iterdir()):
        previous = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else None
        if previous is None or previous.get("settings") != settings:
            raise UserError(f"{out} holds another run; choose another --output (a RAFT run resumes only into its "
                            "own folder with the same settings)")
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    task = load_task(config.task) if config.task else None
    train, held = raft_prompts(config, task)
    if not train or not held:
        raise UserError(f"RAFT needs training and held-out prompts ({len(train)} and {len(held)}); give more data or "
                        "another --dev-share")
    held = held[:config.eval_prompts]
    if config.reward.startswith("metric:"):
        if task is None:
            raise UserError("--reward metric:NAME scores answers against a task's gold answers; give --task")
        examples = {r.prompt.messages: r.example for r in train + held}
        reward = MetricReward(config.reward.split(":", 1)[1], task, examples)
    else:
        reward = load_reward(config.reward)
    name, location = resolve_model(config.model)
    state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {
        "settings": settings, "iterations": []}
    policy = str(config.adapter) if config.adapter else None
    if not state["iterations"]:
        state["start"] = _heldout(config, location, policy, held, reward, out / "iter_0")
        write_json(state_path, state)
    for t in range(1, config.iterations + 1):
        folder = out / f"iter_{t}"
        if t <= len(state["iterations"]):
            policy = str(folder / "adapter")
            continue
        log.info("RAFT iteration %d of %d", t, config.iterations)
        chosen = [train[i] for i in sample_indices(len(train), min(config.prompts, len(train)), config.seed + t)]
        candidates = _sample(config, location, policy, chosen, reward, t)
        selected = _select(candidates, config)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "candidates.jsonl").write_text(
            "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in candidates), encoding="utf-8")
        if not selected:
            raise UserError(f"iteration {t}: every sampled answer was empty, degenerate or below --min-reward; "
                            "nothing to learn from (sample more: --samples, --prompts; or lower --min-reward)")
        train_info = _finetune(config, location, policy, selected, {r.key: r for r in chosen}, folder, t)
        policy = str(folder / "adapter")
        evaluation = _heldout(config, location, policy, held, reward, folder)
        state["iterations"].append({"iteration": t, "prompts": len(chosen), "candidates": len(candidates),
                                    "selected": len(selected), "discarded": _counts(candidates),
                                    "mean_selected_reward": sum(c["reward"] for c in selected) / len(selected),
                                    **train_info, "heldout": evaluation})
        write_json(state_path, state)
    card = _card(config, state, name, location, out, held, time.perf_counter() - started)
    write_run_card(out, card, _markdown(card))
    return card


def _sample(config: AlignConfig, location: str, policy: str | None, prompts: list[RaftPrompt], reward,
            t: int) -> list[dict[str, Any]]:
    backend = HFBackend(location, adapter=policy, batch_size=config.batch_size * 2, threads=config.threads,
                        progress=config.progress)
    requests = [GenerateRequest(p.prompt, max_tokens=config.max_new_tokens, temperature=config.temperature,
                                top_p=config.top_p, seed=sample_seed(config.seed, t, p.key, k))
                for p in prompts for k in range(config.samples)]
    texts = [r.text for r in backend.generate(requests)]
    owners = [p for p in prompts for _ in range(config.samples)]
    rewards = reward.score([p.prompt.messages for p in owners], texts)
    out = []
    for i, (p, text, value) in enumerate(zip(owners, texts, rewards)):
        why = degenerate(text) or ("unscored" if math.isnan(value) else None) or (
            "below min_reward" if config.min_reward is not None and value < config.min_reward else None)
        out.append({"prompt": p.key, "sample": i % config.samples, "seed": requests[i].seed, "text": text,
                    "reward": value, "discarded": why, "kept": False})
    return out


def _select(candidates: list[dict[str, Any]], config: AlignConfig) -> list[dict[str, Any]]:
    usable = [c for c in candidates if c["discarded"] is None]
    if config.selection == "global":  # Algorithm 1: the best b of all b x K answers
        chosen = sorted(usable, key=lambda c: (-c["reward"], c["prompt"], c["sample"]))[:config.prompts]
    else:
        best: dict[str, dict[str, Any]] = {}
        for c in usable:
            if c["prompt"] not in best or c["reward"] > best[c["prompt"]]["reward"]:
                best[c["prompt"]] = c
        chosen = list(best.values())
    for c in chosen:
        c["kept"] = True
    return chosen


def _counts(candidates: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in candidates:
        if c["discarded"]:
            counts[c["discarded"]] = counts.get(c["discarded"], 0) + 1
    return counts


def _finetune(config: AlignConfig, location: str, policy: str | None, selected: list[dict[str, Any]],
              prompts: dict[str, RaftPrompt], folder: Path, t: int) -> dict[str, Any]:
    """``config.epochs`` passes of answer-only SFT over the selected answers, continuing the policy's adapter (a new
    LoRA at t=1 without a start adapter)."""
    import torch
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model

    torch.manual_seed(config.seed + t)
    loaded = load_causal_lm(location)
    with quiet_checkpointing_rename():
        if policy:
            model = PeftModel.from_pretrained(loaded.model, policy, is_trainable=True)
        else:
            model = get_peft_model(loaded.model, LoraConfig(
                task_type=TaskType.CAUSAL_LM, r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                target_modules=config.target_modules or LORA_TARGETS))
    encode = Tokenizer(loaded.tokenizer, config.chat_template)
    tokenized = [encode(Pair(prompts[c["prompt"]].prompt, c["text"].strip()), config.max_length) for c in selected]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    method = Method(model, model.peft_config["default"], None, trainable, total)
    tune = TuneConfig(method="lora", model=config.model, epochs=config.epochs, batch_size=config.batch_size,
                      gradient_accumulation=config.gradient_accumulation, lr=config.learning_rate(),
                      weight_decay=config.weight_decay, warmup_ratio=config.warmup_ratio, max_length=config.max_length,
                      seed=config.seed + t, save_steps=10**9, logging_steps=1, report_to=config.report_to,
                      threads=config.threads, progress=config.progress, device=config.device, output=folder)
    with quiet_checkpointing_rename():
        trainer = _trainer(tune, method, tokenized, loaded.tokenizer, folder / "checkpoints")
        began = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - began
        model.save_pretrained(folder / "adapter")
    loaded.tokenizer.save_pretrained(folder / "adapter")
    history = [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]
    return {"train_s": round(train_s, 2), "steps": trainer.state.global_step, "loss_history": history,
            "trainable_parameters": trainable}


def _heldout(config: AlignConfig, location: str, policy: str | None, held: list[RaftPrompt], reward,
             folder: Path) -> dict[str, Any]:
    """The policy's ``eval_samples`` answers to each held-out prompt (the same seeds at every iteration) and their
    rewards; the mean reward and its CI are over prompts, each prompt's reward the mean of its answers'."""
    backend = HFBackend(location, adapter=policy, batch_size=config.batch_size * 2, threads=config.threads,
                        progress=config.progress)
    owners = [p for p in held for _ in range(config.eval_samples)]
    requests = [GenerateRequest(p.prompt, max_tokens=config.max_new_tokens, temperature=config.temperature,
                                top_p=config.top_p, seed=sample_seed(config.seed, 0, p.key, k))
                for p in held for k in range(config.eval_samples)]
    texts = [r.text for r in backend.generate(requests)]
    rewards = reward.score([p.prompt.messages for p in owners], texts)
    folder.mkdir(parents=True, exist_ok=True)
    records = [{"prompt": p.key, "sample": i % config.eval_samples, "text": t, "reward": r}
               for i, (p, t, r) in enumerate(zip(owners, texts, rewards))]
    (folder / "heldout.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return {"mean_reward": mean_with_ci(list(prompt_means(records).values())).as_dict(),
            "distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2),
            "empty_rate": sum(not t.strip() for t in texts) / len(texts),
            "mean_words": sum(len(t.split()) for t in texts) / len(texts)}


def _card(config: AlignConfig, state: dict[str, Any], name: str, location: str, out: Path, held: list[RaftPrompt],
          seconds: float) -> dict[str, Any]:
    def read(folder: Path) -> dict[str, float]:
        return prompt_means([json.loads(line) for line in (folder / "heldout.jsonl").read_text().splitlines()])

    start = read(out / "iter_0")
    end = read(out / f"iter_{len(state['iterations'])}")
    diffs = [end[k] - v for k, v in start.items() if k in end]
    history = [h for it in state["iterations"] for h in it.get("loss_history", [])]
    if history:
        plot_loss([{"step": i + 1, "loss": h["loss"]} for i, h in enumerate(history)], out / "loss.png",
                  "RAFT fine-tuning loss (steps of every iteration)")
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "method": "raft",
        "base_model": {"name": name, "path": str(location)},
        "start": str(config.adapter) if config.adapter else "the base model (a new LoRA from iteration 1)",
        "reward": config.reward, "config": json.loads(config.model_dump_json()),
        "data": {"task": config.task, "files": [str(f) for f in config.data], "heldout_prompts": len(held)},
        "iterations": state["iterations"], "heldout_start": state["start"],
        "heldout_end_minus_start": mean_with_ci(diffs).as_dict() if diffs else None,
        "heldout_win_rate": (sum(d > 0 for d in diffs) + 0.5 * sum(d == 0 for d in diffs)) / len(diffs)
        if diffs else None,
        "trainable_parameters": state["iterations"][-1]["trainable_parameters"] if state["iterations"] else 0,
        "train_s": round(sum(it["train_s"] for it in state["iterations"]), 2),
        "loss_history": [{"step": i + 1, "loss": h["loss"]} for i, h in enumerate(history)],
        "total_s": round(seconds, 2), "peak_rss_mib": peak_rss_mib(), "output": str(out),
        "evaluate_with": f"--adapter {out}/iter_{len(state['iterations'])}/adapter",
    }


def _markdown(card: dict[str, Any]) -> str:
    lines = [f"# Run card: RAFT with {card['reward']}", "", f"- start: {card['start']}",
             f"- held-out prompts: {card['data']['heldout_prompts']}; start mean reward "
             f"{card['heldout_start']['mean_reward']['value']:.4f}"]
    for it in card["iterations"]:
        h = it["heldout"]
        lines.append(f"- iteration {it['iteration']}: {it['selected']} of {it['candidates']} answers kept (discarded "
                     f"{it['discarded']}), mean kept reward {it['mean_selected_reward']:.4f}; held-out mean reward "
                     f"{h['mean_reward']['value']:.4f}, distinct-2 {h['distinct_2']:.3f}, empty {h['empty_rate']:.1%}")
    if card["heldout_end_minus_start"]:
        d = card["heldout_end_minus_start"]
        lines.append(f"- end − start on held-out prompts: {d['value']:+.4f} [{d['ci_low']:+.4f}, "
                     f"{d['ci_high']:+.4f}], win rate {card['heldout_win_rate']:.3f}")
    lines += [f"- evaluate with `taskfit eval {card['evaluate_with']}`", "", "```json",
              json.dumps(card["config"], indent=2), "```", ""]
    return "\n".join(lines)
