"""``taskfit merge`` (an adapter into its base model) and ``taskfit export`` (a model as a GGUF file)."""

from __future__ import annotations

import argparse
import sys

from taskfit.cli.flags import command, default_of
from taskfit.models.catalog import GGUF_TYPES
from taskfit.settings import ModelSection


def register(sub) -> None:
    mg = command(sub, "merge", "merge a LoRA / IA3 adapter into its base model (a plain model folder)", merge)
    mg.add_argument("adapter", help="adapter folder from `taskfit tune`")
    mg.add_argument("output", help="folder for the merged model (use it as --model hf:<folder>)")
    ex = command(sub, "export", "write a tuned model as a GGUF file (Q4_0 ... Q8_0, F16, F32) for the llamacpp "
                 "backend", export)
    ex.add_argument("output", help="the .gguf file to write")
    ex.add_argument("--model", default=default_of(ModelSection, "model"),
                    help="base model, or hf:<folder> of a full fine-tune")
    ex.add_argument("--adapter", help="LoRA / IA3 adapter folder from `taskfit tune`, merged before export")
    ex.add_argument("--type", dest="qtype", default="q8_0", choices=list(GGUF_TYPES),
                    help="weight type; bits per weight: " + ", ".join(f"{k} {v:g}" for k, v in GGUF_TYPES.items()))
    ex.add_argument("--template", help="a GGUF of the base model to copy tokenizer and metadata from "
                    "(default: the embedded model's own file)")


def merge(args: argparse.Namespace) -> int:
    from taskfit.models.export import merge

    out = merge(args.adapter, args.output)
    sys.stdout.write(f"merged model: {out} (use --model hf:{out})\n")
    return 0


def export(args: argparse.Namespace) -> int:
    from taskfit.models.export import export_gguf

    summary = export_gguf(args.model, args.output, adapter=args.adapter, qtype=args.qtype, template=args.template)
    sys.stdout.write(f"wrote {summary['output']} ({summary['bytes'] / 2**20:.1f} MiB, {summary['type']}); evaluate "
                     f"with `taskfit eval --backend llamacpp --model gguf:{summary['output']}`\n")
    return 0
