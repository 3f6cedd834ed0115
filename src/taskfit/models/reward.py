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
