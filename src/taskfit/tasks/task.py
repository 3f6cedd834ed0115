"""Loaded tasks: a validated :class:`~taskfit.tasks.schema.TaskConfig` with its answer space, turned into
:class:`~taskfit.api.Example` lists split by split."""

from __future__ import annotations

import logging
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

from taskfit.api import Example, Outcome
from taskfit.data.loading import load_hf_rows, load_rows
from taskfit.errors import UserError
from taskfit.strict import read_yaml, validate
from taskfit.tasks.answers import ANSWER_SPACES
from taskfit.tasks.schema import SplitRows, TaskConfig, lookup

log = logging.getLogger(__name__)
_ABSENT = object()

BUILTIN_DIR = "builtin"
DEMOS_SPLIT = "demos"  # the split name that means "the demonstrations written in the task YAML"


class Task:
    """A loaded task definition that can produce examples for a split."""

    def __init__(self, config: TaskConfig, source_path: Path | None = None):
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

    def sample_record(self, example: Example, outcome: Outcome) -> dict[str, Any]:
        """One line of samples.jsonl: the example, what the answerer did, and the per-example metric inputs."""
        return {
            "index": example.index,
            "input": example.meta.get("uncut_fields", example.fields),  # the row's own (prompt: what was read)
            **({"choices": example.meta["choices"]} if "choices" in example.meta else {}),
            **({"truncated": example.meta["truncated"]} if "truncated" in example.meta else {}),
            "prompt": outcome.prompt,
            "response": outcome.response,
            "prediction": outcome.prediction,
            "gold": example.gold,
            "parse_ok": outcome.parse_ok,
            **outcome.extra,
            **self.space.score(example, outcome.prediction, outcome.extra),
        }

    @property
    def label_values(self) -> list[str]:
        return [label.value for label in self.config.labels]

    def examples(self, split: str | None = None, data_dir: Path | None = None,
                 limit: int | None = None) -> list[Example]:
        """Load and map the rows of ``split`` (default: the task's eval split), validating every row."""
        split = split or self.config.eval_split
        if split == DEMOS_SPLIT:
            if not self.config.demos:
                raise UserError(f"task {self.name!r} has no 'demos:' written in its YAML "
                                f"for --pool-split {DEMOS_SPLIT}")
            demos = self.config.demos[:limit] if limit else self.config.demos
            where = f"task {self.name!r} demos"
            out = []
            for i, d in enumerate(demos):
                gold, meta = self.space.gold(d.label, {**d.fields, self.config.target: d.label}, i, where)
                out.append(Example(index=i, fields=dict(d.fields), gold=gold, rationale=d.rationale, meta=meta))
            return out
        found = self.rows(split, data_dir, limit)
        if not found.rows:
            raise UserError(f"{found.where} has no rows (task {self.name!r}, split {split!r}); is the file empty?")
        return [self._map_row(i, row, found) for i, row in enumerate(found.rows)]

    def file_examples(self, path: str | Path) -> list[Example]:
        """The rows of a file in this task's own columns (``taskfit synth``'s output, or rows a user wrote), mapped
        and validated as a split's rows are."""
        if not Path(path).is_file():
            raise UserError(f"--train-file {path} not found (with --task: a JSONL file in the task's own columns, "
                            f"such as `taskfit synth --task {self.name}` writes)")
        c = self.config
        found = SplitRows(load_rows(path), str(path), c.fields, c.target, c.label_map, c.choices)
        if not found.rows:
            raise UserError(f"{path} has no rows")
        return [self._map_row(i, row, found) for i, row in enumerate(found.rows)]

    def prepare_answers(self, examples: list[Example], split: str, data_dir: Path | None, kb: Path | None) -> None:
        """Set up the answer space for a run (KBQA builds its knowledge base: a file, or the whole split's triples)."""
        split_rows = self.rows(split, data_dir) if self.space.needs_split_rows(kb) else None
        self.space.setup(examples, kb=kb, split_rows=split_rows)

    def rows(self, split: str, data_dir: Path | None = None, limit: int | None = None) -> SplitRows:
        """The raw rows of ``split``, where they came from, and the field mapping that applies to them.

        A Hugging Face source may describe multiple-choice columns of its own (``hf.choices``); they apply to its
        rows (the task's config is never changed)."""
        fields, target, label_map = self.config.fields, self.config.target, self.config.label_map
        choices = self.config.choices
        if data_dir is None and self.config.dataset and split not in self.config.data_files:
            data_dir = default_data_dir()
        if data_dir is not None:
            if not self.config.dataset:
                raise UserError(f"task {self.name!r} has no 'dataset' folder name, "
                                "so --data-dir cannot be used with it")
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
            choices = hf.choices or choices
        else:
            known = sorted(self.config.data_files)
            raise UserError(
                f"task {self.name!r} has no data for split {split!r} without --data-dir; "
                f"its built-in splits are {known or 'none'}"
            )
        return SplitRows(rows, where, fields, target, label_map, choices)

    def _map_row(self, index: int, row: dict[str, Any], found: SplitRows) -> Example:
        where, fields, target, label_map = found.where, found.fields, found.target, found.label_map
        mapped = {}
        needs_target = not (self.config.type == "multiple_choice" and found.choices.labels_column)
        for name, column in {**fields, **({"__target__": target} if needs_target else {})}.items():
            value = lookup(row, column, _ABSENT)
            if value is None:
                raise UserError(f"{where} row {index + 1}: field {column!r} "
                                f"(mapped to {name if name != '__target__' else 'target'}) is null; give it a value "
                                "or leave the row out")
            if value is _ABSENT:
                raise UserError(
                    f"{where} row {index + 1}: missing field {column!r} "
                    f"(mapped to {name if name != '__target__' else 'target'}); "
                    f"the row has {sorted(row)}"
                )
            mapped[name] = value
        raw_gold = mapped.pop("__target__", None)
        if label_map and self.config.type == "classification":
            raw_gold = label_map.get(str(raw_gold), raw_gold)
        gold, meta = self.space.gold(raw_gold, row, index, where, found.choices)
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


def default_data_dir() -> Path | None:
    """``$TASKFIT_DATA_DIR``: where tasks with a dataset folder look when no ``--data-dir`` is given."""
    value = os.environ.get("TASKFIT_DATA_DIR")
    return Path(value) if value else None


def load_task(name_or_path: str) -> Task:
    """Load a built-in task by name, or a task YAML by path."""
    candidate = Path(name_or_path)
    if candidate.is_dir():
        yamls = sorted(p.name for p in candidate.glob("*.y*ml"))
        raise UserError(f"--task {candidate} is a directory; give a task YAML file"
                        + (f" (it holds {', '.join(yamls[:5])})" if yamls else "") + " or a built-in task name")
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        return Task(validate(TaskConfig, read_yaml(candidate), str(candidate)), candidate)
    path = _builtin_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in _builtin_dir().glob("*.yaml")))
        raise UserError(f"unknown task {name_or_path!r}; built-in tasks: {known} (or give a path to a task YAML)")
    return Task(validate(TaskConfig, read_yaml(path), str(path)), path)
