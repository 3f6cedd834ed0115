"""A reward model: a causal LM with a one-output sequence-classification head, read at the last real token.

The scorer is pad-invariant by construction: it runs the backbone with an attention mask (and positions counted
from each row's first real token), applies the head to every position, and reads the position of the row's last
real token from the mask, never from a pad-token id (chat templates end turns with tokens that often double as the
pad token). Rows are sorted by length before batching, so a batch wastes little on padding, and the scores come back
in the input order.

A reward folder (``taskfit reward train``) holds ``reward.json`` (how to load it: the base model and whether the
folder is a PEFT adapter or a whole model) beside the weights and the tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskfit.adapters.apply import quiet_checkpointing_rename
from taskfit.errors import UserError
from taskfit.models.kv import after_prefixes, length_passes

REWARD_CONFIG = "reward.json"


def sequence_classifier(location: str | Path, device: str = "cpu"):
    """The model at ``location`` with a fresh one-output head (zero-initialised, so every reward starts at 0 and the
    pairwise loss at ln 2), its pad token set."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(str(location))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report lists the new head as "missing": expected, not news
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(location), num_labels=1)
    finally:
        hf_logging.set_verbosity(verbosity)
    set_pad_token(tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    head = _head(model)
    with torch.no_grad():
        head.weight.zero_()
        if getattr(head, "bias", None) is not None:
            head.bias.zero_()
    return model.to(device), tokenizer


def set_pad_token(tokenizer) -> None:
    """A pad token that no scored sequence contains. Chat models often pad with their end-of-turn token, which every
    scored answer ends with; transformers' sequence classifiers (and so TRL's reward loss) find a row's last token
    as its last non-pad one, so such a pad would move the reading position. The unknown / end-of-text token is used
    instead when the pad is the end-of-turn token."""
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return
    for candidate in (tokenizer.unk_token, "<|endoftext|>", "<pad>"):
        if candidate and candidate != tokenizer.eos_token and candidate in tokenizer.get_vocab():
            tokenizer.pad_token = candidate
            return
    raise UserError("the tokenizer has no pad token apart from its end-of-turn token; add one (e.g. '<pad>') to the "
                    "model folder's tokenizer before training a reward model")


def _head(model):
    head = getattr(model, "score", None) or getattr(model, "classifier", None)
    if head is None or not hasattr(head, "weight"):
        raise UserError(f"{type(model).__name__} has no 'score' head; use a decoder model (Llama, Qwen, Mistral ...)")
    return head


@dataclass
class RewardScorer:
    """Batched, length-sorted, pad-invariant scoring of token sequences."""

    model: Any
    batch_size: int = 16

    def score(self, sequences: Sequence[Sequence[int]], padding_side: str = "right") -> list[float]:
        import torch

        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out = [0.0] * len(sequences)
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = [list(sequences[i]) for i in order[start:start + self.batch_size]]
                for i, value in zip(order[start:start + self.batch_size], self.forward(rows, padding_side).tolist()):
                    out[i] = float(value)
        return out

    def score_after(self, prefixes: Sequence[Sequence[int]], continuations: Sequence[Sequence[Sequence[int]]],
                    budget: int = 2048) -> list[list[float]]:
        """The rewards of each prefix's continuations (``prefix + continuation``), the prefix run once for all of
        them (:func:`prefix_rewards`): K sampled answers of one prompt share the prompt's work. Prefixes run in
        groups of similar length, at most ``budget`` tokens of prefixes and continuations a pass."""
        import torch

        sizes = [len(p) + sum(len(c) for c in cs) for p, cs in zip(prefixes, continuations)]
        out: list[list[float]] = [[] for _ in prefixes]
        self.model.eval()
        with torch.inference_mode():
            for group in length_passes(sizes, budget):
                values = prefix_rewards(self.model, [prefixes[i] for i in group],
                                        [continuations[i] for i in group]).tolist()
                for i in group:
                    out[i], values = values[:len(continuations[i])], values[len(continuations[i]):]
        return out

    def forward(self, rows: Sequence[Sequence[int]], padding_side: str = "right"):
        """Rewards of a batch of token rows (a tensor; gradients flow when called outside inference mode)."""
        import torch

        if any(len(r) == 0 for r in rows):
            raise UserError("a reward model cannot score an empty sequence")
        width = max(len(r) for r in rows)
        pad = self.model.config.pad_token_id or 0
        ids, mask = [], []
        for r in rows:
            fill = width - len(r)
            ids.append(list(r) + [pad] * fill if padding_side == "right" else [pad] * fill + list(r))
            mask.append([1] * len(r) + [0] * fill if padding_side == "right" else [0] * fill + [1] * len(r))
        device = next(self.model.parameters()).device
        input_ids = torch.tensor(ids, device=device)
        attention = torch.tensor(mask, device=device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention,
                                       position_ids=positions).last_hidden_state
        last = (attention * torch.arange(width, device=device)).argmax(-1)  # the last real token of each row
        picked = hidden[torch.arange(len(rows), device=device), last]
        return _head(self.model)(picked).squeeze(-1).float()


def prefix_rewards(model, prefixes: Sequence[Sequence[int]], continuations: Sequence[Sequence[Sequence[int]]]):
    """The rewards of ``prefix + continuation`` for each prefix's continuations (a tensor, in order; gradients flow
    when called outside inference mode), with each prefix run once.

    The prefixes run left-padded (positions counted from each row's first real token) and keep their KV cache,
    which is repeated for the prefix's continuations; these continue it right-padded, and the head reads each one's
    last real token. A preference pair's chosen and rejected answers (or K sampled answers of one prompt) so share
    the prompt's work, with the rewards the whole sequences would get (tested). Every prefix and continuation needs
    at least one token."""
    import torch

    if any(len(p) == 0 for p in prefixes) or any(len(c) == 0 for cs in continuations for c in cs):
        raise UserError("a reward model cannot score an empty prefix or continuation")
    flat = [c for cs in continuations for c in cs]
    _, rest, _ = after_prefixes(model.base_model, prefixes, continuations, model.config.pad_token_id or 0)
    hidden = rest.last_hidden_state
    device = hidden.device
    picked = hidden[torch.arange(len(flat), device=device), torch.tensor([len(c) - 1 for c in flat], device=device)]
    return _head(model)(picked).squeeze(-1).float()


def load_reward_model(folder: str | Path, device: str = "cpu"):
    """The model and tokenizer of a ``taskfit reward train`` folder (a PEFT adapter is merged at load)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(folder)
    config_path = folder / REWARD_CONFIG
    if not config_path.is_file():
        raise UserError(f"{folder} is not a reward model folder ({REWARD_CONFIG} missing); train one with "
                        "`taskfit reward train`")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if config.get("adapter"):
        from peft import PeftModel

        base = AutoModelForSequenceClassification.from_pretrained(config["base_model"], num_labels=1)
        base.config.pad_token_id = tokenizer.pad_token_id
        with quiet_checkpointing_rename():
            model = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer, config
