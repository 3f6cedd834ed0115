"""The task YAML schema: a task file maps 1:1 onto :class:`TaskConfig` (unknown keys rejected).

A task says where its data lives (a folder under ``--data-dir``, files next to the YAML, or a Hugging Face dataset),
which data columns fill the prompt template, what the labels are and how each is verbalized, how the prompt reads,
and which metrics score it (those that fit its type, :data:`TYPE_METRICS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from taskfit.strict import StrictModel

TaskType = Literal["classification", "regression", "multiple_choice", "span", "number", "kbqa"]

# The metrics that fit each task type; a task that names none reports the defaults.
TYPE_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "macro_f1"),
    "regression": ("spearman", "pearson"),
    "multiple_choice": ("accuracy", "mc2"),
    "span": ("exact_match", "f1"),
    "number": ("accuracy",),
    "kbqa": ("mrr", "map", "exact_match", "bleu", "rouge_l"),
}
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {**TYPE_METRICS, "multiple_choice": ("accuracy",)}


class LabelSpec(StrictModel):
    """One class: the value found in the data, the word the model says for it, and accepted synonyms."""

    value: str
    verbalizer: str | None = None
    aliases: list[str] = Field(default_factory=list)

    @property
    def word(self) -> str:
        """The verbalizer, defaulting to the label value itself."""
        return self.verbalizer if self.verbalizer is not None else self.value


class ChoicesSpec(StrictModel):
    """Where a multiple-choice row keeps its choices, and how they are shown."""

    column: str = "choices"
    labels_column: str | None = Field(None, description="0/1 flag per choice (several true answers, TruthfulQA MC2)")
    shuffle: bool = True
    shuffle_seed: int = 0
    header: str = "Choices:"


_MISSING = object()


def lookup(row: dict[str, Any], column: str, default: Any = _MISSING) -> Any:
    """``row[column]``, where ``a.b`` reaches into nested mappings (Hugging Face rows such as
    ``{"answers": {"text": [...]}}``); a missing column raises ``KeyError`` unless a default is given."""
    if column in row:
        return row[column]
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, dict) or part not in value:
            if default is _MISSING:
                raise KeyError(column)
            return default
        value = value[part]
    return value


class HFSource(StrictModel):
    """A Hugging Face dataset to use when no ``--data-dir`` is given (needs network or a warm cache)."""

    path: str
    name: str | None = None
    splits: dict[str, str] = Field(default_factory=dict, description="task split name -> HF split name")
    fields: dict[str, str] = Field(default_factory=dict, description="overrides of the task's field mapping")
    target: str | None = None
    label_map: dict[str, str] = Field(default_factory=dict)
    choices: ChoicesSpec | None = Field(None, description="multiple_choice: replaces the task's choices spec")


class PromptSpec(StrictModel):
    """Prompt pieces. The user turn is instruction, rendered input and output format, one per line."""

    system: str | None = None
    instruction: str = ""
    input_template: str
    output_format: str = ""
    answer_prefix: str = ""


class GenerationSpec(StrictModel):
    """Defaults for free-text answers."""

    max_tokens: int = Field(16, gt=0)
    stop: list[str] = Field(default_factory=lambda: ["\n"])


class DemoSpec(StrictModel):
    """A demonstration written in the task YAML (used with ``--pool-split demos``)."""

    fields: dict[str, str] = Field(description="template variable -> text")
    label: str | float | int | list[str] = Field(description="the answer, as the data's target column holds it")
    rationale: str | None = None


class KBSpec(StrictModel):
    """The knowledge base of a KBQA task and its retrieval."""

    triple_column: str = Field("triple", description="row field holding [subject, predicate, object]")
    file: str | None = Field(None, description="knowledge-base file (default: the triples of the evaluated split)")
    question_field: str = "question"
    top_k: int = Field(5, gt=0)
    header: str = "Knowledge:"


class TaskConfig(StrictModel):
    """A task YAML file, validated."""

    name: str
    description: str = ""
    type: TaskType = "classification"
    dataset: str | None = Field(None, description="folder name under --data-dir")
    data_files: dict[str, str] = Field(default_factory=dict, description="split -> file, relative to the YAML")
    hf: HFSource | None = None
    eval_split: str = "dev"
    pool_split: str = "train"
    fields: dict[str, str] = Field(description="template variable -> data column")
    target: str = "label"
    rationale: str | None = Field(None, description="data column with a worked rationale (few-shot CoT demos)")
    rationale_strip: list[str] = Field(default_factory=list, description="regexes removed from rationales")
    label_map: dict[str, str] = Field(default_factory=dict, description="raw gold value -> label value")
    labels: list[LabelSpec] = Field(default_factory=list, description="classification: the classes")
    score_range: tuple[float, float] = Field((0.0, 5.0), description="regression: lowest and highest score")
    choices: ChoicesSpec | None = Field(None, description="multiple_choice: where the choices are")
    kb: KBSpec | None = Field(None, description="kbqa: knowledge base and retrieval")
    prompt: PromptSpec
    metrics: list[str] = Field(default_factory=list, description="default: the task type's metrics")
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    demos: list[DemoSpec] = Field(default_factory=list, description="hand-written demos: --pool-split demos")

    @model_validator(mode="after")
    def _check_consistency(self) -> TaskConfig:
        allowed = TYPE_METRICS[self.type]
        if not self.metrics:
            self.metrics = list(DEFAULT_METRICS[self.type])
        wrong = [m for m in self.metrics if m not in allowed]
        if wrong:
            raise ValueError(f"metrics {wrong} do not fit a {self.type} task; allowed: {list(allowed)}")
        values = [label.value for label in self.labels]
        if self.type == "classification" and len(values) < 2:
            raise ValueError("a classification task needs at least 2 labels")
        if len(set(values)) != len(values):
            raise ValueError(f"labels must be distinct, got {values}")
        unknown = sorted(set(self.label_map.values()) - set(values))
        if unknown:
            raise ValueError(f"label_map maps to unknown labels {unknown}; labels are {values}")
        if self.type == "multiple_choice" and self.choices is None:
            self.choices = ChoicesSpec()
        if self.type == "kbqa" and self.kb is None:
            self.kb = KBSpec()
        if self.score_range[0] >= self.score_range[1]:
            raise ValueError(f"score_range must be [low, high] with low < high, got {list(self.score_range)}")
        if self.dataset is None and not self.data_files and self.hf is None:
            raise ValueError("a task needs a data source: 'dataset', 'data_files' or 'hf'")
        for i, demo in enumerate(self.demos):
            if self.type == "classification" and demo.label not in values:
                raise ValueError(f"demos[{i}].label {demo.label!r} is not one of {values}")
            if set(demo.fields) != set(self.fields):
                raise ValueError(f"demos[{i}].fields must have exactly the keys {sorted(self.fields)}")
        try:
            self.prompt.input_template.format(**{name: "" for name in self.fields})
        except KeyError as exc:
            raise ValueError(
                f"prompt.input_template uses {{{exc.args[0]}}}, which is not in fields {sorted(self.fields)}"
            ) from None
        except (IndexError, ValueError) as exc:  # "{0}", "{}", an unclosed "{"
            raise ValueError(f"prompt.input_template {self.prompt.input_template!r} is not a valid template "
                             f"({exc}); name the fields in braces, e.g. {{{next(iter(self.fields), 'text')}}}, "
                             "and write a literal brace as {{ or }}") from None
        return self


@dataclass(frozen=True)
class SplitRows:
    """The raw rows of one split, where they came from, and the column mapping that applies to them."""

    rows: list[dict[str, Any]]
    where: str
    fields: dict[str, str]
    target: str
    label_map: dict[str, str]
    choices: ChoicesSpec | None = None  # multiple_choice: the task's spec, or its Hugging Face source's
