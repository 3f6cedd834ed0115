"""``taskfit align --method grpo | rloo``: reinforcement learning against a reward, with TRL's ``GRPOTrainer`` and
``RLOOTrainer`` — the RL step of RLHF (SFT -> reward model -> RL), critic-free.

Per optimizer step the policy samples ``num_generations`` answers to each of its prompts; each answer is scored by
``--reward`` — a reward model folder, the MiniLM judge, a length rule, or the task's own per-example metric
(``metric:exact_match`` read by the task type's parser: a verifiable reward), several with weights — and its
advantage is its reward against its group's (GRPO: the group mean, scaled by the group's spread; RLOO: the mean of
the others). The loss pushes up the likelihood of better-than-group answers, with a KL penalty ``beta`` to the start
policy (the new LoRA disabled: nothing is loaded twice). TRL 1.16 has no PPO (removed upstream,
huggingface/trl#7020); these are its maintained online trainers.

Prompts are taskfit's: a task's evaluation prompt (``--task``) or the prompts of preference files (``--data``),
rendered by the hf backend's renderer with the answer prefix, and given to TRL as text, which TRL tokenizes exactly as
taskfit does (checked on the first prompt; a tokenizer that would differ is refused). The answer a reward reads is the
text after the answer prefix, as RAFT's and evaluation's are. A share of the prompts (``dev_share``) is held out; the
start policy and the trained one answer ``eval_prompts`` of them ``eval_samples`` times each with the same seeds, and
the card gives the paired reward difference with its CI (the held-out measurement RAFT makes per iteration).

Per logged step the card keeps the mean reward and its spread within groups, the KL to the start policy, the mean
answer length and the share of answers cut at ``max_new_tokens``; ``rl.png`` plots them. Checkpoints every
``save_steps``; ``--resume`` continues from the last (:func:`taskfit.tuning.skeleton.stage_output`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from taskfit.adapters.apply import quiet_checkpointing_rename
from taskfit.api import Prompt
from taskfit.errors import UserError
from taskfit.models.catalog import resolve_model
from taskfit.prompting.preference_tokens import without_oldest_turn
from taskfit.prompting.tokens import Tokenizer
from taskfit.runs import write_json
from taskfit.settings import AlignConfig
from taskfit.tuning.raft import RaftPrompt, heldout_answers, heldout_change, prompts_and_reward
from taskfit.tuning.reward_functions import check_reward, combine
from taskfit.tuning.skeleton import (
    RunCard,
    begin,
    checkpoint_to_resume,
    count_parameters,
    evaluated_as,
    finished_card,
    heldout_result,
    load_start_policy,
    lora_config,
    loss_history,
    one_process,
    seed_and_threads,
    stage_output,
    training_arguments,
)

log = logging.getLogger(__name__)

STATE = "online_rl.json"  # the start policy's held-out answers, measured once
LOGGED = {"reward": "reward", "reward_std": "reward_std", "kl": "kl", "completions/mean_length": "mean_length",
          "completions/clipped_ratio": "clipped_ratio", "entropy": "entropy"}


def train_online(config: AlignConfig, resume: bool = False) -> dict[str, Any]:
    """The grpo / rloo stage: prompts -> rewards -> TRL trainer -> train -> save -> held-out answers -> card."""
    one_process("align --method grpo / rloo")
    started = time.perf_counter()
    if config.reward is None:
        raise UserError(f"{config.method} needs --reward: a reward model folder, length:shorter|longer or "
                        "metric:NAME (with --task)")
    check_reward(config.reward)  # before any data or model: a mistyped reward is refused at once
    out, continuing = stage_output(config, "align", resume=resume, resumable=True)
    if continuing and (card := finished_card(out)) is not None:
        log.info("%s is complete; nothing to resume", out)
        return card
    if continuing:
        checkpoint_to_resume(out)  # refused before anything loads when the run left no checkpoint
    seed_and_threads(config)
    train, held, parts = prompts_and_reward(config, keep_parts=True)
    reward = combine([(r, w) for _, r, w in parts])
    name, location = resolve_model(config.model)
    loaded = load_start_policy(location, config.adapter)
    tokenizer = loaded.tokenizer
    encode = Tokenizer(tokenizer, config.chat_template)
    rows, cut = fitted_rows(train, encode, config.max_length - config.max_new_tokens)
    if not rows:
        raise UserError(f"no training prompt fits --max-length {config.max_length} with --max-new-tokens "
                        f"{config.max_new_tokens}; raise --max-length")
    _check_tokenization(tokenizer, encode, rows[0]["prompt"])
    if not continuing:
        begin(out, config)
    state_path = out / STATE
    if state_path.is_file():
        state = json.loads(state_path.read_text(encoding="utf-8"))
    else:
        state = {"start": heldout_answers(config, location, str(config.adapter) if config.adapter else None, held,
                                          reward, out / "heldout_start")}
        write_json(state_path, state)

    trainer = _trainer(config, loaded.model, tokenizer, rows, parts, {p.key: p for p in train}, out)
    trainable, total = count_parameters(trainer.model)
    began = time.perf_counter()
    with quiet_checkpointing_rename():
        result = trainer.train(resume_from_checkpoint=True if continuing else None)
        train_s = time.perf_counter() - began
        model = trainer.model.merge_and_unload() if config.adapter else trainer.model
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    history = loss_history(trainer)
    rl = rl_history(trainer.state.log_history)
    plot_rl(rl, out / "rl.png", f"{config.method} with {config.reward}")
    # the trained policy: the new LoRA on the base (or, from an SFT adapter, the merged model)
    policy_location, policy = (str(out), None) if config.adapter else (location, str(out))
    end = heldout_answers(config, policy_location, policy, held, reward, out / "heldout_end")
    card = _card(config, name, location, out, started, state["start"], end, trainable, total, trainer, history, rl,
                 result, train_s, len(rows), len(held))
    card.data["prompts_fitted"] = cut
    return card.write()


def fitted_rows(prompts: list[RaftPrompt], encode: Tokenizer, limit: int) -> tuple[list[dict[str, Any]], dict]:
    """Each prompt rendered as TRL will read it, cut by whole turns from the left (the system prompt and the last
    turn kept) until it leaves ``max_new_tokens`` of ``max_length`` for the answer; prompts that never fit are left
    out. The rewards still read each prompt whole (by its key)."""
    rows, counts = [], {"cut by whole turns": 0, "dropped: too long with the last turn alone": 0}
    for p in prompts:
        turns: list | None = list(p.prompt.messages)
        text = encode.render(p.prompt)
        while len(encode.encode(text)) > limit:
            turns = without_oldest_turn(turns)
            if turns is None:
                break
            text = encode.render(Prompt(tuple(turns), p.prompt.answer_prefix))
        if turns is None:
            counts["dropped: too long with the last turn alone"] += 1
            continue
        counts["cut by whole turns"] += len(turns) < len(p.prompt.messages)
        rows.append({"prompt": text, "key": p.key})
    return rows, counts


def _check_tokenization(tokenizer, encode: Tokenizer, rendered: str) -> None:
    """TRL tokenizes a text prompt with the tokenizer's defaults; refuse a tokenizer where that differs from
    taskfit's renderer (a second BOS, say), so the policy never trains on a prompt evaluation does not show."""
    theirs = tokenizer(text=[rendered])["input_ids"][0]
    ours = encode.encode(rendered)
    if list(theirs) != list(ours):
        raise UserError("this model's tokenizer adds tokens TRL would keep and taskfit's renderer does not (e.g. a "
                        f"second BOS: {list(theirs)[:4]} vs {list(ours)[:4]}); grpo / rloo cannot train it as "
                        "evaluated")


def _trainer(config: AlignConfig, model, tokenizer, rows: list[dict[str, Any]], parts, prompts: dict[str, RaftPrompt],
             out: Path):
    import datasets
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    own: dict[str, Any] = dict(
        num_generations=config.num_generations, max_completion_length=config.max_new_tokens,
        temperature=config.temperature, top_p=config.top_p, beta=config.kl_beta(), save_steps=config.save_steps,
        save_total_limit=3, remove_unused_columns=False, reward_weights=[w for _, _, w in parts], log_completions=False)
    if config.loss_type:
        own["loss_type"] = config.loss_type
    if config.vllm_server:
        own.update(use_vllm=True, vllm_mode="server", vllm_server_base_url=config.vllm_server)
    elif config.generation == "continuous":
        own["use_transformers_continuous_batching"] = True
    grpo = config.method == "grpo"
    args = training_arguments(config, out, len(rows) * config.num_generations, GRPOConfig if grpo else RLOOConfig,
                              **own)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    trainer_class = GRPOTrainer if grpo else RLOOTrainer
    with quiet_checkpointing_rename():
        return trainer_class(model=model, reward_funcs=[trl_reward(n, r, prompts) for n, r, _ in parts], args=args,
                             train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer,
                             peft_config=lora_config(config, "CAUSAL_LM"))


def trl_reward(name: str, reward, by_key: dict[str, RaftPrompt]):
    """A taskfit reward as a TRL reward function: TRL passes (by keyword) the prompts, the generated texts and the
    rows' ``key`` column."""
    def taskfit_reward(prompts, completions, key, **_):
        values = reward.score([by_key[k].prompt.messages for k in key], list(completions))
        return [None if v != v else float(v) for v in values]  # None: this reward cannot score the answer

    # TRL logs each reward under its function's name: a rule or metric by its spec, a reward model by its folder
    shown = name if ":" in name else Path(name).name
    taskfit_reward.__name__ = shown.replace(":", "_").replace("/", "_")
    return taskfit_reward


def rl_history(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per logged step: mean reward, its spread within groups, KL to the start policy, mean answer length, the share
    of answers cut at max_new_tokens, and each reward's own mean."""
    rows = []
    for entry in log_history:
        if "reward" not in entry:
            continue
        row = {"step": entry.get("step")} | {short: entry[key] for key, short in LOGGED.items() if key in entry}
        row |= {key: value for key, value in entry.items() if key.startswith("rewards/") and key.endswith("/mean")}
        rows.append(row)
    return rows


def plot_rl(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 5.5), sharex=True)
    for ax, (key, label) in zip(axes.flat, (("reward", "mean reward"), ("kl", "KL to the start policy"),
                                            ("mean_length", "answer tokens"), ("clipped_ratio", "share cut"))):
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3)
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("optimizer step")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _card(config: AlignConfig, name: str, location: str, out: Path, started: float, start: dict[str, Any],
          end: dict[str, Any], trainable: int, total: int, trainer, history, rl, result, train_s: float,
          n_train: int, n_held: int) -> RunCard:
    change, win = heldout_change(out / "heldout_start", out / "heldout_end")
    begun = str(config.adapter) if config.adapter else "the base model (a new LoRA)"
    lines = [f"- {config.method} with reward {config.reward}, {config.num_generations} answers per prompt, beta "
             f"{config.kl_beta():g}; start: {begun}",
             f"- prompts: {n_train} training, {n_held} held out"]
    if rl:
        first, last = rl[0], rl[-1]
        lines.append(f"- logged reward {first['reward']:.4f} -> {last['reward']:.4f}; KL {last.get('kl', 0):.4f}; "
                     f"answer tokens {first.get('mean_length', 0):.1f} -> {last.get('mean_length', 0):.1f}; cut "
                     f"{last.get('clipped_ratio', 0):.0%}")
    if change:
        lines.append(f"- held-out prompts, trained − start: {change['value']:+.4f} [{change['ci_low']:+.4f}, "
                     f"{change['ci_high']:+.4f}], win rate {win:.3f}; start {start['mean_reward']['value']:.4f}, "
                     f"end {end['mean_reward']['value']:.4f}; empty {end['empty_rate']:.1%}, distinct-2 "
                     f"{end['distinct_2']:.3f}")
    return RunCard(
        method=config.method, base_model={"name": name, "path": str(location)},
        data={"task": config.task, "files": [str(f) for f in config.data], "train_prompts": n_train,
              "heldout_prompts": n_held},
        config=config, output=out, started=started,
        evaluate_with=evaluated_as(config.model, out, merged=bool(config.adapter)), result=heldout_result(change, win),
        trainable_parameters=trainable, total_parameters=total, steps=trainer.state.global_step,
        loss_history=history, fallback_loss=result.training_loss, train_s=train_s,
        tokens=trainer.state.num_input_tokens_seen,
        extras={"start": begun, "reward": config.reward, "rl_history": rl, "heldout_start": start,
                "heldout_end": end, "heldout_end_minus_start": change, "heldout_win_rate": win},
        lines=lines)
