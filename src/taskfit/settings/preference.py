"""The settings of the commands that learn from preferences and rewards: ``taskfit reward train``, ``taskfit align``
(DPO, KTO, RAFT, GRPO, RLOO) and ``taskfit loop`` (a round of retraining from the assistant's feedback)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator

from taskfit.errors import UserError
from taskfit.models.options import OPERATIONAL
from taskfit.settings.common import DB_HELP, merged
from taskfit.settings.training import (
    BookkeepingSection,
    LoraSection,
    OptimSection,
    lr_field,
    micro_batch_field,
)
from taskfit.strict import StrictModel, validate

# ------------------------------------------------------------------------------------------------------- taskfit reward
REWARD_RATES = {"lora": 1e-4, "full": 1e-5, "top": 2e-5, "minilm": 1.0}
"""``taskfit reward train``'s default learning rate per method (read by ``learning_rate()``, shown in ``--lr``)."""


class RewardModelSection(StrictModel):
    method: Literal["lora", "full", "top", "minilm"] = Field(
        "lora", description="lora: LoRA on the LM with a reward head; full: every weight; top: the last "
                            "--top-layers decoder layers + head; minilm: a linear reward on MiniLM sentence embeddings "
                            "(the cheap baseline, also an independent judge)")
    model: str = Field("smollm2-135m-instruct", description="known model or hf:<folder> under the reward head")
    top_layers: int = Field(2, gt=0, description="top: decoder layers trained (with the final norm and the head)")


class PreferenceDataSection(StrictModel):
    data: list[Path] = Field(default_factory=list, description="preference files (TRL, LMFlow, LLaMA-Factory, "
                                                               "HH-RLHF, the assistant's feedback export)")
    limit: int | None = Field(None, gt=0, description="use a seeded random sample of N pairs")
    dev_share: float = Field(0.2, ge=0, lt=1, description="share of prompts held out as dev (written to "
                                                           "<output>/dev.jsonl and evaluated after training)")
    chat_template: bool = Field(True, description="render prompts with the model's chat template")
    max_length: int = Field(512, gt=8, description="tokens per prompt + answer (prompts lose whole turns from the "
                                                   "left first)")
    seed: int = Field(1234, description="seed for sampling, the dev split, initialisation and data order")


class RewardOptimSection(OptimSection):
    lr: float | None = lr_field(REWARD_RATES, "; for minilm the inverse L2 strength C of the logistic regression")


class RewardBookkeepingSection(BookkeepingSection):
    output: Path | None = Field(None, description="output folder (default runs/reward/<method>-<time>)",
                                json_schema_extra=OPERATIONAL)
    micro_batch_tokens: int = micro_batch_field("lora / full / top: pairs of similar length, each "
                                                  "prompt run once for both answers", 1024)


class RewardConfig(RewardBookkeepingSection, LoraSection, RewardOptimSection, PreferenceDataSection,
                   RewardModelSection):
    """Everything ``taskfit reward train`` needs; every flag is also a YAML key."""

    def learning_rate(self) -> float:
        return self.lr or REWARD_RATES[self.method]


REWARD_SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("reward model", RewardModelSection), ("data", PreferenceDataSection), ("optimisation", RewardOptimSection),
    ("lora", LoraSection), ("hardware and bookkeeping", RewardBookkeepingSection)]


def load_reward_config(path: str | Path | None, overrides: dict[str, Any]) -> RewardConfig:
    data, source = merged(path, overrides)
    config = validate(RewardConfig, data, source)
    if not config.data:
        raise UserError("no preference data: pass --data FILE (repeatable) or set 'data:' in the config")
    return config


# -------------------------------------------------------------------------------------------------------- taskfit align
# DPO / KTO: a new LoRA on the start policy, moved by preference losses; RAFT: tune's LoRA rate, since each
# iteration is a short answer-only SFT (at 5e-5 an iteration's 8 steps barely moved the policy:
# benchmarks/results/alignment_hh.md)
ALIGN_RATES = {"dpo": 5e-5, "kto": 5e-5, "raft": 2e-4, "grpo": 1e-4, "rloo": 1e-4}
"""``taskfit align``'s default learning rate per method."""


BETAS = {"dpo": 0.1, "kto": 0.1, "grpo": 0.04, "rloo": 0.05}
"""``taskfit align``'s default TRL beta per method (grpo: DeepSeekMath's KL coefficient; rloo: TRL's)."""


class AlignMethodSection(StrictModel):
    method: Literal["dpo", "kto", "raft", "grpo", "rloo"] = Field(
        "dpo", description="dpo: pairs (chosen vs rejected); kto: rated rows (desirable or not), pairs split into "
                           "two rated rows; raft: sample, score with --reward, fine-tune on the best, repeat; grpo / "
                           "rloo: reinforcement learning against --reward (TRL's GRPOTrainer / RLOOTrainer: groups "
                           "of --num-generations answers per prompt, advantages against the group)")
    model: str = Field("smollm2-135m-instruct", description="known model or hf:<folder>")
    adapter: Path | None = Field(None, description="start from this SFT adapter (`taskfit tune`): merged into the "
                                                   "weights, it is both the start policy and the frozen reference")
    beta: float | None = Field(None, ge=0, description="TRL beta: how far the policy may move from the reference "
                               "(grpo / rloo: the KL coefficient; 0 loads no reference); default "
                               + ", ".join(f"{v:g} ({k})" for k, v in BETAS.items()))
    loss_type: str | None = Field(None, description="TRL loss_type (dpo default sigmoid, kto default kto, grpo "
                                                    "default dapo; rloo has none)")
    desirable_weight: float = Field(1.0, gt=0, description="kto: weight of desirable rows")
    undesirable_weight: float = Field(1.0, gt=0, description="kto: weight of undesirable rows")


class RaftSection(StrictModel):
    reward: str | None = Field(None, description="raft, grpo, rloo: a `taskfit reward train` folder, "
                                                 "length:shorter|longer, or metric:NAME, one of the --task's metrics "
                                                 "(accuracy, exact_match, f1, rouge_l, mrr, map) scored per answer as "
                                                 "its evaluation scores it; several, comma-separated, each with an "
                                                 "optional *WEIGHT (metric:exact_match,length:shorter*0.1)")
    task: str | None = Field(None, description="raft, grpo, rloo: take prompts (and gold answers) from this task "
                                               "instead of --data")
    data_dir: Path | None = Field(None, description="with --task: folder laid out as D/<dataset>/<split>.jsonl")
    split: str = Field("train", description="with --task: the split prompts come from")
    iterations: int = Field(3, gt=0, description="raft: sample -> score -> fine-tune rounds")
    samples: int = Field(4, gt=0, description="raft: answers sampled per prompt (K)")
    prompts: int = Field(64, gt=0, description="raft: prompts per iteration (b)")
    max_new_tokens: int = Field(48, gt=0, description="raft, grpo, rloo: tokens per sampled answer")
    temperature: float = Field(1.0, gt=0, description="raft, grpo, rloo: sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="raft, grpo, rloo: nucleus sampling")
    selection: Literal["best", "global"] = Field("best", description="raft: the best answer per prompt, or the best "
                                                                     "b of all (the paper's Algorithm 1)")
    min_reward: float | None = Field(None, description="raft: learn only from answers whose reward reaches this "
                                                       "(metric rewards: 1.0 keeps only right answers)")
    eval_prompts: int = Field(64, gt=0, description="raft, grpo, rloo: held-out prompts answered by the start policy "
                                                    "and after every iteration (raft) or after training (grpo, rloo)")
    eval_samples: int = Field(1, gt=0, description="raft, grpo, rloo and align eval: sampled answers per held-out "
                                                   "prompt (a prompt's reward is their mean; more samples narrow the "
                                                   "CI)")


class OnlineRLSection(StrictModel):
    num_generations: int = Field(4, ge=2, description="grpo / rloo: answers sampled per prompt, scored against each "
                                                      "other (--batch-size must be a multiple)")
    generation: Literal["generate", "continuous"] = Field(
        "generate", description="grpo / rloo: how TRL samples the answers: transformers' generate, or its continuous "
                                "batching engine (benchmarks/results/online_rl.md compares them here)")
    vllm_server: str | None = Field(None, description="grpo / rloo: generate with a running `trl vllm-serve` at this "
                                                      "URL (TRL's vLLM server mode, for GPU clusters; not run here)")


class AlignOptimSection(OptimSection):
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: run the epochs); raft: per "
                                           "iteration")
    epochs: float = Field(1.0, gt=0, description="passes over the data; raft: over each iteration's kept answers")
    lr: float | None = lr_field(ALIGN_RATES)


class AlignBookkeepingSection(BookkeepingSection):
    output: Path | None = Field(None, description="output folder (default runs/align/<method>-<time>; align eval: "
                                                  "runs/align-eval)", json_schema_extra=OPERATIONAL)
    save_steps: int = Field(50, gt=0, description="grpo / rloo: checkpoint every N steps (--resume continues from "
                                                  "the last)", json_schema_extra=OPERATIONAL)
    micro_batch_tokens: int = micro_batch_field("raft's fine-tuning: rows packed; dpo / kto's held-out "
                                                  "scoring: pairs of similar length")


class AlignConfig(AlignBookkeepingSection, LoraSection, AlignOptimSection, OnlineRLSection, RaftSection,
                  PreferenceDataSection, AlignMethodSection):
    """Everything ``taskfit align`` needs; TRL's own key names for its options; every flag is also a YAML key."""

    def learning_rate(self) -> float:
        return self.lr or ALIGN_RATES[self.method]

    def kl_beta(self) -> float:
        return self.beta if self.beta is not None else BETAS[self.method]

    @model_validator(mode="after")
    def _method_options(self) -> AlignConfig:
        """Options that the chosen method cannot take, refused before anything loads."""
        if self.method in ("dpo", "kto") and self.beta == 0:
            raise ValueError(f"--beta 0: {self.method} needs a positive beta (it scales the implicit reward)")
        if self.method == "rloo" and self.loss_type:
            raise ValueError("--loss-type: TRL's RLOO has one loss; leave --loss-type out (grpo takes dapo, grpo, "
                             "dr_grpo, bnpo ...)")
        if self.method in ("grpo", "rloo") and (self.batch_size * self.gradient_accumulation) % self.num_generations:
            raise ValueError(f"--batch-size {self.batch_size} x --gradient-accumulation {self.gradient_accumulation} "
                             f"answers per step is not a multiple of --num-generations {self.num_generations}: each "
                             "prompt's answers must share a step")
        return self


ALIGN_SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("method and model", AlignMethodSection), ("data", PreferenceDataSection), ("raft, grpo, rloo", RaftSection),
    ("grpo, rloo", OnlineRLSection),
    ("optimisation", AlignOptimSection), ("lora", LoraSection), ("hardware and bookkeeping", AlignBookkeepingSection)]


def load_align_config(path: str | Path | None, overrides: dict[str, Any]) -> AlignConfig:
    data, source = merged(path, overrides)
    config = validate(AlignConfig, data, source)
    if not config.data and not (config.method in ("raft", "grpo", "rloo") and config.task):
        raise UserError("no preference data: pass --data FILE (repeatable) or set 'data:' in the config (raft, grpo, "
                        "rloo: or --task NAME)")
    return config


# --------------------------------------------------------------------------------------------------------- taskfit loop
class LoopFeedbackSection(StrictModel):
    db: Path | None = Field(None, description=DB_HELP)
    served_model: str = Field("smollm2-135m-instruct", description="the model the assistant serves now (known "
                              "model or hf:<folder>, e.g. the folder a promoted round wrote)")
    served_adapter: Path | None = Field(None, description="the adapter the assistant serves now (`taskfit tune`)")
    method: Literal["dpo", "kto"] = Field("dpo", description="dpo: better answers, picks and arena votes as pairs; "
                                          "kto: thumbs too, as rated rows")
    min_new_events: int = Field(1, ge=0, description="start a round only when at least this many feedback events "
                                "and votes no earlier round used are stored")
    output: Path = Field(description="the round's folder: data, candidate, evaluations, report, decision; the same "
                                     "command with the same folder resumes a cut round")


class LoopGateSection(StrictModel):
    task: str = Field(description="the served task (built-in name or YAML): its held-out split is the first gate")
    split: str | None = Field(None, description="split the task metric is measured on (default: the task's eval "
                                                "split; keep it apart from what users chat about)")
    data_dir: Path | None = Field(None, description="folder laid out as D/<dataset>/<split>.jsonl")
    kb: Path | None = Field(None, description="KBQA tasks: knowledge-base file (default: the split's triples)")
    limit: int | None = Field(200, gt=0, description="held-out task rows evaluated (the first N)")
    non_inferiority: float = Field(0.02, ge=0, description="the task metric may be at most this much worse (the "
                                   "95% CI's lower end of candidate - served above -this) for a promotion")
    alpha: float = Field(0.05, gt=0, lt=1, description="the held-out feedback pairs must rank the candidate's "
                         "answers better with sign-test p below this")
    dev_share: float = Field(0.2, gt=0, lt=1, description="share of the feedback pairs held out for the second gate")
    seed: int = Field(0, description="seed of the held-out split, training and the bootstrap")


class LoopTrainSection(StrictModel):
    max_steps: int = Field(-1, description="stop training after this many optimizer steps (-1: the epochs)")
    epochs: float = Field(3.0, gt=0, description="passes over the round's feedback")
    lr: float | None = Field(None, gt=0, description="learning rate (default: align's)")
    beta: float | None = Field(None, ge=0, description="TRL beta (default: align's)")
    batch_size: int = Field(4, gt=0, description="pairs (dpo) or rows (kto) a step")


class LoopServerSection(StrictModel):
    server: str | None = Field(None, description="a running `taskfit serve` (http://host:port) told to switch to a "
                               "promoted candidate; without it the restart command is printed",
                               json_schema_extra=OPERATIONAL)
    admin_token: SecretStr | None = Field(None, description="that server's admin token (default "
                                          "$TASKFIT_ADMIN_TOKEN)", json_schema_extra=OPERATIONAL)


class LoopConfig(LoopServerSection, LoopTrainSection, LoopGateSection, LoopFeedbackSection):
    """Everything ``taskfit loop`` needs (YAML keys = flags)."""


LOOP_SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("feedback and candidate", LoopFeedbackSection), ("gate", LoopGateSection), ("training", LoopTrainSection),
    ("server", LoopServerSection)]


def load_loop_config(path: str | Path | None, overrides: dict[str, Any]) -> LoopConfig:
    data, source = merged(path, overrides)
    return validate(LoopConfig, data, source)
