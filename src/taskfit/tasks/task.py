"""Task definitions: YAML files mapped 1:1 onto :class:`TaskConfig`, turned into :class:`Example` lists.

A task says where its data lives (a folder under ``--data-dir``, files next to the YAML, or a Hugging
Face dataset), which data columns fill the prompt template, what the labels are and how each is
verbalized, how the prompt reads, how a free-text answer is parsed and which metrics score it.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from taskfit.api import Example
from taskfit.config import StrictModel, read_yaml, validate
from taskfit.data.loading import load_hf_rows, load_rows
from taskfit.errors import UserError

log = logging.getLogger(__name__)

BUILTIN_DIR = "builtin"
DEMOS_SPLIT = "demos"  # the split name that means "the demonstrations written in the task YAML"


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
    type: Literal["classification", "regression", "multiple_choice", "span", "number", "kbqa"] = "classification"
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
        from taskfit.tasks.answers import ANSWER_SPACES

        space = ANSWER_SPACES[self.type]
        if not self.metrics:
            self.metrics = list(space.default_metrics)
        wrong = [m for m in self.metrics if m not in space.metrics]
        if wrong:
            raise ValueError(f"metrics {wrong} do not fit a {self.type} task; allowed: {list(space.metrics)}")
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
        return self


class Task:
    """A loaded task definition that can produce examples for a split."""

    def __init__(self, config: TaskConfig, source_path: Path | None = None):
        from taskfit.tasks.answers import ANSWER_SPACES

        self.config = config
        self.source_path = source_path
        self.space = ANSWER_SPACES[config.type](config)

    @property
    def name(self) -> str:
        return self.config.name

    def override_prompt(self, overrides: dict[str, Any]) -> None:
        """Replace prompt fields (``--instruction``, a run's ``prompt:``) for this loaded task."""
        if overrides:
            self.config = self.config.model_copy(update={"prompt": self.config.prompt.model_copy(update=overrides)})
            self.space.config = self.config

    @property
    def label_values(self) -> list[str]:
        return [label.value for label in self.config.labels]

    def examples(self, split: str | None = None, data_dir: Path | None = None, limit: int | None = None) -> list[Example]:
        """Load and map the rows of ``split`` (default: the task's eval split), validating every row."""
        split = split or self.config.eval_split
        if split == DEMOS_SPLIT:
            if not self.config.demos:
                raise UserError(f"task {self.name!r} has no 'demos:' written in its YAML for --pool-split {DEMOS_SPLIT}")
            demos = self.config.demos[:limit] if limit else self.config.demos
            where = f"task {self.name!r} demos"
            out = []
            for i, d in enumerate(demos):
                gold, meta = self.space.gold(d.label, {**d.fields, self.config.target: d.label}, i, where)
                out.append(Example(index=i, fields=dict(d.fields), gold=gold, rationale=d.rationale, meta=meta))
            return out
        rows, where, fields, target, label_map = self.rows(split, data_dir, limit)
        return [self._map_row(i, row, where, fields, target, label_map) for i, row in enumerate(rows)]

    def rows(self, split: str, data_dir: Path | None = None, limit: int | None = None):
        """The raw rows of ``split``, where they came from, and the field mapping that applies to them."""
        fields, target, label_map = self.config.fields, self.config.target, self.config.label_map
        if data_dir is not None:
            if not self.config.dataset:
                raise UserError(f"task {self.name!r} has no 'dataset' folder name, so --data-dir cannot be used with it")
            path = Path(data_dir) / self.config.dataset / f"{split}.jsonl"
            if not path.is_file() and path.parent.is_dir():
                have = sorted(p.stem for p in path.parent.glob("*.jsonl"))
                raise UserError(f"{path} not found; splits in {path.parent}: {', '.join(have) or 'none'} "
                                "(choose one with --split)")
            rows, where = load_rows(path, limit), str(path)
        elif split in self.config.data_files:
            base = self.source_path.parent if self.source_path else Path.cwd()
            path = base / self.config.data_files[split]
            rows, where = load_rows(path, limit), str(path)
        elif self.config.hf is not None:
            hf = self.config.hf
            hf_split = hf.splits.get(split, split)
            rows = load_hf_rows(hf.path, hf.name, hf_split, limit)
            where = f"hf:{hf.path}/{hf.name or ''}:{hf_split}"
            fields = {**fields, **hf.fields}
            target = hf.target or target
            label_map = {**label_map, **hf.label_map}
            if hf.choices is not None:
                self.config.choices = hf.choices
        else:
            known = sorted(self.config.data_files)
            raise UserError(
                f"task {self.name!r} has no data for split {split!r} without --data-dir; "
                f"its built-in splits are {known or 'none'}"
            )
        return rows, where, fields, target, label_map

    def _map_row(
        self, index: int, row: dict[str, Any], where: str, fields: dict[str, str], target: str, label_map: dict[str, str]
    ) -> Example:
        mapped = {}
        needs_target = not (self.config.type == "multiple_choice" and self.config.choices.labels_column)
        for name, column in {**fields, **({"__target__": target} if needs_target else {})}.items():
            value = lookup(row, column, None)
            if value is None:
                raise UserError(
                    f"{where} row {index + 1}: missing field {column!r} (mapped to {name if name != '__target__' else 'target'}); "
                    f"the row has {sorted(row)}"
                )
            mapped[name] = value
        raw_gold = mapped.pop("__target__", None)
        if label_map and self.config.type == "classification":
            raw_gold = label_map.get(str(raw_gold), raw_gold)
        gold, meta = self.space.gold(raw_gold, row, index, where)
        rationale = None
        if self.config.rationale is not None:
            if self.config.rationale not in row:
                raise UserError(f"{where} row {index + 1}: missing rationale field {self.config.rationale!r}")
            rationale = str(row[self.config.rationale])
            for pattern in self.config.rationale_strip:
                rationale = re.sub(pattern, "", rationale, flags=re.MULTILINE).strip()
        return Example(index=index, fields={k: str(v) for k, v in mapped.items()}, gold=gold, row=row,
                       rationale=rationale, meta=meta)


def _builtin_dir() -> Path:
    return Path(str(resources.files("taskfit.tasks").joinpath(BUILTIN_DIR)))


def list_tasks() -> dict[str, TaskConfig]:
    """All built-in tasks by name."""
    tasks = {}
    for path in sorted(_builtin_dir().glob("*.yaml")):
        config = validate(TaskConfig, read_yaml(path), str(path))
        tasks[config.name] = config
    return tasks


def load_task(name_or_path: str) -> Task:
    """Load a built-in task by name, or a task YAML by path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        return Task(validate(TaskConfig, read_yaml(candidate), str(candidate)), candidate)
    path = _builtin_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in _builtin_dir().glob("*.yaml")))
        raise UserError(f"unknown task {name_or_path!r}; built-in tasks: {known} (or give a path to a task YAML)")
    return Task(validate(TaskConfig, read_yaml(path), str(path)), path)
