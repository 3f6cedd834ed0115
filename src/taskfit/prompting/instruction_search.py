"""Instruction search, an optimizer (not a way of asking): Automatic Prompt Engineer (Zhou et al. 2022).

The model proposes instructions from input/output pairs of the pool; each candidate is scored zero-shot on other
pool rows through the same driver and metric as evaluation; the best is returned with every candidate's score.
The ``ape`` strategy then answers zero-shot with it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from taskfit.api import GenerateRequest, Message, Prompt
from taskfit.errors import UserError
from taskfit.metrics import metric_value
from taskfit.prompting.asking import Asker
from taskfit.prompting.context import derive_seed
from taskfit.prompting.driver import drive
from taskfit.prompting.options import APEOptions
from taskfit.prompting.templates import fill

log = logging.getLogger(__name__)


def search_instruction(ask: Asker, options: APEOptions, backend) -> tuple[str, dict[str, Any]]:
    """The best instruction for ``ask``'s task on its context's pool, and what the search saw (results.json)."""
    ctx, task, space = ask.ctx, ask.task, ask.space
    pool = list(ctx.pool or [])
    rng = np.random.default_rng([ctx.seed, 7])
    order = [pool[i] for i in rng.permutation(len(pool))]
    pairs, scoring = order[: options.n_pairs], order[options.n_pairs : options.n_pairs + options.score_n]
    if not scoring:
        raise UserError(f"APE needs more than n_pairs={options.n_pairs} pool examples to score candidates")
    text_pairs = "\n\n".join(f"Input: {task.config.prompt.input_template.format(**p.fields)}\n"
                             f"Output: {space.word(p)}" for p in pairs)
    proposal = Prompt((Message("user", fill(options.proposal, pairs=text_pairs).strip()),), options.proposal_prefix)
    requests = [GenerateRequest(proposal, ("\n",), options.max_instruction_tokens, options.temperature,
                                options.top_p, derive_seed(ctx.seed, 1000 + i)) for i in range(options.m)]
    own = task.config.prompt.instruction
    candidates: list[str] = [own] if options.include_task_instruction and own else []
    for result in backend.generate(requests):
        text = result.text.strip().strip('"').strip()
        if text and text not in candidates:
            candidates.append(text)
    metric = task.config.metrics[0]
    scored = []
    for candidate in candidates:
        candidate_ask = ask.with_instruction(candidate)
        outcomes = drive([candidate_ask.direct(ex) for ex in scoring], backend)
        records = [task.sample_record(e, o) for e, o in zip(scoring, outcomes)]
        value = metric_value(metric, records, task.label_values)
        scored.append({"instruction": candidate, metric: value})
        log.info("APE candidate %s %.3f  %s", metric, value, candidate)
    best = max(scored, key=lambda s: s[metric])  # first of equals: the task's own instruction wins ties
    return best["instruction"], {
        "candidates": scored, "best_instruction": best["instruction"], "metric": metric, "best_score": best[metric],
        "scored_on": len(scoring), "pair_indices": [p.index for p in pairs],
        "reuse": {"prompt": {"instruction": best["instruction"]}}}
