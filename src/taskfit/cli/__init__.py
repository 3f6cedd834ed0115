"""The ``taskfit`` command. One module per group of subcommands, each registering its parsers and what they run:
:mod:`.evaluate` (``eval``, ``tasks``, ``models``), :mod:`.compare` (``compare-results``, ``report``), :mod:`.grid`
(``grid``, ``fit``), :mod:`.train` (``tune``, ``synth``, ``reward``, ``align``), :mod:`.assistant` (``serve``,
``feedback``, ``loop``), :mod:`.export` (``merge``, ``export``). Flags of the commands that read a YAML of settings
are generated from the settings models (:mod:`.flags`), so each is also a YAML key with the same help.

Bad input (a :class:`~taskfit.errors.UserError`) prints one line and exits with code 2; results already written stay
on disk. Subcommands import their workflow lazily, so ``taskfit tasks`` never pays for torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from taskfit import __version__
from taskfit.cli import assistant, compare, evaluate, export, grid, train
from taskfit.cli.flags import VERBOSE_HELP, add_flags, parse_key_values, settings_from
from taskfit.errors import ServerError, UserError

__all__ = ["add_flags", "build_parser", "main", "parse_key_values", "settings_from"]
GROUPS = (evaluate, train, export, compare, grid, assistant)
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
log = logging.getLogger("taskfit")


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and flag."""
    parser = argparse.ArgumentParser(prog="taskfit", description="Fit an LLM to your task and measure every way.")
    parser.add_argument("--version", action="version", version=f"taskfit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = "DEBUG" if args.verbose else os.environ.get("TASKFIT_LOG_LEVEL", "INFO").upper()
    if level not in LEVELS:
        sys.stderr.write(f"taskfit: error: TASKFIT_LOG_LEVEL={level} is not a level; use DEBUG, INFO, WARNING, "
                         "ERROR or CRITICAL\n")
        return 2
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.run(args)
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
