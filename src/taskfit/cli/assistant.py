"""The assistant and its feedback: ``serve`` (the web page, the arena and ``/v1``), ``feedback export`` /
``feedback leaderboard``, and ``loop`` (one round of retraining from the feedback, gated)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from taskfit.cli.flags import add_flags, command, settings_from
from taskfit.errors import UserError
from taskfit.settings import LOOP_SECTIONS, SERVE_SECTIONS, load_loop_config, load_serve_config

DB_HELP = "the assistant's database (default $TASKFIT_HOME/assistant.sqlite)"


def register(sub) -> None:
    add_flags(command(sub, "serve", "the web QA assistant (streaming chat page whose feedback becomes training data) "
                      "and an OpenAI-compatible API, on one server", serve, config="serve"), SERVE_SECTIONS)
    fb = command(sub, "feedback", "the assistant's feedback as training data")
    fb_sub = fb.add_subparsers(dest="feedback_command", required=True)
    fe = command(fb_sub, "export", "write feedback as TRL rows: dpo pairs, kto rated rows or sft rows", export)
    fe.add_argument("--as", dest="fmt", required=True, choices=["dpo", "kto", "sft"])
    fe.add_argument("--db", help=DB_HELP)
    fe.add_argument("--where", action="append", metavar="CRITERION=good|bad", help="only answers users rated so on "
                    "a criterion (serve --criteria), e.g. correct=bad: only answers rated incorrect become rejected "
                    "(repeatable: all must hold)")
    fe.add_argument("--output", required=True, help="JSONL file to write (`taskfit align --data` / `taskfit tune "
                    "--train-file` read it)")
    fl = command(fb_sub, "leaderboard", "the arena's votes as ratings: Bradley–Terry with ties, bootstrap 95%% CIs, "
                 "each pair's difference and sign test", leaderboard)
    fl.add_argument("--db", help=DB_HELP)
    fl.add_argument("--json", action="store_true", help="print JSON instead of markdown tables")
    fl.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the votes (default 1000)")
    fl.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (default 0)")
    add_flags(command(sub, "loop", "one round of retraining from the assistant's feedback: export what is new, align "
                      "a candidate from the served model, gate it (task metric not worse, held-out feedback pairs "
                      "better), promote it to a running server or keep the served one", loop, config="loop"),
              LOOP_SECTIONS)


def serve(args: argparse.Namespace) -> int:
    from taskfit.serve import serve

    serve(load_serve_config(args.config, settings_from(args)))
    return 0


def open_store(db: str | None):
    """The assistant's store at ``--db``; an error naming the flag when there is none."""
    from taskfit.serve import default_db
    from taskfit.serve.store import Store

    path = Path(db) if db else default_db()
    if not path.is_file():
        raise UserError(f"no assistant database at {path}; pass --db (the file `taskfit serve --db` wrote)")
    return Store(path)


def export(args: argparse.Namespace) -> int:
    from taskfit.paths import output_file
    from taskfit.runs import write_jsonl
    from taskfit.serve.export import export_rows, parse_where

    out = output_file(args.output)  # checked before any work
    store = open_store(args.db)
    try:
        rows = export_rows(store, args.fmt, parse_where(args.where))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        store.close()
    write_jsonl(out, rows)
    sys.stdout.write(f"wrote {len(rows)} {args.fmt} rows to {out}\n")
    return 0


def leaderboard(args: argparse.Namespace) -> int:
    from taskfit.serve.arena import arena_leaderboard, leaderboard_markdown

    if args.resamples < 1:
        raise UserError("--resamples must be at least 1")
    store = open_store(args.db)
    try:
        board = arena_leaderboard(store, resamples=args.resamples, seed=args.seed)
    except ValueError as exc:
        raise UserError(f"{exc}: votes come from the arena page of `taskfit serve --arena-adapter DIR`") from None
    finally:
        store.close()
    sys.stdout.write(json.dumps(board.as_dict(), indent=2) + "\n" if args.json else leaderboard_markdown(board))
    return 0


def loop(args: argparse.Namespace) -> int:
    from taskfit.loop import Policy, run_round

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
        candidate = Policy(**state["candidate"])
        sys.stdout.write("the server now serves the candidate\n" if state.get("switched") else
                         f"restart the assistant with: taskfit serve --task {config.task} {candidate.flags()}\n")
    return 0
