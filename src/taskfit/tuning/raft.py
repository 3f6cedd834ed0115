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
to ``iter_<t>/adapter``; the held-out answers to ``iter_<t>/heldout.jsonl``. ``--resume`` (into the same folder,
with the same settings: :func:`taskfit.tuning.skeleton.stage_output`) continues after the last finished iteration,
and gives what an uninterrupted run gives: everything an iteration uses is derived from the seed and the previous
iteration's files.
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
from pathlib import Path
from typing import Any

from taskfit.adapters.apply import quiet_checkpointing_rename
from taskfit.api import GenerateRequest, Prompt
from taskfit.data.preferences import read_preferences, split_by_prompt
from taskfit.data.sampling import sample_indices, sample_seed
from taskfit.errors import UserError
from taskfit.metrics.registry import mean_with_ci
from taskfit.metrics.text import distinct_n
from taskfit.models.catalog import resolve_model
from taskfit.models.hf import HFBackend
from taskfit.models.loading import load_causal_lm
from taskfit.prompting.prompts import task_prompt
from taskfit.prompting.tokens import Pair, Tokenizer
from taskfit.runs import write_json
from taskfit.settings import AlignConfig
from taskfit.tasks.task import load_task
from taskfit.tuning.reward_functions import RewardFunction, check_reward, combine, load_reward, reward_specs
from taskfit.tuning.sft import Trainable, sft_trainer, tokens_per_step
from taskfit.tuning.skeleton import (
    RunCard,
    begin,
    count_parameters,
    evaluated_as,
    heldout_result,
    lora_config,
    loss_history,
    one_process,
    plot_loss,
    seed_and_threads,
    stage_output,
    training_arguments,
)

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


def reward_parts(spec: str, task, rows: Sequence[RaftPrompt]) -> list[tuple[str, RewardFunction, float]]:
    """The rewards of ``--reward`` (name, reward, weight): task metrics scored against ``rows``' examples, reward
    model folders and length rules loaded."""
    parts = []
    for name, weight in reward_specs(spec):
        if name.startswith("metric:"):
            if task is None:
                raise UserError(f"--reward {name} scores answers against a task's gold answers; give --task")
            examples = {r.prompt.messages: r.example for r in rows}
            parts.append((name, MetricReward(name.split(":", 1)[1], task, examples), weight))
        else:
            parts.append((name, load_reward(name), weight))
    return parts


def prompts_and_reward(config: AlignConfig, keep_parts: bool = False):
    """What an online stage (RAFT, GRPO, RLOO) samples and scores: the training prompts, the held-out ones (at most
    ``eval_prompts``) and the reward — one function, or its parts (name, reward, weight) with ``keep_parts``."""
    task = load_task(config.task) if config.task else None
    train, held = raft_prompts(config, task)
    if not train or not held:
        raise UserError(f"{config.method} needs training and held-out prompts ({len(train)} and {len(held)}); give "
                        "more data or another --dev-share")
    held = held[:config.eval_prompts]
    parts = reward_parts(config.reward, task, train + held)
    return train, held, (parts if keep_parts else combine([(reward, weight) for _, reward, weight in parts]))


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


def train_raft(config: AlignConfig, resume: bool = False) -> dict[str, Any]:
    started = time.perf_counter()
    if config.reward is None:
        raise UserError("RAFT needs --reward: a reward model folder or metric:NAME (with --task)")
    check_reward(config.reward)  # before any data or model: a mistyped reward is refused at once
    out, continuing = stage_output(config, "align", resume=resume, resumable=True)
    state_path = out / STATE
    seed_and_threads(config)
    train, held, reward = prompts_and_reward(config)
    name, location = resolve_model(config.model)
    if not continuing:
        begin(out, config)
    state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {"iterations": []}
    policy = str(config.adapter) if config.adapter else None
    if not state["iterations"]:
        state["start"] = heldout_answers(config, location, policy, held, reward, out / "iter_0")
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
        evaluation = heldout_answers(config, location, policy, held, reward, folder)
        state["iterations"].append({"iteration": t, "prompts": len(chosen), "candidates": len(candidates),
                                    "selected": len(selected), "discarded": _counts(candidates),
                                    "mean_selected_reward": sum(c["reward"] for c in selected) / len(selected),
                                    **train_info, "heldout": evaluation})
        write_json(state_path, state)
    return _card(config, state, name, location, out, held, started).write()


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
    one_process("align --method raft")
    import torch
    from peft import PeftModel, get_peft_model

    torch.manual_seed(config.seed + t)
    loaded = load_causal_lm(location)
    with quiet_checkpointing_rename():
        if policy:
            model = PeftModel.from_pretrained(loaded.model, policy, is_trainable=True)
        else:
            model = get_peft_model(loaded.model, lora_config(config, "CAUSAL_LM"))
    encode = Tokenizer(loaded.tokenizer, config.chat_template)
    tokenized = [encode(Pair(prompts[c["prompt"]].prompt, c["text"].strip()), config.max_length) for c in selected]
    trainable, total = count_parameters(model)
    method = Trainable(model, model.peft_config["default"], None, trainable, total)
    args = training_arguments(config, folder / "checkpoints", len(tokenized), seed=config.seed + t,
                              data_seed=config.seed + t, logging_steps=1, save_strategy="no",
                              remove_unused_columns=False)
    with quiet_checkpointing_rename():
        trainer = sft_trainer(args, method, tokenized, loaded.tokenizer, config.micro_batch_tokens)
        began = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - began
        model.save_pretrained(folder / "adapter")
    loaded.tokenizer.save_pretrained(folder / "adapter")
    return {"train_s": round(train_s, 2), "steps": trainer.state.global_step, "loss_history": loss_history(trainer),
            "tokens": round(trainer.state.global_step * tokens_per_step(tokenized, config)),
            "trainable_parameters": trainable, "total_parameters": total}


def heldout_answers(config: AlignConfig, location: str, policy: str | None, held: list[RaftPrompt], reward,
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


def heldout_change(before: Path, after: Path) -> tuple[dict[str, Any] | None, float | None]:
    """The paired change of the mean reward per held-out prompt between two :func:`heldout_answers` folders (mean
    with its CI over prompts) and the win rate (a tie counts half)."""
    def read(folder: Path) -> dict[str, float]:
        return prompt_means([json.loads(line) for line in (folder / "heldout.jsonl").read_text().splitlines()])

    start, end = read(before), read(after)
    diffs = [end[k] - v for k, v in start.items() if k in end]
    if not diffs:
        return None, None
    return mean_with_ci(diffs).as_dict(), (sum(d > 0 for d in diffs) + 0.5 * sum(d == 0 for d in diffs)) / len(diffs)


def _card(config: AlignConfig, state: dict[str, Any], name: str, location: str, out: Path, held: list[RaftPrompt],
          started: float) -> RunCard:
    iterations = state["iterations"]
    change, win = heldout_change(out / "iter_0", out / f"iter_{len(iterations)}")
    history = [{"step": i + 1, "loss": h["loss"]}
               for i, h in enumerate(h for it in iterations for h in it.get("loss_history", []))]
    if history:
        plot_loss(history, out / "loss.png", "RAFT fine-tuning loss (steps of every iteration)")
    begun = str(config.adapter) if config.adapter else "the base model (a new LoRA from iteration 1)"
    lines = [f"- reward: {config.reward}; start: {begun}",
             f"- held-out prompts: {len(held)}; start mean reward {state['start']['mean_reward']['value']:.4f}"]
    for it in iterations:
        h = it["heldout"]
        lines.append(f"- iteration {it['iteration']}: {it['selected']} of {it['candidates']} answers kept (discarded "
                     f"{it['discarded']}), mean kept reward {it['mean_selected_reward']:.4f}; held-out mean reward "
                     f"{h['mean_reward']['value']:.4f}, distinct-2 {h['distinct_2']:.3f}, empty {h['empty_rate']:.1%}")
    if change:
        lines.append(f"- end − start on held-out prompts: {change['value']:+.4f} [{change['ci_low']:+.4f}, "
                     f"{change['ci_high']:+.4f}], win rate {win:.3f}")
    last = iterations[-1] if iterations else {}
    return RunCard(
        method="raft", base_model={"name": name, "path": str(location)},
        data={"task": config.task, "files": [str(f) for f in config.data], "heldout_prompts": len(held)},
        config=config, output=out, started=started,
        evaluate_with=evaluated_as(config.model, out / f"iter_{len(iterations)}" / "adapter", merged=False),
        result=heldout_result(change, win),
        trainable_parameters=last.get("trainable_parameters", 0), total_parameters=last.get("total_parameters", 0),
        steps=sum(it["steps"] for it in iterations), loss_history=history,
        train_s=sum(it["train_s"] for it in iterations),
        tokens=(sum(it["tokens"] for it in iterations) if all("tokens" in it for it in iterations) else None),
        extras={"start": begun, "reward": config.reward, "iterations": iterations, "heldout_start": state["start"],
                "heldout_end_minus_start": change, "heldout_win_rate": win},
        lines=lines)
