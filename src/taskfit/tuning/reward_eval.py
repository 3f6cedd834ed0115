"""``taskfit reward eval``: pairwise accuracy of a reward on preference pairs, written as an ordinary run folder.

For each pair the reward scores the chosen and the rejected answer; the pair is right (1) when the chosen one
scores higher, wrong (0) when lower, half right (0.5) on a tie — so accuracy, its bootstrap CI and every paired
test read the per-pair ``correct`` column like any run's. On the same pairs the two length rules ("the shorter
answer wins", "the longer answer wins") are scored too, with the paired difference of the reward against each
(bootstrap CI and paired permutation p), so "better than a length heuristic" is a number, not a hope.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from taskfit import __version__
from taskfit.data.preferences import PreferencePair, read_preferences
from taskfit.data.sampling import sample_indices
from taskfit.errors import UserError
from taskfit.metrics.paired import paired_compare
from taskfit.metrics.registry import compute_metrics
from taskfit.paths import output_file, output_folder
from taskfit.runs import RunFolder, fingerprint, peak_rss_mib, write_jsonl
from taskfit.tuning.reward_functions import LengthReward, RewardFunction, check_reward, load_reward


def pair_id(pair: PreferencePair) -> str:
    """A short content hash of a pair (every prompt turn, both answers): the same pair read from any file."""
    return fingerprint([[m.role, m.content] for m in pair.prompt], pair.chosen, pair.rejected)[:16]


def pair_records(pairs: list[PreferencePair], reward: RewardFunction) -> list[dict[str, Any]]:
    """One record per pair: both rewards, the verdict, the margin."""
    prompts = [p.prompt for p in pairs]
    chosen = reward.score(prompts, [p.chosen for p in pairs])
    rejected = reward.score(prompts, [p.rejected for p in pairs])
    records = []
    for i, (pair, c, r) in enumerate(zip(pairs, chosen, rejected)):
        scored = not (math.isnan(c) or math.isnan(r))
        verdict = None if not scored else ("chosen" if c > r else "rejected" if c < r else "tie")
        last_user = next((m.content for m in reversed(pair.prompt) if m.role == "user"), "")
        records.append({
            # the pair by its content, so two runs on copies of one file compare; where it was read, beside it
            "index": i, "input": {"prompt": last_user, "turns": len(pair.prompt), "pair": pair_id(pair)},
            "source": pair.source,
            "gold": "chosen", "prediction": verdict, "parse_ok": scored,
            "correct": {"chosen": 1.0, "tie": 0.5, "rejected": 0.0, None: 0.0}[verdict],
            "chosen_reward": c if scored else None, "rejected_reward": r if scored else None,
            "margin": (c - r) if scored else None,
            "chosen_chars": len(pair.chosen.strip()), "rejected_chars": len(pair.rejected.strip()),
        })
    return records


def evaluate_reward(reward_spec: str, data: list[Path], output: Path, limit: int | None = None, seed: int = 1234,
                    bootstrap_samples: int = 2000) -> dict[str, Any]:
    started = time.perf_counter()
    output_folder(output)
    check_reward(reward_spec)
    preferences = read_preferences(data)
    pairs, _ = preferences.as_pairs()
    if limit is not None and limit < len(pairs):
        pairs = [pairs[i] for i in sample_indices(len(pairs), limit, seed)]
    if len(pairs) < 2:
        raise UserError(f"{len(pairs)} preference pair(s) in {', '.join(map(str, data))}; evaluation needs at least 2")
    folder = RunFolder.open(output, fingerprint(reward_spec, [str(f) for f in data], limit, seed,
                                                [([(m.role, m.content) for m in p.prompt], p.chosen, p.rejected)
                                                 for p in pairs]),
                            list(range(len(pairs))))
    if folder.complete and (previous := folder.read_results()) is not None:
        return previous
    reward = load_reward(reward_spec)
    eval_start = time.perf_counter()
    records = pair_records(pairs, reward)
    eval_s = time.perf_counter() - eval_start
    folder.append(records, 0)
    metric = compute_metrics(["accuracy"], records, n_resamples=bootstrap_samples, seed=seed)["accuracy"]
    baselines, versus = {}, {}
    for prefer in ("shorter", "longer"):
        rule = pair_records(pairs, LengthReward(prefer))
        baselines[prefer] = compute_metrics(["accuracy"], rule, n_resamples=bootstrap_samples,
                                            seed=seed)["accuracy"].as_dict()
        paired = paired_compare(["accuracy"], rule, records, n_resamples=bootstrap_samples, seed=seed)[0]
        versus[prefer] = {"diff": paired.diff, "ci_low": paired.ci_low, "ci_high": paired.ci_high,
                          "p_permutation": paired.p_permutation}
    margins = [r["margin"] for r in records if r["margin"] is not None]
    unscored = sum(not r["parse_ok"] for r in records)
    names = "+".join(Path(f).stem for f in data)
    results = {
        "taskfit_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {"task": f"preferences:{names}", "strategy": "reward", "strategy_args": {}, "mode": "score",
                   "model": reward_spec, "backend": "reward", "data": [str(f) for f in data], "limit": limit,
                   "seed": seed, "split": None, "quantize": "none", "adapter": None},
        "command": " ".join(["taskfit", "reward", "eval", "--reward", reward_spec, *[f"--data {f}" for f in data],
                             *([f"--limit {limit}"] if limit else []), "--seed", str(seed), "--output", str(output)]),
        "task": {"name": f"preferences:{names}", "type": "preference", "metrics": ["accuracy"], "labels": [],
                 "eval_split": None, "pool_split": None},
        "reward": reward.describe(),
        "metrics": {"accuracy": metric.as_dict()},
        "mean_margin": float(np.mean(margins)) if margins else None,
        "baselines": baselines,
        "versus_baselines": versus,
        "counts": {"n": len(records), "parse_failures": unscored, "parse_failure_rate": unscored / len(records),
                   "ties": sum(r["prediction"] == "tie" for r in records),
                   "dropped_when_read": dict(preferences.dropped)},
        "timings": {"eval_s": round(eval_s, 3), "total_s": round(time.perf_counter() - started, 3)},
        "cost": {"generated_tokens": 0, "requests_cached": 0, "rows_resumed": 0,
                 "eval_s_this_session": round(eval_s, 3), "peak_rss_mib": peak_rss_mib()},
        "output_dir": str(output),
    }
    folder.write_results(results)
    return results


def score_file(reward_spec: str, data: list[Path], output: Path) -> int:
    """Rewards of every answer in the files, as JSONL: pairs get both rewards, rated rows their one reward."""
    output_file(output)
    check_reward(reward_spec)
    preferences = read_preferences(data)
    reward = load_reward(reward_spec)
    rows: list[dict[str, Any]] = []
    if preferences.pairs:
        for record, pair in zip(pair_records(preferences.pairs, reward), preferences.pairs):
            rows.append({"source": pair.source, "chosen_reward": record["chosen_reward"],
                         "rejected_reward": record["rejected_reward"]})
    if preferences.rated:
        values = reward.score([r.prompt for r in preferences.rated], [r.completion for r in preferences.rated])
        rows += [{"source": r.source, "label": r.label, "reward": None if math.isnan(v) else v}
                 for r, v in zip(preferences.rated, values)]
    write_jsonl(output, rows)
    return len(rows)
