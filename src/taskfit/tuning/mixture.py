"""Multi-task instruction tuning data (``taskfit tune --mixture MIX.yaml``): several tasks, each phrased several ways,
sampled by a rule, optionally with plain text and k-shot prompts.

- **Templates** are data (``tuning/templates.yaml``, or a list in the mixture file): a template replaces parts of the
  task's prompt section and is rendered by the code evaluation renders with (:func:`taskfit.prompting.prompts
  .task_prompt` on a copy of the task with that prompt), so a template that matches a task YAML renders exactly as
  ``taskfit eval`` renders that YAML. A template with a ``target`` turns the task around ("write a review that is
  {answer}"). One template is drawn per row with the run's seed.
- **Sampling** (Raffel et al. 2020; Wei et al. 2022): ``proportional`` to each task's rows capped at ``cap``,
  ``temperature`` (rows^(1/T)), or ``equal``; ``weight`` multiplies a task's share. Counts are rounded by largest
  remainder, so the mixture holds the declared shares exactly up to one row; a task asked for more rows than it has
  repeats them (a fresh seeded order each pass).
- **k-shot** (MetaICL, Min et al. 2022): the row's prompt carries k demonstrations of the same task and template, chosen
  and laid out by the few-shot strategy's own code (random selector, the row itself never among them).
- **Plain text** rows get a language-modelling loss on every token (mixed in to limit forgetting).

The run card's ``data.mixture`` lists, per task, the rows available and used and the rows per template.
"""

from __future__ import annotations

import copy
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from taskfit.api import Example, Message, Prompt, continuation_for
from taskfit.data.records import read_rows, text
from taskfit.data.sampling import sample_indices
from taskfit.errors import UserError
from taskfit.paths import read_utf8
from taskfit.prompting import prompts
from taskfit.prompting.context import StrategyContext
from taskfit.prompting.strategies import make_strategy
from taskfit.prompting.templates import fill
from taskfit.prompting.tokens import Pair, Sample, Text
from taskfit.settings import MixtureSpec, MixtureTask, MixtureTemplate, TuneConfig
from taskfit.strict import read_yaml, validate
from taskfit.tasks.task import Task, load_task

TASK_TEMPLATE = MixtureTemplate(name="task")


@lru_cache(maxsize=1)
def builtin_templates() -> dict[str, list[MixtureTemplate]]:
    text = resources.files("taskfit.tuning").joinpath("templates.yaml").read_text(encoding="utf-8")
    return {name: [MixtureTemplate.model_validate(t) for t in items] for name, items in yaml.safe_load(text).items()}


def read_mixture(path: Path) -> MixtureSpec:
    if not Path(path).is_file():
        raise UserError(f"--mixture {path}: no such file; give a mixture YAML (see README 'Multi-task tuning')")
    return validate(MixtureSpec, read_yaml(path), str(path))


def mixture_counts(sizes: Sequence[int], weights: Sequence[float], spec: MixtureSpec) -> list[int]:
    """Rows per task under the spec's sampling rule, summing to ``spec.total`` (default: the capped sizes)."""
    if spec.sampling == "proportional":
        raw = [min(n, spec.cap) * w for n, w in zip(sizes, weights)]
    elif spec.sampling == "temperature":
        raw = [(n * w) ** (1 / spec.temperature) for n, w in zip(sizes, weights)]
    else:
        raw = [float(w) for w in weights]
    total = spec.total or sum(min(n, spec.cap) for n in sizes)
    shares = [r / sum(raw) * total for r in raw]
    counts = [int(s) for s in shares]
    for i in sorted(range(len(shares)), key=lambda i: shares[i] - counts[i], reverse=True)[: total - sum(counts)]:
        counts[i] += 1
    return counts


def templates_for(task: Task, entry: MixtureTask) -> list[MixtureTemplate]:
    if entry.templates == "task":
        return [TASK_TEMPLATE]
    if entry.templates == "builtin":
        found = builtin_templates().get(task.name)
        if not found:
            raise UserError(f"mixture task {task.name!r}: taskfit has no templates for it; list templates under "
                            f"'templates:' (or templates: task for its own prompt only); built-in templates exist "
                            f"for {', '.join(sorted(builtin_templates()))}")
        return found
    return entry.templates


class TemplatedTask:
    """A task in one template: its prompts rendered by evaluation's code on a copy of the task."""

    def __init__(self, task: Task, template: MixtureTemplate, pool: list[Example], k_shot: int, seed: int):
        self.template = template
        overrides = {key: getattr(template, key) for key in ("system", "input_template", "output_format",
                                                             "answer_prefix")
                     if getattr(template, key) is not None}
        if template.instruction is not None and template.target is None:
            overrides["instruction"] = template.instruction
        self.task = copy.copy(task)
        self.task.space = copy.copy(task.space)
        self.task.override_prompt(overrides)
        self.few_shot = None
        if k_shot and template.target is None:
            context = StrategyContext(self.task, "loglikelihood", render=lambda prompt: "", seed=seed, pool=pool)
            self.few_shot = make_strategy("few_shot", context, {"k": k_shot, "selector": "random"})
            self.few_shot.demos.prepare(pool)

    def sample(self, example: Example) -> Pair:
        if self.template.target is not None:  # turned around: the answer is in the prompt, a field is the target
            answer = self.task.space.word(example)
            values = {**example.fields, "answer": answer}
            shown = replace(example, fields=values)
            instruction = fill(self.template.instruction or self.task.config.prompt.instruction, **values)
            prompt = Prompt((*prompts.system_messages(self.task),
                             Message("user", prompts.user_text(self.task, shown, "loglikelihood",
                                                               instruction=instruction))),
                            self.task.config.prompt.answer_prefix)
            return Pair(prompt, continuation_for(prompt, fill(self.template.target, **values)))
        if self.few_shot is not None:
            messages = self.few_shot.messages(example, self.few_shot.demos.select(example))
            prompt = Prompt(tuple(messages), self.few_shot.ask.answer_prefix())
        else:
            prompt = prompts.task_prompt(self.task, example)
        return Pair(prompt, prompts.gold_continuation(self.task, example, prompt))


def build_mixture(config: TuneConfig) -> tuple[list[Sample], dict[str, Any]]:
    """The mixture's training samples (shuffled with the run's seed) and the run card's description of them."""
    spec = read_mixture(config.mixture)
    rng = random.Random(config.seed)
    loaded = []
    for entry in spec.tasks:
        task = load_task(entry.task)
        split = entry.split or task.config.pool_split
        examples = task.examples(split, config.data_dir)
        if entry.limit:
            examples = [examples[i] for i in sample_indices(len(examples), entry.limit, config.seed)]
        if not examples:
            raise UserError(f"mixture task {task.name!r}: its {split!r} split has no rows")
        task.prepare_answers(examples, split, config.data_dir, None)
        loaded.append((entry, task, split, examples))
    counts = mixture_counts([len(ex) for _, _, _, ex in loaded], [e.weight for e, _, _, _ in loaded], spec)
    samples: list[Sample] = []
    described = []
    for (entry, task, split, examples), count in zip(loaded, counts):
        templated = [TemplatedTask(task, t, examples, spec.k_shot, config.seed) for t in templates_for(task, entry)]
        used: Counter[str] = Counter()
        for example in draw_rows(examples, count, rng):
            chosen = rng.choice(templated)
            used[chosen.template.name] += 1
            samples.append(chosen.sample(example))
        described.append({"task": task.name, "split": split, "available": len(examples), "rows": count,
                          "share": round(count / max(1, sum(counts)), 4),
                          "templates": {t.template.name: used[t.template.name] for t in templated}})
    plain = 0
    if spec.plain_text is not None:
        texts = read_plain_text(spec.plain_text.file)
        plain = round(spec.plain_text.share / (1 - spec.plain_text.share) * len(samples))
        samples += [Text(text) for text in draw_rows(texts, plain, rng)]
    rng.shuffle(samples)
    info = {"mixture": {"file": str(config.mixture), "sampling": spec.sampling, "cap": spec.cap,
                        "temperature": spec.temperature, "k_shot": spec.k_shot, "tasks": described,
                        "plain_text_rows": plain},
            "n": len(samples)}
    return samples, info


def draw_rows(rows: Sequence[Any], count: int, rng: random.Random) -> list[Any]:
    """``count`` rows without repeats while they last, then another seeded pass."""
    out: list[Any] = []
    while len(out) < count:
        order = list(range(len(rows)))
        rng.shuffle(order)
        out += [rows[i] for i in order[: count - len(out)]]
    return out


def read_plain_text(path: Path) -> list[str]:
    """Paragraphs of a text file (split at blank lines), or the 'text' of each JSONL row (read as training files
    are: errors name file:line)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        rows, _ = read_rows(path, "plain_text file", '{"text": "..."}')
        texts = []
        for where, row in rows:
            if not isinstance(row, dict):
                raise UserError(f"{where}: expected an object with a 'text' string")
            texts.append(text(row, "text", where))
    elif path.is_file():
        texts = [p.strip() for p in read_utf8(path).split("\n\n") if p.strip()]
    else:
        raise UserError(f"mixture plain_text file {path} not found")
    if not any(t.strip() for t in texts):
        raise UserError(f"mixture plain_text file {path} holds no text")
    return texts
