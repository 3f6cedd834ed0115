"""``taskfit loop``: one round of retraining from the assistant's feedback, behind a gate.

1. **Data**: the feedback events and arena votes no promoted round has trained on (a refused round's events stay
   available to the next), exported in the method's format; the round and the events it used are recorded in the
   assistant's database (lineage). Fewer than ``--min-new-events`` events no round has seen: nothing to do.
2. **Candidate**: `taskfit align` from the served model / adapter on that data, ``--dev-share`` of its pairs held
   out.
3. **Gate**: (a) the task metric on ``--limit`` held-out task rows, candidate vs served, paired bootstrap; (b) the
   held-out feedback pairs: the candidate's implicit reward (β log π_candidate / π_served) must rank the preferred
   answer higher, tested with an exact sign test over the pairs.
4. **Decision**: promote only if the task metric's 95% CI of candidate − served stays above ``−non_inferiority``
   AND the pairs favour the candidate with p < ``alpha``; otherwise keep the served model and say why. A report of
   the two evaluations (`taskfit report`) and the decision are written to the round's folder.
5. **Promotion**: ``--server URL`` is told to switch (``POST /api/admin/serve``, the admin token); otherwise the
   restart command is printed.

Each step leaves its output in the round's folder and is skipped when that output is complete, so the same command
resumes a cut round; nothing served changes before step 5.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskfit.compare import compare_runs
from taskfit.errors import UserError
from taskfit.evaluation.run import evaluate
from taskfit.paths import output_folder
from taskfit.report import render
from taskfit.runs import RUN_CARD, read_run_card, write_json, write_jsonl
from taskfit.serve import default_db
from taskfit.serve.export import export_rows
from taskfit.serve.store import Store
from taskfit.settings import LoopConfig, RunConfig, load_align_config
from taskfit.strict import validate
from taskfit.tuning.align import train_align

log = logging.getLogger(__name__)

STATE = "round.json"


@dataclass(frozen=True)
class Policy:
    """A model as `taskfit eval` and `taskfit serve` take it."""

    model: str
    adapter: str | None

    def flags(self) -> str:
        return f"--model {self.model}" + (f" --adapter {self.adapter}" if self.adapter else "")

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "adapter": self.adapter}


def run_round(config: LoopConfig) -> dict[str, Any]:
    """One round (resumed where its folder says it stopped); returns the round's record."""
    out = output_folder(config.output)  # checked before any work
    state_file = out / STATE
    if out.is_dir() and any(out.iterdir()) and not state_file.is_file():
        raise UserError(f"--output {out} holds something other than a `taskfit loop` round; choose another folder "
                        "(the same folder resumes a round)")
    db = Path(config.db) if config.db else default_db()
    if not db.is_file():
        raise UserError(f"no assistant database at {db}; pass --db (the file `taskfit serve --db` wrote)")
    out.mkdir(parents=True, exist_ok=True)
    state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else {}
    if state.get("decision"):
        log.info("round %s already decided: %s", state["round"], state["decision"]["outcome"])
        if state["decision"]["promote"] and not state.get("switched") and config.server:
            state["switched"] = _switch(config, Policy(**state["candidate"]))  # the switch that failed last time
            write_json(state_file, state)
        return state
    served = Policy(config.served_model, str(config.served_adapter) if config.served_adapter else None)
    if "served" in state and Policy(**state["served"]) != served:  # a resumed round keeps what it started from
        log.warning("this round started from %s; resuming from that, not %s", Policy(**state["served"]).flags(),
                    served.flags())
        served = Policy(**state["served"])
    store = Store(db)
    try:
        if "round" not in state:
            state = _start(store, config, served, out)
            if state.get("skipped"):
                return state
            write_json(state_file, state)
        try:
            candidate = _candidate(config, served, out)
            state["candidate"] = candidate.as_dict()
            write_json(state_file, state)
            gate = _gate(config, served, candidate, out)
            state["decision"] = gate
            state["report"] = _report(out, gate)
            write_json(state_file, state)
        except BaseException as exc:
            store.finish_round(state["round"], "failed", None, {"error": f"{type(exc).__name__}: {exc}"})
            raise
        store.finish_round(state["round"], "promoted" if gate["promote"] else "kept",
                           json.dumps(candidate.as_dict()), gate)
    finally:
        store.close()
    if gate["promote"]:
        state["switched"] = _switch(config, candidate)
        write_json(state_file, state)
    return state


def _start(store, config: LoopConfig, served: Policy, out: Path) -> dict[str, Any]:
    """Choose and export the round's events; record the round (lineage)."""
    rounds = store.rounds()
    trained = {e for r in rounds if r["status"] == "promoted" for e in r["events"]}
    seen = {e for r in rounds for e in r["events"]}
    rows = [r for r in export_rows(store, config.method) if r["feedback_id"] not in trained]
    events = sorted({r["feedback_id"] for r in rows})  # the events that give rows in this method
    new = [e for e in events if e not in seen]
    if not rows:
        stored = {e["feedback_id"] for e in store.feedback_events()} | {v["vote_id"] for v in store.arena_votes()}
        if stored - seen:
            raise UserError(f"{len(stored - seen)} new feedback event(s) but no {config.method} rows: dpo needs "
                            "better answers, picks or decided arena votes; kto takes thumbs too (--method kto)")
    if len(new) < config.min_new_events:
        message = (f"{len(new)} feedback event(s) or vote(s) no round has used (and {len(events)} not yet trained "
                   f"on); --min-new-events is {config.min_new_events}: nothing to do")
        log.info(message)
        return {"skipped": message, "events": len(events), "new_events": len(new)}
    data = out / f"feedback-{config.method}.jsonl"
    write_jsonl(data, rows)
    round_id = uuid.uuid4().hex
    store.start_round(round_id, str(out.resolve()), json.dumps(served.as_dict()), events)
    log.info("round %s: %d %s rows from %d events (%d new)", round_id, len(rows), config.method, len(events),
             len(new))
    return {"round": round_id, "served": served.as_dict(), "method": config.method, "data": str(data),
            "rows": len(rows), "events": len(events), "new_events": len(new), "event_ids": events}


def _candidate(config: LoopConfig, served: Policy, out: Path) -> Policy:
    """Align from the served policy on the round's data (skipped when its folder has a finished run card)."""
    folder = candidate_folder(out)
    if not (folder / RUN_CARD).is_file():
        overrides: dict[str, Any] = {
            "method": config.method, "model": served.model, "adapter": served.adapter,
            "data": [str(out / f"feedback-{config.method}.jsonl")], "output": str(folder),
            "dev_share": config.dev_share, "seed": config.seed, "epochs": config.epochs,
            "max_steps": config.max_steps, "batch_size": config.batch_size}
        overrides |= {k: v for k, v in (("lr", config.lr), ("beta", config.beta)) if v is not None}
        if folder.exists():  # a cut training run: start it again
            import shutil

            shutil.rmtree(folder)
        train_align(load_align_config(None, {k: v for k, v in overrides.items() if v is not None}))
    evaluated = read_run_card(folder)["evaluate_with"]  # align says how its output loads (merged or an adapter)
    return Policy(evaluated["model"], evaluated.get("adapter"))


def candidate_folder(out: Path) -> Path:
    """Where a round's candidate is written: named after the round, so reports and later rounds tell them apart."""
    return out / f"{out.name}-candidate"


def _evaluate(config: LoopConfig, policy: Policy, folder: Path) -> Path:
    run = validate(RunConfig, {"task": config.task, "split": config.split, "data_dir": config.data_dir,
                               "kb": config.kb, "limit": config.limit, "seed": config.seed, "backend": "hf",
                               "model": policy.model, "adapter": policy.adapter, "output": folder,
                               "cache": False}, "taskfit loop")
    evaluate(run)
    return folder


def _gate(config: LoopConfig, served: Policy, candidate: Policy, out: Path) -> dict[str, Any]:
    served_run = _evaluate(config, served, out / "eval" / "served")
    candidate_run = _evaluate(config, candidate, out / "eval" / "candidate")
    compared = compare_runs(served_run, candidate_run, seed=config.seed)
    primary = compared["comparisons"][0]  # the task's first metric
    task_ok = primary["ci_low"] > -config.non_inferiority
    dev = read_run_card(candidate_folder(out)).get("dev")
    reasons = []
    if not task_ok:
        reasons.append(f"{primary['metric']} may be worse by more than {config.non_inferiority}: candidate - served "
                       f"{primary['diff']:+.4f}, 95% CI [{primary['ci_low']:+.4f}, {primary['ci_high']:+.4f}] on "
                       f"{compared['n']} held-out rows")
    if not dev:
        preference_ok = False
        reasons.append("no held-out feedback pairs to test the candidate on (more feedback, or a larger --dev-share)")
    else:
        preference_ok = dev["ranked_right"] > dev["ranked_wrong"] and dev["sign_p"] < config.alpha
        if not preference_ok:
            reasons.append(f"the held-out feedback pairs do not favour the candidate: {dev['ranked_right']} ranked "
                           f"right, {dev['ranked_wrong']} wrong of {dev['n']}, sign test p = {dev['sign_p']:.3g} "
                           f"(needs < {config.alpha})")
    promote = task_ok and preference_ok
    return {"promote": promote, "outcome": "promote" if promote else "keep the served model",
            "reasons": reasons or [f"{primary['metric']} not worse beyond {config.non_inferiority} and the held-out "
                                   f"pairs favour the candidate (p = {dev['sign_p']:.3g})"],
            "task_metric": {**primary, "n": compared["n"], "non_inferiority": config.non_inferiority},
            "preference": dev, "alpha": config.alpha, "served": served.as_dict(),
            "candidate": candidate.as_dict(), "runs": {"served": str(served_run), "candidate": str(candidate_run)}}


def _report(out: Path, gate: dict[str, Any]) -> dict[str, str]:
    """The round's `taskfit report` (served as the baseline) and its decision as markdown."""
    report = render.build([gate["runs"]["served"], gate["runs"]["candidate"]], "served", None, 1000, 0)
    render.write(report, out / "report.html", out / "report.md")
    (out / "decision.md").write_text(decision_markdown(gate), encoding="utf-8")
    return {"html": str(out / "report.html"), "md": str(out / "report.md"), "decision": str(out / "decision.md")}


def decision_markdown(gate: dict[str, Any]) -> str:
    t, p = gate["task_metric"], gate["preference"]
    lines = [f"# Round decision: {gate['outcome']}", "",
             f"- served: {Policy(**gate['served']).flags()}", f"- candidate: {Policy(**gate['candidate']).flags()}",
             f"- {t['metric']} on {t['n']} held-out task rows: served {t['a']:.4f}, candidate {t['b']:.4f}, "
             f"difference {t['diff']:+.4f} [95% CI {t['ci_low']:+.4f}, {t['ci_high']:+.4f}], paired bootstrap "
             f"p = {t['p_bootstrap']:.3g}; non-inferiority margin {t['non_inferiority']}"]
    if p:
        m = p["mean_margin"]
        lines.append(f"- {p['n']} held-out feedback pairs: the candidate ranks the preferred answer higher in "
                     f"{p['ranked_right']}, lower in {p['ranked_wrong']} (sign test p = {p['sign_p']:.3g}); mean "
                     f"implicit reward margin {m['value']:+.4f} [{m['ci_low']:+.4f}, {m['ci_high']:+.4f}]")
    lines += ["", "Why:", *(f"- {r}" for r in gate["reasons"])]
    return "\n".join(lines) + "\n"


def _switch(config: LoopConfig, candidate: Policy) -> bool:
    """Tell ``--server`` to serve the candidate; False (and the restart command logged) without one."""
    command = f"taskfit serve --task {config.task} {candidate.flags()}"
    if not config.server:
        log.info("promoted; restart the assistant with: %s", command)
        return False
    import httpx

    token = (config.admin_token.get_secret_value() if config.admin_token else
             os.environ.get("TASKFIT_ADMIN_TOKEN"))
    if not token:
        raise UserError("--server needs the server's admin token: --admin-token or $TASKFIT_ADMIN_TOKEN; the round "
                        f"is decided and kept, restart the server yourself with: {command}")
    try:
        response = httpx.post(config.server.rstrip("/") + "/api/admin/serve", json=candidate.as_dict(),
                              headers={"Authorization": f"Bearer {token}"}, timeout=600)
    except httpx.HTTPError as exc:
        raise UserError(f"the server at {config.server} did not answer ({exc}); the round is decided and kept: "
                        f"rerun this command to switch it, or restart it with: {command}") from None
    if response.status_code != 200:
        raise UserError(f"the server refused the switch ({response.status_code}: {response.text[:300]}); the round "
                        f"is decided and kept: rerun this command, or restart it with: {command}")
    log.info("the server at %s now serves %s", config.server, candidate.flags())
    return True
