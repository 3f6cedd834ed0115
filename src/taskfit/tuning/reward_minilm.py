"""The cheap reward baseline: a Bradley-Terry model on MiniLM sentence embeddings.

P(chosen beats rejected) = σ(w · (e_chosen − e_rejected)), with e the unit-normalised embedding of (last user turn,
answer); w is fitted by L2-regularised logistic regression on the embedding differences of the training pairs (each
pair also in reverse, so the model has no intercept to hide behind). The reward of an answer is w · e.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from taskfit.data.preferences import PreferencePair
from taskfit.models.reward import REWARD_CONFIG
from taskfit.prompting.embeddings import DEFAULT_ENCODER, embed
from taskfit.settings import RewardConfig
from taskfit.tuning.reward_functions import judge_text
from taskfit.tuning.skeleton import Trained


def train_minilm(config: RewardConfig, train: list[PreferencePair], out: Path) -> Trained:
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    chosen = embed([judge_text(p.prompt, p.chosen) for p in train], DEFAULT_ENCODER, progress=config.progress)
    rejected = embed([judge_text(p.prompt, p.rejected) for p in train], DEFAULT_ENCODER, progress=config.progress)
    diff = chosen - rejected
    x = np.concatenate([diff, -diff])
    y = np.concatenate([np.ones(len(diff)), np.zeros(len(diff))])
    fit = LogisticRegression(C=config.learning_rate(), fit_intercept=False, max_iter=2000).fit(x, y)
    weights = fit.coef_[0].astype(np.float32)
    (out / REWARD_CONFIG).write_text(json.dumps({"kind": "minilm", "encoder": DEFAULT_ENCODER,
                                                 "weights": [float(w) for w in weights]}) + "\n", encoding="utf-8")
    train_s = time.perf_counter() - started
    train_accuracy = float(np.mean(diff @ weights > 0))
    return Trained(base_model={"name": DEFAULT_ENCODER, "path": DEFAULT_ENCODER},
                   note="a linear reward on frozen MiniLM embeddings (C = --lr)", trainable=len(weights),
                   total=len(weights), steps=int(fit.n_iter_[0]), loss_history=[], train_s=train_s,
                   extras={"train_accuracy": train_accuracy})
