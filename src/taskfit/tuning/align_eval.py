"""``taskfit align eval``: one table over aligned policies (base, SFT, RAFT iterations, DPO, KTO) on the same
held-out prompts with the same seeds.

Each policy answers every prompt ``eval_samples`` times (sampled with seeds per prompt and sample shared by all
policies, so answers pair up across policies); a prompt's reward is the mean over its answers, which narrows the
CIs without more prompts. Per policy: the reward model's mean over prompts with its 95% CI, the win rate against the
first policy (the start; ties half) and the paired difference to it (mean and 95% CI over prompts), the judge's mean
(a second, independent reward such as the MiniLM one), distinct-1 and distinct-2 over an equal number of words per
policy (the shortest policy's total, so a terse policy is not rewarded for saying little), mean length in words, the
share of empty answers, perplexity on the held-out chosen answers, a KL estimate to the start policy (the mean over
prompts of log π(y|x) − log π_start(y|x) on the policy's own first answer to each, so that more samples do not
multiply the scoring passes), and seconds.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from taskfit.api import GenerateRequest, LoglikelihoodRequest, Prompt
from taskfit.data.preferences import read_preferences
from taskfit.data.sampling import sample_indices, sample_seed
from taskfit.errors import UserError
from taskfit.metrics.registry import mean_with_ci
from taskfit.metrics.text import distinct_n
from taskfit.models.catalog import resolve_model
from taskfit.models.hf import HFBackend
from taskfit.paths import output_folder
from taskfit.runs import write_json
from taskfit.settings import AlignConfig
from taskfit.tables import markdown_table
from taskfit.tuning.reward_functions import check_reward, load_reward


def _policy_kind(policy: str) -> str:
    """``base`` (the model itself), ``adapter`` (a LoRA folder) or ``model`` (a merged SFT / DPO output)."""
    if policy == "base":
        return "base"
    folder = Path(policy)
    if (folder / "adapter_config.json").is_file():
        return "adapter"
    if (folder / "config.json").is_file():
        return "model"
    raise UserError(f"--policies {policy}: not 'base', an adapter folder or a model folder")


def _backend(config: AlignConfig, location: str, policy: str) -> HFBackend:
    kind, batch = _policy_kind(policy), config.batch_size * 2
    if kind == "base":
        return HFBackend(location, threads=config.threads, batch_size=batch)
    if kind == "adapter":
        return HFBackend(location, adapter=Path(policy), threads=config.threads, batch_size=batch)
    return HFBackend(Path(policy), threads=config.threads, batch_size=batch)


def evaluate_policies(config: AlignConfig, policies: list[str], judge: str | None, output: Path) -> dict[str, Any]:
    if not policies:
        raise UserError("--policies: give the policies to compare, the start first (e.g. base,runs/dpo)")
    output_folder(output, fresh=True)
    for policy in policies:  # every bad argument is refused before minutes of generation, not after
        _policy_kind(policy)
    for spec in (config.reward, judge):
        if spec:
            check_reward(spec)
    pairs, _ = read_preferences(config.data).as_pairs()
    prompts = list(dict.fromkeys(p.prompt for p in pairs))
    chosen_of = {p.prompt: p.chosen for p in pairs}
    picked = [prompts[i] for i in sample_indices(len(prompts), min(config.eval_prompts, len(prompts)), config.seed)]
    k = config.eval_samples
    asked = [p for p in picked for _ in range(k)]  # every answer's prompt, k in a row
    _, location = resolve_model(config.model)
    rows = {}
    for policy in policies:
        started = time.perf_counter()
        backend = _backend(config, location, policy)
        requests = [GenerateRequest(Prompt(p), max_tokens=config.max_new_tokens, temperature=config.temperature,
                                    top_p=config.top_p, seed=sample_seed(config.seed, 0, str(i), j))
                    for i, p in enumerate(picked) for j in range(k)]
        texts = [r.text for r in backend.generate(requests)]
        own = _logprobs(backend, picked, texts[::k])  # the KL estimate reads each prompt's first answer
        chosen = backend.loglikelihood([LoglikelihoodRequest(Prompt(p), chosen_of[p]) for p in picked])
        nll = -sum(r.logprob for r in chosen) / max(1, sum(r.n_tokens for r in chosen))
        rows[policy] = {"texts": texts, "own": own, "perplexity_chosen": math.exp(nll),
                        "seconds": time.perf_counter() - started}
        del backend
    start = _backend(config, location, policies[0])
    for policy, row in rows.items():
        reference = _logprobs(start, picked, row["texts"][::k])
        row["kl"] = mean_with_ci([a - b for a, b in zip(row["own"], reference) if a is not None and b is not None])
    del start
    reward = load_reward(config.reward) if config.reward else None
    judge_fn = load_reward(judge) if judge else None
    budget = min(sum(len(t.split()) for t in row["texts"]) for row in rows.values())
    first = policies[0]
    table = []
    for policy in policies:
        row = rows[policy]
        texts = row["texts"]
        summary = {"policy": policy, "prompts": len(picked),
                   "distinct_1": _distinct_at(texts, 1, budget), "distinct_2": _distinct_at(texts, 2, budget),
                   "mean_words": sum(len(t.split()) for t in texts) / len(texts),
                   "empty_rate": sum(not t.strip() for t in texts) / len(texts),
                   "perplexity_chosen": row["perplexity_chosen"], "kl_to_start": row["kl"].as_dict(),
                   "seconds": round(row["seconds"], 1)}
        if reward is not None:
            row["reward"] = _per_prompt(reward.score(asked, texts), k)
            summary["reward"] = mean_with_ci(row["reward"]).as_dict()
        if judge_fn is not None:
            summary["judge"] = mean_with_ci(_per_prompt(judge_fn.score(asked, texts), k)).as_dict()
        table.append(summary)
    if reward is not None:
        for summary in table:
            mine, base = rows[summary["policy"]]["reward"], rows[first]["reward"]
            summary["win_rate_vs_start"] = sum(1.0 if a > b else 0.5 if a == b else 0.0
                                               for a, b in zip(mine, base)) / len(mine)
            summary["reward_delta_vs_start"] = mean_with_ci([a - b for a, b in zip(mine, base)]).as_dict()
    output.mkdir(parents=True, exist_ok=True)
    for i, policy in enumerate(policies):
        (output / f"answers_{i}.jsonl").write_text("".join(
            json.dumps({"policy": policy, "prompt": p[-1].content, "answer": t}, ensure_ascii=False) + "\n"
            for p, t in zip(asked, rows[policy]["texts"])), encoding="utf-8")
    results = {"policies": table, "prompts": len(picked), "samples_per_prompt": k, "seed": config.seed,
               "reward": config.reward, "judge": judge,
               "max_new_tokens": config.max_new_tokens, "temperature": config.temperature, "words_budget": budget}
    write_json(output / "align_eval.json", results)
    (output / "align_eval.md").write_text(to_markdown(results) + "\n", encoding="utf-8")
    return results


def _per_prompt(values: list[float], k: int) -> list[float]:
    """The mean of each prompt's k consecutive values."""
    return [sum(values[i:i + k]) / k for i in range(0, len(values), k)]


def _logprobs(backend: HFBackend, prompts: list[tuple], texts: list[str]) -> list[float | None]:
    keep = [i for i, t in enumerate(texts) if t.strip()]
    scored = backend.loglikelihood([LoglikelihoodRequest(Prompt(prompts[i]), texts[i]) for i in keep])
    out: list[float | None] = [None] * len(texts)
    for i, r in zip(keep, scored):
        out[i] = r.logprob
    return out


def _distinct_at(texts: list[str], n: int, budget: int) -> float:
    """Distinct-n over the policy's first ``budget`` words (answers in prompt order)."""
    kept, left = [], budget
    for t in texts:
        words = t.split()[:max(0, left)]
        left -= len(words)
        kept.append(" ".join(words))
    return distinct_n(kept, n)


def _ci(value: dict[str, Any] | None) -> str:
    if not value:
        return "-"
    return f"{value['value']:.4f} [{value['ci_low']:.4f}, {value['ci_high']:.4f}]" if value["ci_low"] is not None \
        else f"{value['value']:.4f}"


def to_markdown(results: dict[str, Any]) -> str:
    headers = ["policy", "reward [95% CI]", "reward − start, paired [95% CI]", "win vs start", "judge [95% CI]",
               "distinct-1", "distinct-2", "mean words", "empty", "ppl (chosen)", "KL to start", "seconds"]
    rows = [[p["policy"], _ci(p.get("reward")), _ci(p.get("reward_delta_vs_start")),
             f"{p['win_rate_vs_start']:.3f}" if "win_rate_vs_start" in p else "-",
             _ci(p.get("judge")), f"{p['distinct_1']:.3f}", f"{p['distinct_2']:.3f}", f"{p['mean_words']:.1f}",
             f"{p['empty_rate']:.1%}", f"{p['perplexity_chosen']:.2f}", _ci(p["kl_to_start"]), f"{p['seconds']:.0f}"]
            for p in results["policies"]]
    k = results.get("samples_per_prompt", 1)
    each = "one sampled answer each" if k == 1 else f"{k} sampled answers each (a prompt's reward is their mean)"
    return (f"{results['prompts']} held-out prompts, {each} (temperature {results['temperature']}, "
            f"{results['max_new_tokens']} new tokens, the same seeds for every policy); distinct-n over "
            f"{results['words_budget']} words per policy.\n\n" + markdown_table(headers, rows))
