"""Cascade attention: the rows of a batch that all continue one cached prefix (system prompt + fixed demos, a stored
prompt prefix, prefix-tuning's virtual tokens) read its keys and values once for the whole batch.

The usual way hands every row its own copy of the prefix: the cache concatenates the (expanded) prefix onto each
row's new keys and values, SDPA then repeats the key/value heads to the query heads for every row and attends each
row's queries over prefix + own columns. Here the prefix stays out of the cache and the attention splits in two,
each part with its log-sum-exp (Juravsky et al. 2024, "Hydragen"; FlashInfer's cascade attention):

* prefix part: the queries of all rows and of all heads sharing one key/value head are stacked into one long query
  matrix against that head's prefix keys: one pass over the prefix, no mask (every row sees all of it);
* own part: each row's queries over its own keys, causal with padding, as before;

and the two outputs merge by their log-sum-exps: ``o = o_p * exp(l_p - l) + o_o * exp(l_o - l)`` with ``l =
logaddexp(l_p, l_o)`` — the softmax over all columns, exact up to rounding.

The prefix reaches the attention function as the keyword ``shared_prefix`` (a list of per-layer (keys, values),
batch 1) that transformers passes from ``model(...)`` down to every attention call. The CPU SDPA kernel that also
returns the log-sum-exp is torch's ``_scaled_dot_product_flash_attention_for_cpu``; elsewhere the backend keeps the
expanded-prefix path. :func:`enable` switches a model over only after checking on a few tokens that its layers pass
the keyword through (an architecture that does not would silently drop the prefix).
"""

from __future__ import annotations

import logging

from taskfit.models import kv

log = logging.getLogger(__name__)

NAME = "taskfit_cascade"  # the attention implementation's name in transformers' registries


def cascade_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                      shared_prefix=None, **kwargs):
    """An attention function for transformers' ``AttentionInterface``: SDPA unless ``shared_prefix`` is given, else
    the two-part attention of the module docstring (inference: no dropout). Shapes: query (rows, heads, T, d), key /
    value (rows, kv heads, T, d) — this pass's own tokens only; returns (rows, T, heads, d)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if shared_prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    import torch

    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    prefix_keys, prefix_values = shared_prefix[module.layer_idx]
    rows, heads, length, dim = query.shape
    kv_heads = prefix_keys.shape[1]
    groups = heads // kv_heads
    # prefix part: (rows, kv, g, T, d) -> (1, kv, rows*g*T, d), one pass over the prefix's keys per kv head
    stacked = query.view(rows, kv_heads, groups, length, dim).transpose(0, 1).reshape(1, kv_heads, -1, dim)
    out_p, lse_p = flash(stacked, prefix_keys, prefix_values, scale=scaling)
    out_p = out_p.view(kv_heads, rows, groups * length, dim).transpose(0, 1).reshape(rows, heads, length, dim)
    lse_p = lse_p.view(kv_heads, rows, groups * length).transpose(0, 1).reshape(rows, heads, length)
    # own part: causal over this pass's tokens, with the padding mask the model built
    if groups > 1:
        key = key[:, :, None].expand(rows, kv_heads, groups, length, dim).reshape(rows, heads, length, dim)
        value = value[:, :, None].expand(rows, kv_heads, groups, length, dim).reshape(rows, heads, length, dim)
    if attention_mask is None:
        out_o, lse_o = flash(query, key, value, is_causal=length > 1, scale=scaling)
    else:
        if attention_mask.dtype == torch.bool:
            attention_mask = torch.zeros(attention_mask.shape, dtype=query.dtype).masked_fill_(~attention_mask,
                                                                                               float("-inf"))
        out_o, lse_o = flash(query, key, value, attn_mask=attention_mask, scale=scaling)
    # the prefix part's weight exp(l_p - logaddexp(l_p, l_o)) is sigmoid(l_p - l_o). A query whose own columns are
    # all masked (a left pad) comes back as 0 with log-sum-exp 0: it only weighs in on its own pad position, which
    # no real token attends to
    out = torch.lerp(out_o, out_p, torch.sigmoid(lse_p - lse_o)[..., None].to(out_o.dtype))
    return out.transpose(1, 2).contiguous(), None


def enable(model) -> bool:
    """Switch ``model`` (an SDPA causal LM on the CPU) to :func:`cascade_attention` when its layers pass the
    ``shared_prefix`` keyword through to attention: checked on a few tokens against the same tokens run in full.
    Returns whether it was switched; a model that fails the check keeps SDPA (and the expanded-prefix path)."""
    import torch
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    config = model.config
    if getattr(config, "_attn_implementation", None) != "sdpa" or model.device.type != "cpu":
        return False
    if getattr(config, "sliding_window", None) or getattr(config, "attn_logit_softcapping", None):
        return False  # the own part would have to apply them too
    AttentionInterface.register(NAME, cascade_attention)
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, KeyError, TypeError) as exc:
        log.info("cascade attention unavailable for this model: %s", exc)
        return False
    if not _passes_check(model, torch):
        model.set_attn_implementation("sdpa")
        log.info("cascade attention off: this architecture does not hand the prefix to its attention layers")
        return False
    return True


def _passes_check(model, torch) -> bool:
    """The last-position logits of two rows continuing a 5-token prefix through cascade attention equal those of the
    rows run in full (1e-3)."""
    keyword = kv.cache_keyword(model)
    vocab = int(model.config.vocab_size)
    prefix = torch.arange(5)[None, :] % vocab + 1
    own = torch.tensor([[7, 8, 9], [10, 11, 12]]) % vocab
    try:
        with torch.inference_mode():
            full = model(input_ids=torch.cat([prefix.expand(2, -1), own], dim=1), logits_to_keep=1).logits[:, -1]
            cache = getattr(model(input_ids=prefix, use_cache=True, logits_to_keep=1), keyword)
            shared = kv.layers(cache)
            split = model(input_ids=own, position_ids=torch.arange(5, 8)[None, :].expand(2, -1),
                          shared_prefix=shared, logits_to_keep=1).logits[:, -1]
    except Exception as exc:  # noqa: BLE001 - any failure means: keep SDPA
        log.info("cascade attention check failed: %s", exc)
        return False
    return bool(torch.allclose(full.float(), split.float(), atol=1e-3, rtol=1e-3))
