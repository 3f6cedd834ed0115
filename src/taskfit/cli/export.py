"""``taskfit merge`` (an adapter into its base model) and ``taskfit export`` (a model as a GGUF file)."""

from __future__ import annotations

import argparse
import sys

from taskfit.cli.flags import add_flags, command, settings_of
from taskfit.settings import ExportSettings, MergeSettings


def register(sub) -> None:
    add_flags(command(sub, "merge", "merge a LoRA / IA3 adapter into its base model (a plain model folder)", merge),
              MergeSettings, required=True)
    add_flags(command(sub, "export", "write a tuned model as a GGUF file (Q4_0 ... Q8_0, F16, F32) for the llamacpp "
                      "backend", export), ExportSettings, required=True)


def merge(args: argparse.Namespace) -> int:
    from taskfit.models.export import merge

    s = settings_of(MergeSettings, args)
    out = merge(s.adapter, s.output)
    sys.stdout.write(f"merged model: {out} (use --model hf:{out})\n")
    return 0


def export(args: argparse.Namespace) -> int:
    from taskfit.models.export import export_gguf

    s = settings_of(ExportSettings, args)
    summary = export_gguf(s.model, s.output, adapter=s.adapter, qtype=s.type, template=s.template)
    sys.stdout.write(f"wrote {summary['output']} ({summary['bytes'] / 2**20:.1f} MiB, {summary['type']}); evaluate "
                     f"with `taskfit eval --backend llamacpp --model gguf:{summary['output']}`\n")
    return 0
