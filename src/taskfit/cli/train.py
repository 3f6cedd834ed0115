"""The commands that train: ``tune`` (SFT and the specialist head), ``synth`` (training rows from seed rows),
``reward`` (train, evaluate or apply a reward model) and ``align`` (DPO, KTO, RAFT, GRPO, RLOO; ``align eval``).
Each stage says what it did in its own summary line (:func:`taskfit.tuning.skeleton.summary`)."""

from __future__ import annotations

import argparse
import sys

from taskfit.cli.flags import add_flags, command, settings_from, settings_of
from taskfit.settings import (
    ALIGN_SECTIONS,
    REWARD_SECTIONS,
    SYNTH_SECTIONS,
    TUNE_SECTIONS,
    RewardEvalSettings,
    RewardScoreSettings,
    load_align_config,
    load_reward_config,
    load_synth_config,
    load_tune_config,
)


def register(sub) -> None:
    tu = command(sub, "tune", "fine-tune a model on a task or a training file (LoRA, IA3, prefix, prompt, "
                 "bottleneck adapters, full) or train a specialist encoder + head", tune, config="tune")
    tu.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    add_flags(tu, TUNE_SECTIONS)
    sy = command(sub, "synth", "write new rows of a task with the model from a few seed rows (Self-Instruct), "
                 "filtered; train on them with `taskfit tune --task T --train-file FILE`", synth, config="synth")
    sy.add_argument("--resume", action="store_true", help="continue a cut run from its OUT.raw.jsonl")
    add_flags(sy, SYNTH_SECTIONS)
    register_reward(sub)
    al = command(sub, "align", "alignment on the base model or an SFT adapter: preference optimisation (DPO, KTO), "
                 "RAFT, or reinforcement learning against a reward (GRPO, RLOO)", align, config="align")
    al.add_argument("action", nargs="?", choices=["train", "eval"], default="train",
                    help="train (default) a policy, or eval: compare policies on held-out prompts")
    al.add_argument("--resume", action="store_true", help="raft: continue after the last finished iteration; grpo / "
                    "rloo: from the last checkpoint")
    al.add_argument("--policies", help="eval: comma-separated policies, the start first: base, adapter folders, "
                    "model folders")
    al.add_argument("--judge", help="eval: a second reward (e.g. a MiniLM reward folder) reported beside --reward")
    add_flags(al, ALIGN_SECTIONS)


def register_reward(sub) -> None:
    rw = command(sub, "reward", "reward models: train one from preference pairs, evaluate or apply one")
    rw_sub = rw.add_subparsers(dest="reward_command", required=True)
    add_flags(command(rw_sub, "train", "train a reward model (LoRA / full / top layers on the LM, or MiniLM)",
                      reward_train, config="reward"), REWARD_SECTIONS)
    add_flags(command(rw_sub, "eval", "pairwise accuracy with its CI and the length baselines, as a run folder",
                      reward_eval), RewardEvalSettings, required=True)
    add_flags(command(rw_sub, "score", "the reward of every answer in preference files, as JSONL", reward_score),
              RewardScoreSettings, required=True)


def tune(args: argparse.Namespace) -> int:
    from taskfit.tuning import tune
    from taskfit.tuning.skeleton import is_main_process, summary

    card = tune(load_tune_config(args.config, settings_from(args)), resume=args.resume).card
    if is_main_process():  # rank 0 of a distributed launch reports for all
        sys.stdout.write(summary(card) + "\n")
    return 0


def synth(args: argparse.Namespace) -> int:
    from taskfit.tuning.synth import summary, synthesize

    card = synthesize(load_synth_config(args.config, settings_from(args)), resume=args.resume)
    sys.stdout.write(summary(card) + "\n")
    return 0


def align(args: argparse.Namespace) -> int:
    from taskfit.tuning.skeleton import summary

    config = load_align_config(args.config, settings_from(args))
    if args.action == "eval":
        from pathlib import Path

        from taskfit.tuning.align_eval import evaluate_policies, to_markdown

        output = Path(config.output or "runs/align-eval")
        results = evaluate_policies(config, [p.strip() for p in (args.policies or "").split(",") if p.strip()],
                                    args.judge, output)
        sys.stdout.write(to_markdown(results) + f"\nwritten to {output}/align_eval.json and align_eval.md\n")
        return 0
    if config.method in ("raft", "grpo", "rloo"):
        from taskfit.tuning.online_rl import train_online
        from taskfit.tuning.raft import train_raft

        card = (train_raft if config.method == "raft" else train_online)(config, resume=args.resume)
    else:
        from taskfit.tuning.align import train_align

        card = train_align(config)
    sys.stdout.write(summary(card) + "\n")
    return 0


def reward_train(args: argparse.Namespace) -> int:
    from taskfit.tuning.reward import train_reward
    from taskfit.tuning.skeleton import summary

    sys.stdout.write(summary(train_reward(load_reward_config(args.config, settings_from(args)))) + "\n")
    return 0


def reward_eval(args: argparse.Namespace) -> int:
    from taskfit.tuning.reward_eval import evaluate_reward

    s = settings_of(RewardEvalSettings, args)
    results = evaluate_reward(s.reward, s.data, s.output, s.limit, s.seed, s.bootstrap_samples)
    acc, base = results["metrics"]["accuracy"], results["baselines"]
    sys.stdout.write(f"accuracy {acc['value']:.4f} [{acc['ci_low']:.4f}, {acc['ci_high']:.4f}] on "
                     f"{results['counts']['n']} pairs; shorter answer wins {base['shorter']['value']:.4f}, longer "
                     f"{base['longer']['value']:.4f}; results: {s.output}/results.json\n")
    return 0


def reward_score(args: argparse.Namespace) -> int:
    from taskfit.tuning.reward_eval import score_file

    s = settings_of(RewardScoreSettings, args)
    rows = score_file(s.reward, s.data, s.output)
    sys.stdout.write(f"wrote {rows} rows to {s.output}\n")
    return 0
