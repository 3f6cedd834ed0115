"""Run configuration: YAML files and CLI flags validated into one :class:`RunConfig`.

Every CLI flag of ``taskfit eval`` is a field here, so a YAML config can set it; flags given on the
command line override the YAML. Unknown keys and wrong types are rejected with a message that names the
file, the key and what is allowed (:func:`validate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from taskfit.errors import UserError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PromptOverride(StrictModel):
    """Prompt fields a run may replace without editing the task YAML (e.g. an APE-found instruction)."""

    system: str | None = None
    instruction: str | None = None
    input_template: str | None = None
    output_format: str | None = None
    answer_prefix: str | None = None


class RunConfig(StrictModel):
    """Everything ``taskfit eval`` needs to run one evaluation."""

    model: str = Field("smollm2-135m-instruct", description="known model name or hf:<path or hub id>")
    backend: Literal["hf", "llamacpp", "openai"] = Field("hf", description="hf (transformers), llamacpp (GGUF in "
                                                         "process) or openai (an OpenAI-compatible server)")
    task: str = Field(description="built-in task name or path to a task YAML")
    strategy: Literal["zero_shot", "few_shot", "cot", "self_consistency", "carp", "ape"] = "zero_shot"
    strategy_args: dict[str, Any] = Field(default_factory=dict, description="options of the strategy")
    pool_split: str | None = Field(None, description="split demonstrations come from (default: the task's)")
    prompt: PromptOverride = Field(default_factory=lambda: PromptOverride(),
                                     description="replace prompt fields of the task")
    mode: Literal["loglikelihood", "generate"] | None = Field(
        None, description="answer mode; default: the task type's (generate for span and number tasks, "
                          "else loglikelihood)")
    data_dir: Path | None = None
    kb: Path | None = Field(None, description="KBQA: knowledge-base file (default: the evaluated split's triples)")
    split: str | None = None
    limit: int | None = Field(None, gt=0)
    sample: Literal["first", "random"] = Field("first", description="which --limit rows: the first ones, or a "
                                               "random sample (seeded by --seed, kept in data order)")
    seed: int = 1234
    output: Path | None = None
    batch_size: int = Field(16, gt=0)
    chat_template: bool = True
    max_tokens: int | None = Field(None, gt=0, description="generation budget; default from the task")
    bootstrap_samples: int = Field(1000, ge=0, description="bootstrap resamples for CIs; 0 disables them")
    threads: int | None = Field(None, gt=0, description="torch CPU threads; default: all cores")
    cache: bool = Field(True, description="answer repeated requests from the SQLite response cache")
    cache_path: Path | None = Field(None, description="response cache file "
                                    "(default $TASKFIT_HOME/cache/responses.sqlite)")
    base_url: str | None = Field(None, description="openai backend: server URL, e.g. http://127.0.0.1:8000/v1 "
                                 "(default $OPENAI_BASE_URL, else OpenAI's)")
    api_key: SecretStr | None = Field(None, description="openai backend: API key (default $OPENAI_API_KEY); "
                                      "never written to results")
    api: Literal["chat", "completions"] = Field("chat", description="openai backend: endpoint family")
    concurrency: int = Field(4, gt=0, description="requests in flight (openai) or server slots (llamacpp)")
    request_timeout: float = Field(120.0, gt=0, description="openai backend: seconds per request")
    max_retries: int = Field(5, ge=0, description="openai backend: retries of a failed request")
    adapter: Path | None = Field(None, description="hf backend: an adapter folder from `taskfit tune` (LoRA / IA3 "
                                 "merged into the weights, bottleneck adapters, prefix / prompt virtual tokens)")
    quantize: Literal["none", "int8"] = Field("none", description="hf backend: int8 dynamic quantization of the "
                                              "linear layers (output layer and MLP down projections kept fp32)")

    def backend_options(self) -> dict[str, Any]:
        """Constructor options of the chosen backend."""
        options: dict[str, Any] = {"chat_template": self.chat_template, "batch_size": self.batch_size,
                                   "threads": self.threads}
        if self.adapter is not None:
            if self.backend != "hf":
                raise UserError("--adapter works with the hf backend; merge it first (`taskfit merge`) to serve "
                                "the merged model elsewhere")
            options["adapter"] = self.adapter
        if self.quantize != "none":
            if self.backend != "hf":
                raise UserError("--quantize works with the hf backend; the llamacpp backend runs quantized GGUF "
                                "files as they are")
            options["quantize"] = self.quantize
        if self.backend == "llamacpp":
            options["parallel"] = self.concurrency
        elif self.backend == "openai":
            options |= {"base_url": self.base_url, "api": self.api, "concurrency": self.concurrency,
                        "timeout": self.request_timeout, "max_retries": self.max_retries,
                        "api_key": self.api_key.get_secret_value() if self.api_key else None}
        return options


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a YAML mapping of keys to values, got {type(data).__name__}")
    return data


def validate(model_cls: type[M], data: dict[str, Any], source: str) -> M:
    """Build ``model_cls`` from ``data`` or raise one :class:`UserError` line naming source and key."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise UserError(_describe(exc, model_cls, source)) from None


def _describe(exc: ValidationError, model_cls: type[BaseModel], source: str) -> str:
    """Turn the first pydantic error into one line a user can act on."""
    err = exc.errors()[0]
    loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(model_cls, err["loc"][:-1])
        return f"{source}: unknown key '{loc}'; allowed keys: {', '.join(allowed)}{more}"
    if err["type"] == "missing":
        return f"{source}: missing required key '{loc}'{more}"
    value = err.get("input")
    shown = repr(value) if not isinstance(value, dict) else "a mapping"
    return f"{source}: key '{loc}' has invalid value {shown}: {err['msg']}{more}"


def _allowed_keys(model_cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed at ``loc`` inside ``model_cls`` (best effort through nested models)."""
    current: Any = model_cls
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part)
        if field is None:
            break
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """Find a BaseModel class inside an annotation such as ``list[X]`` or ``X | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def load_run_config(config_path: str | Path | None, overrides: dict[str, Any],
                    strategy_args: dict[str, Any] | None = None, prompt: dict[str, Any] | None = None) -> RunConfig:
    """Merge a YAML config file (if any) with CLI overrides (flags win) into a validated RunConfig.

    ``strategy_args`` and ``prompt`` are merged key by key into the YAML's mappings of the same name.
    """
    data: dict[str, Any] = {}
    source = "command line"
    if config_path is not None:
        data = read_yaml(config_path)
        source = str(config_path)
    data.update({key: value for key, value in overrides.items() if value is not None})
    for key, extra in (("strategy_args", strategy_args), ("prompt", prompt)):
        if extra:
            base = data.get(key) or {}
            if not isinstance(base, dict):
                raise UserError(f"{source}: key '{key}' must be a mapping")
            data[key] = {**base, **extra}
    if "task" not in data:
        raise UserError(f"{source}: no task given; pass --task NAME (see `taskfit tasks`) or set 'task:' in the config")
    return validate(RunConfig, data, source)
