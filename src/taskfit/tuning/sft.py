"""The ``sft`` stage of ``taskfit tune``: supervised fine-tuning of a causal LM on a task or a training file, with
PEFT or in full.

Methods: ``lora``, ``ia3``, ``prefix``, ``prompt`` (PEFT), ``adapter`` (bottleneck adapters,
:mod:`taskfit.adapters.bottleneck`) and ``full``; the ``head`` stage (a classifier on a sentence encoder) is
:mod:`taskfit.tuning.head`. Training runs in the transformers
``Trainer`` (progress bar with the loss, checkpoints every ``save_steps``, ``--resume`` from the last checkpoint,
``report_to`` TensorBoard / W&B / MLflow), on the pairs of :mod:`taskfit.tuning.data` with the loss on answer
tokens only. The output folder holds the adapter (PEFT format) or the full model, the tokenizer, ``loss.png``,
``run_card.json`` and ``RUN_CARD.md`` (data, config, trainable parameters, time, tokens/s, peak memory).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskfit.adapters.apply import quiet_checkpointing_rename
from taskfit.adapters.bottleneck import BottleneckConfig, add_adapters, save_adapters
from taskfit.errors import UserError
from taskfit.models.catalog import resolve_model
from taskfit.models.kv import packs
from taskfit.models.loading import load_causal_lm
from taskfit.tuning.common import TuneConfig, TuneResult, data_line, task_examples, tune_evaluated_as
from taskfit.tuning.data import Tokenizer, collate, pairs_from_task, read_training_file
from taskfit.tuning.mixture import build_mixture
from taskfit.tuning.skeleton import (
    LLAMA_MLP,
    RunCard,
    begin,
    checkpoint_to_resume,
    finished_card,
    is_main_process,
    lora_config,
    loss_history,
    plot_loss,
    seed_and_threads,
    stage_output,
    training_arguments,
    world,
)

log = logging.getLogger(__name__)



def peft_config(config: TuneConfig, model_path: str, instruction: str | None):
    """The PEFT configuration of ``config.method`` (None for full fine-tuning)."""
    from peft import IA3Config, PrefixTuningConfig, PromptTuningConfig, TaskType

    if config.method == "lora":
        return lora_config(config, "CAUSAL_LM")
    if config.method == "ia3":
        targets = config.target_modules or ["k_proj", "v_proj", "down_proj"]
        return IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=targets,
                         feedforward_modules=[m for m in targets if m in LLAMA_MLP])
    if config.method == "prefix":
        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=config.virtual_tokens)
    if config.method == "prompt":
        init = {"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": instruction,
                "tokenizer_name_or_path": model_path} if instruction else {}
        return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=config.virtual_tokens, **init)
    return None


def training_samples(config: TuneConfig):
    """The samples to train on and a description of where they came from."""
    if config.mixture is not None:
        samples, info = build_mixture(config)
        return samples, info, None
    if config.train_file is not None and config.task is None:
        samples = read_training_file(config.train_file)
        if config.limit:
            samples = samples[: config.limit]
        return samples, {"file": str(config.train_file), "n": len(samples)}, None
    task, examples = task_examples(config)
    info = ({"task": task.name, "file": str(config.train_file), "n": len(examples)} if config.train_file else
            {"task": task.name, "split": config.split, "n": len(examples)})
    return pairs_from_task(task, examples), info, task.config.prompt.instruction


def train_sft(config: TuneConfig, resume: bool = False) -> TuneResult:
    """The sft stage, read top to bottom: output folder -> data -> model + method -> Trainer -> train -> save ->
    loss curve and run card."""
    started = time.perf_counter()
    out, continuing = stage_output(config, "tune", resume=resume, resumable=True)
    if continuing and (card := finished_card(out)) is not None:
        log.info("%s is complete (%s steps); nothing to resume", out, card.get("steps"))
        return TuneResult(card, None)
    start_step = checkpoint_to_resume(out) if continuing else 0
    seed_and_threads(config)
    samples, data_info, instruction = training_samples(config)
    if not samples:
        raise UserError("no training samples")
    name, model_path = resolve_model(config.model)
    loaded = load_causal_lm(model_path)
    encode = Tokenizer(loaded.tokenizer, config.chat_template)
    tokenized = [encode(sample, config.max_length) for sample in samples]
    answer_tokens = sum(sum(label != -100 for label in item.labels) for item in tokenized)
    if answer_tokens == 0:
        raise UserError("no answer tokens to learn from (check max_length and the answers)")
    with quiet_checkpointing_rename():
        method = with_method(loaded.model, config, model_path, instruction)
    log.info("%s on %d samples: %d trainable parameters of %d (%.3f%%)", config.method, len(samples),
             method.trainable, method.total, 100 * method.trainable / method.total)

    estimate = memory_estimate(loaded.model.config, method, tokenized, config)
    log.info("memory estimate: about %.1f GiB at the peak (weights %.2f, gradients and AdamW state %.2f, one "
             "pack's activations %.2f, answer logits %.2f; --micro-batch-tokens and --gradient-checkpointing lower "
             "the activations)", *(estimate[k] / 1024 for k in ("peak_mib", "weights_mib", "optimizer_mib",
                                                              "activations_mib", "logits_mib")))
    checkpointing = {"activation_checkpointing": True, "activation_checkpointing_kwargs": {"use_reentrant": False}}
    args = training_arguments(config, out, len(tokenized), save_steps=config.save_steps, save_total_limit=3,
                              remove_unused_columns=False, **(checkpointing if config.gradient_checkpointing else {}))
    trainer = sft_trainer(args, method, tokenized, loaded.tokenizer, config.micro_batch_tokens)
    if not continuing:
        begin(out, config)
    train_start = time.perf_counter()
    with quiet_checkpointing_rename():
        result = trainer.train(resume_from_checkpoint=True if continuing else None)
        train_s = time.perf_counter() - train_start
        if is_main_process():
            method.save(out)
    if is_main_process():
        loaded.tokenizer.save_pretrained(out)
    history = loss_history(trainer)
    plot_loss(history, out / "loss.png", f"{config.method} on "
              f"{data_info.get('task') or data_info.get('file') or 'a mixture'}")
    steps_done = trainer.state.global_step
    data = {**data_info, "tokens": sum(len(item.input_ids) for item in tokenized), "answer_tokens": answer_tokens,
            "chat_template": encode.chat}
    return TuneResult(RunCard(
        method=config.method, base_model={"name": name, "path": model_path}, data=data, config=config, output=out,
        started=started, evaluate_with=tune_evaluated_as(config, out),
        trainable_parameters=method.trainable, total_parameters=method.total, steps=steps_done,
        loss_history=history, fallback_loss=result.training_loss, train_s=train_s,
        tokens=(steps_done - start_step) * tokens_per_step(tokenized, config),
        extras={"train_loss": result.training_loss, "resumed_from_step": start_step,
                "memory_estimate_mib": round(estimate["peak_mib"])},
        lines=[data_line(data)]).write(), method.model)


def memory_estimate(model_config, method: Trainable, tokenized, config: TuneConfig) -> dict[str, float]:
    """A rough peak-memory estimate (MiB) of an sft run, printed before it starts: fp32 weights, gradients and two
    AdamW moments of the trainable weights, and the activations and answer logits of the largest pack.

    A Llama layer keeps about 4 x intermediate + 8 x hidden floats per token for the backward pass (the MLP's gate,
    up, activation and down inputs; q, k, v, the attention output, norms and projection inputs), and about as much
    again is held in transient buffers while the backward runs; checkpointing keeps one hidden state per layer and
    one layer's activations at a time."""
    mib = 1 / 2 ** 20
    hidden, layers = model_config.hidden_size, model_config.num_hidden_layers
    layer = (4 * getattr(model_config, "intermediate_size", 4 * hidden) + 8 * hidden) * 4 * 2
    lengths = sorted((len(t.input_ids) for t in tokenized), reverse=True)
    batch = sum(lengths[:config.batch_size])  # the longest batch the data can make
    pack = batch if config.micro_batch_tokens <= 0 else max(lengths[0], min(config.micro_batch_tokens, batch))
    if method.peft is not None and method.peft.is_prompt_learning:  # the Trainer's own padded batch
        pack = lengths[0] * min(config.batch_size, len(lengths))
    answer_share = sum(label != -100 for t in tokenized for label in t.labels) / sum(lengths)
    activations = pack * (hidden * 4 * layers + layer if config.gradient_checkpointing else layer * layers)
    estimate = {"weights_mib": method.total * 4 * mib, "optimizer_mib": method.trainable * 4 * 3 * mib,
                "activations_mib": activations * mib,
                "logits_mib": pack * answer_share * model_config.vocab_size * 4 * 3 * mib}
    return {**estimate, "peak_mib": sum(estimate.values()) + 400}  # + the interpreter, torch and the data


@dataclass
class Trainable:
    """A model with ``config.method`` applied: PEFT-wrapped, with bottleneck adapters, or as it is (full)."""

    model: Any
    peft: Any | None
    bottleneck: BottleneckConfig | None
    trainable: int
    total: int

    def save(self, out: Path) -> None:
        """The adapter (PEFT format, or taskfit's bottleneck format) or, for full tuning, the whole model."""
        if self.bottleneck is not None:
            save_adapters(self.model, self.bottleneck, out)
        else:
            self.model.save_pretrained(out)


def with_method(model, config: TuneConfig, model_path: str, instruction: str | None) -> Trainable:
    """Apply ``config.method`` to ``model`` (what trains: PEFT modules, bottleneck adapters, or every weight)."""
    peft = peft_config(config, model_path, instruction)
    bottleneck = None
    if peft is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft)
    elif config.method == "adapter":
        bottleneck = BottleneckConfig(size=config.adapter_size, non_linearity=config.adapter_non_linearity,
                                      target_modules=config.target_modules or ["mlp"],
                                      base_model_name_or_path=model_path)
        add_adapters(model, bottleneck)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Trainable(model, peft, bottleneck, trainable, sum(p.numel() for p in model.parameters()))


def tokens_per_step(tokenized, config) -> float:
    """The tokens one optimizer step trains on: a row's mean length times the rows of a step, every process's share
    (the run card's tokens/s of SFT and of RAFT's fine-tuning rounds)."""
    return (sum(len(item.input_ids) for item in tokenized) / len(tokenized) * config.batch_size
            * config.gradient_accumulation * world()[1])


def sft_trainer(args, method: Trainable, tokenized, tokenizer, micro_batch_tokens: int = 0):
    """The transformers Trainer with the answer-only loss (the plain loss for prefix / prompt tuning, which shift
    positions) on rows already tokenized, padded per batch; each batch runs in passes of at most
    ``micro_batch_tokens`` tokens (:func:`packs`; 0: one pack)."""
    import torch
    from transformers import Trainer

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompt_learning = method.peft is not None and method.peft.is_prompt_learning
    trainer_class = Trainer if prompt_learning else answer_only_trainer(Trainer, micro_batch_tokens)
    return trainer_class(model=method.model, args=args, train_dataset=_ListDataset(tokenized),
                         data_collator=lambda batch: collate(batch, pad_id,
                                                             lambda x: torch.tensor(x, dtype=torch.long)))


def answer_only_trainer(trainer_class, micro_batch_tokens: int = 0):
    """A Trainer whose loss computes the output layer only at positions that predict an answer token, on the batch's
    rows packed into sequences without padding.

    Answers are a few tokens of each sample, and the output layer (hidden size x vocabulary, 49k words for
    SmolLM2) is the largest single matrix product per position; the model's own loss would run it, forward and
    backward, on every position. Here it runs only at the positions that predict an answer token.

    A batch padded to its longest row spends the padding's work for nothing (a quarter of SST-2's batches of 8,
    more for rows of 160-512 tokens such as KBQA's) and holds every layer's activations for all of it at once
    (10 GiB for a 135M model on KBQA). The rows are packed instead (:func:`packs`): each pack one sequence of at
    most ``micro_batch_tokens`` tokens, positions restarting at each row, which transformers turns into a mask that
    keeps the rows apart (``use_cache=False``: a cache would turn that detection off). All packs but the last run
    forward and backward here (without a DDP gradient exchange), the last is returned to the Trainer, and every
    pack's loss is its answer tokens' summed cross-entropy over the whole batch's answer-token count, so the
    gradient and the logged loss are the batch's own. Not for prefix / prompt tuning, which shift positions.
    """
    import torch

    class AnswerOnlyTrainer(trainer_class):
        loss_is_scaled_for_ga = True  # divided here: by the answer tokens of every accumulated batch, or by steps

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            if num_items_in_batch is None:  # a batch's own mean, over the accumulated batches
                scale = 1 / ((labels[:, 1:] != -100).sum() * getattr(self, "current_gradient_accumulation_steps", 1))
            else:
                scale = 1 / num_items_in_batch
                if self.args.average_tokens_across_devices:
                    # num_items_in_batch counts every process's answer tokens and DDP averages the gradients over
                    # the processes: scale back up, as the Trainer's own compute_loss does, so gradients and the
                    # logged loss are those of one process with the global batch
                    scale = scale * self.accelerator.num_processes
            lengths = inputs["attention_mask"].sum(-1).tolist()
            groups = packs(lengths, micro_batch_tokens)
            done = 0.0
            for rows in groups[:-1]:
                with self.accelerator.no_sync(model):
                    part, _ = _pack_loss(model, inputs["input_ids"], labels, rows, lengths)
                    part = part * scale
                    self.accelerator.backward(part)
                done = done + part.detach()
            last, outputs = _pack_loss(model, inputs["input_ids"], labels, groups[-1], lengths)
            loss = last * scale + done
            return (loss, outputs) if return_outputs else loss

    def _pack_loss(model, ids, labels, rows, lengths):
        """The summed answer-token cross-entropy of ``rows`` run as one packed sequence."""
        device = ids.device
        packed = torch.cat([ids[i, :lengths[i]] for i in rows])[None]
        positions = torch.cat([torch.arange(lengths[i], device=device) for i in rows])[None]
        ignore = torch.full((1,), -100, dtype=labels.dtype, device=device)  # a row's last token predicts nothing
        targets = torch.cat([torch.cat([labels[i, 1:lengths[i]], ignore]) for i in rows])
        keep = (targets != -100).nonzero().squeeze(-1)
        outputs = model(input_ids=packed, position_ids=positions, use_cache=False, logits_to_keep=keep)
        loss = torch.nn.functional.cross_entropy(outputs.logits.float().flatten(0, 1), targets[keep],
                                                 reduction="sum")
        return loss, outputs

    return AnswerOnlyTrainer


class _ListDataset:
    """A list as a map-style dataset (the Trainer only needs ``len`` and indexing)."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


