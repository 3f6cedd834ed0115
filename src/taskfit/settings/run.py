"""``taskfit eval``'s settings: task, strategy, model, each backend's options, output — and the backend choice the
other commands that load a model (synth, serve) share. A strategy and its ``strategy_args`` (the strategy's own
options model) and a backend and the options only another backend takes are checked before any model loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from taskfit.errors import UserError
from taskfit.models.options import OPERATIONAL
from taskfit.models.registry import BUILT_IN, all_options, backend_names, options_of
from taskfit.prompting.options import STRATEGY_OPTIONS
from taskfit.settings.common import BACKEND_CHOICES, command_line, merged
from taskfit.strict import StrictModel, describe_error, validate


class PromptOverride(StrictModel):
    """Prompt fields a run may replace without editing the task YAML (e.g. an APE-found instruction)."""

    system: str | None = Field(None, description="replace the task's system prompt")
    instruction: str | None = Field(None, description="replace the task's instruction (e.g. the one APE found)")
    input_template: str | None = Field(None, description="replace the task's input template, e.g. 'Review: "
                                                         "{sentence}'")
    output_format: str | None = Field(None, description="replace the task's output-format line")
    answer_prefix: str | None = Field(None, description="replace the text the assistant's answer starts with")


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
        registered = all_options()
        for name in self.model_fields_set | set(extra):
            owners = [b for b, options in registered.items() if name in options.model_fields]
            if not owners or name in chosen.model_fields:
                continue
            field = registered[owners[0]].model_fields[name]
            if getattr(self, name) != field.get_default(call_default_factory=True):
                elsewhere = (field.json_schema_extra or {}).get("elsewhere")
                raise UserError(f"--{name.replace('_', '-')} works with the {' / '.join(owners)} backend, not "
                                f"{self.backend}; {elsewhere or 'leave it out'}")
        if self.adapter is not None and not chosen.adapters:
            takers = [b for b, options in registered.items() if options.adapters]
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


def eval_command(settings: dict[str, Any]) -> str:
    """``taskfit eval ...`` for RunConfig keys (a run card's ``evaluate_with``)."""
    return command_line("eval", RunConfig, settings)


def load_run_config(path: str | Path | None, overrides: dict[str, Any]) -> RunConfig:
    """Merge a run YAML (if any) with CLI overrides (flags win) into a validated RunConfig."""
    data, source = merged(path, overrides)
    if "task" not in data:
        raise UserError(f"{source}: no task given; pass --task NAME (see `taskfit tasks`) or set 'task:' in the config")
    return validate(RunConfig, data, source)
