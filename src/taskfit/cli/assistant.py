"""The assistant and its feedback: ``serve`` (the web page, the arena and ``/v1``), ``feedback export`` /
``feedback leaderboard``, and ``loop`` (one round of retraining from the feedback, gated)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from taskfit.cli.flags import add_flags, command, settings_from, settings_of
from taskfit.errors import UserError
from taskfit.settings import (
    LOOP_SECTIONS,
    SERVE_SECTIONS,
    FeedbackExportSettings,
    LeaderboardSettings,
    load_loop_config,
    load_serve_config,
)


def register(sub) -> None:
    add_flags(command(sub, "serve", "the web QA assistant (streaming chat page whose feedback becomes training data) "
                      "and an OpenAI-compatible API, on one server", serve, config="serve"), SERVE_SECTIONS)
    fb = command(sub, "feedback", "the assistant's feedback as training data")
    fb_sub = fb.add_subparsers(dest="feedback_command", required=True)
    add_flags(command(fb_sub, "export", "write feedback as TRL rows: dpo pairs, kto rated rows or sft rows", export),
              FeedbackExportSettings, required=True)
    add_flags(command(fb_sub, "leaderboard", "the arena's votes as ratings: Bradley–Terry with ties, bootstrap 95%% "
                      "CIs, each pair's difference and sign test", leaderboard), LeaderboardSettings, required=True)
    add_flags(command(sub, "loop", "one round of retraining from the assistant's feedback: export what is new, align "
                      "a candidate from the served model, gate it (task metric not worse, held-out feedback pairs "
                      "better), promote it to a running server or keep the served one", loop, config="loop"),
              LOOP_SECTIONS)


def serve(args: argparse.Namespace) -> int:
    from taskfit.serve import serve

    serve(load_serve_config(args.config, settings_from(args)))
    return 0


def open_store(db: Path | None):
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

    s = settings_of(FeedbackExportSettings, args)
    out = output_file(s.output)  # checked before any work
    store = open_store(s.db)
    try:
        rows = export_rows(store, s.format, parse_where(s.where))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        store.close()
    write_jsonl(out, rows)
    sys.stdout.write(f"wrote {len(rows)} {s.format} rows to {out}\n")
    return 0


def leaderboard(args: argparse.Namespace) -> int:
    from taskfit.serve.arena import arena_leaderboard, leaderboard_markdown

    s = settings_of(LeaderboardSettings, args)
    store = open_store(s.db)
    try:
        board = arena_leaderboard(store, resamples=s.resamples, seed=s.seed)
    except ValueError as exc:
        raise UserError(f"{exc}: votes come from the arena page of `taskfit serve --arena-adapter DIR`") from None
    finally:
        store.close()
    sys.stdout.write(json.dumps(board.as_dict(), indent=2) + "\n" if s.as_json else leaderboard_markdown(board))
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
