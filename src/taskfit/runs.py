"""The run folder: the files of one run, written, resumed and read back in one place.

Every way of producing answers (a strategy on a backend, a trained head) and everything that reads results
(``compare-results``, the report, RAFT, the assistant's export) goes through this module, so the format has one
owner:

- ``run.json`` — the run's fingerprint (what must match for a rerun to continue it);
- ``samples.jsonl`` — one record per example in data order, appended chunk by chunk, each chunk flushed and
  fsynced, so a crash leaves whole records plus at most one cut line;
- ``results.json`` — config, task, model, versions, metrics with CIs, counts, timings;
- ``run_card.json`` + ``RUN_CARD.md`` — what a training run did (tuning writes them).

A rerun of the same configuration keeps every whole record already written (nothing whole is ever discarded: a
cut trailing line is the only thing removed, and only when new records are about to be appended); a run whose
records are all there is complete and needs no model at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskfit.errors import UserError
from taskfit.paths import output_folder, read_utf8

log = logging.getLogger(__name__)

SAMPLES = "samples.jsonl"
RESULTS = "results.json"
MARKER = "run.json"
RUN_CARD = "run_card.json"
RUN_CARD_MD = "RUN_CARD.md"


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-serialisable parts (config, task, examples ...)."""
    blob = json.dumps(list(parts), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class RunFolder:
    """An opened run folder: the whole records already on disk and the means to append more.

    Open it with :meth:`open` before loading any model, so a folder holding another run is refused at once;
    nothing is written until the first records (or the results) are.
    """

    path: Path
    indices: list[int]  # the example indices this run covers, in order
    fingerprint: str = ""
    done: list[dict[str, Any]] = field(default_factory=list)  # whole records on disk, matching ``indices``
    _valid_bytes: int = 0  # samples.jsonl up to here holds exactly ``done``
    _created: bool = False  # the folder and its marker are written

    @classmethod
    def open(cls, path: Path, run_fingerprint: str, indices: Sequence[int]) -> RunFolder:
        """Create or reopen ``path`` for the run with ``run_fingerprint`` over examples ``indices``."""
        path = output_folder(path)
        marker, samples = path / MARKER, path / SAMPLES
        if path.is_dir() and not marker.is_file() and any(path.iterdir()):
            raise UserError(f"{path} holds files that are not a taskfit eval run (no {MARKER}); choose another "
                            "--output")
        if samples.exists():
            try:
                previous = json.loads(marker.read_text(encoding="utf-8")).get("fingerprint")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                previous = None
            if previous != run_fingerprint:
                raise UserError(f"{path} holds a run with a different configuration, task or data; "
                                "choose another --output (or delete the folder to start over)")
        folder = cls(path, list(indices), fingerprint=run_fingerprint)
        if samples.exists():
            folder._read_done()
        return folder

    def _create(self) -> None:
        """Make the folder and its marker when the first file is written (a run that fails before leaves none)."""
        if self._created:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / MARKER).write_text(json.dumps({"fingerprint": self.fingerprint}) + "\n", encoding="utf-8")
            self._created = True
        except OSError as exc:
            raise UserError(f"cannot write the run folder {self.path}: {exc.strerror or exc}; "
                            "choose another --output") from None

    def _read_done(self) -> None:
        """Whole records in data order, up to the first cut or foreign line."""
        data = (self.path / SAMPLES).read_bytes()
        offset = 0
        for raw in data.split(b"\n")[:-1]:  # the part after the last newline is never a whole record
            try:
                record = json.loads(raw.decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                break
            position = len(self.done)
            if position >= len(self.indices) or not isinstance(record, dict) \
                    or record.get("index") != self.indices[position]:
                break
            self.done.append(record)
            offset += len(raw) + 1
        self._valid_bytes = offset
        if self.done:
            log.info("resuming %s: %d of %d examples already done", self.path, len(self.done), len(self.indices))

    @property
    def complete(self) -> bool:
        return len(self.done) == len(self.indices)

    def restart_point(self, chunk: int) -> int:
        """Where computing resumes: the start of the chunk the first missing record belongs to.

        Recomputing a cut chunk from its start sends the model exactly the batches an uninterrupted run sent,
        so the records come out identical; the records of that chunk already on disk are kept, not rewritten.
        """
        if self.complete:
            return len(self.done)
        return len(self.done) // chunk * chunk

    def append(self, records: Sequence[dict[str, Any]], first_position: int) -> None:
        """Append the records for positions ``first_position`` onwards that are not on disk yet (fsynced)."""
        new = [r for pos, r in enumerate(records, first_position) if pos >= len(self.done)]
        if not new:
            return
        self._create()
        samples = self.path / SAMPLES
        if samples.exists() and samples.stat().st_size != self._valid_bytes:
            os.truncate(samples, self._valid_bytes)  # only a cut line or foreign tail goes: every whole record stays
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new)
        with samples.open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        self._valid_bytes += len(text.encode("utf-8"))
        self.done.extend(new)

    def write_results(self, results: dict[str, Any]) -> None:
        self._create()
        write_json(self.path / RESULTS, results)
        log.info("wrote %s and %s", self.path / RESULTS, self.path / SAMPLES)

    def read_results(self) -> dict[str, Any] | None:
        """The results.json of a finished run, or ``None`` if missing or unreadable."""
        try:
            return json.loads((self.path / RESULTS).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return None


@dataclass(frozen=True)
class Run:
    """A finished run read back: its results and its per-example records."""

    folder: Path
    results: dict[str, Any]
    samples: list[dict[str, Any]]
    fingerprint: str | None = None  # from run.json: the hash of config, task and examples


def read_run(path: str | Path) -> Run:
    """results.json and samples.jsonl of a run, given the run folder or its results.json."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    results_path, samples_path = folder / RESULTS, folder / SAMPLES
    for needed in (results_path, samples_path):
        if not needed.is_file():
            raise UserError(f"{needed} not found; give a run folder (or its results.json) written by taskfit eval")
    results = _read_json(results_path, read_utf8(results_path), 1)
    lines = read_utf8(samples_path).splitlines()
    samples = [_read_json(samples_path, line, number) for number, line in enumerate(lines, 1) if line.strip()]
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        marker = None
    return Run(folder, results, samples, marker)


def _read_json(path: Path, text: str, first_line: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{first_line + exc.lineno - 1}: not valid JSON ({exc.msg}); give a run folder "
                        "written by taskfit eval") from None


def collection_folder(path: str | Path, flag: str = "--output") -> Path:
    """A folder that holds run folders (a grid's or the autopilot's ``output``), checked before any work: writable,
    and not itself one run's folder (whose files the runs inside would mix with)."""
    path = output_folder(path, flag)
    found = [name for name in (MARKER, SAMPLES, RUN_CARD) if (path / name).is_file()]
    if found:
        raise UserError(f"{flag} {path} is one run's folder ({found[0]} there), not a folder for a grid of runs; "
                        "choose another")
    return path


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_jsonl(path: Path, rows: Sequence[Any]) -> None:
    """``rows`` as JSON lines, written beside ``path`` and renamed into place: a cut write leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    partial.replace(path)


def write_run_card(folder: Path, card: dict[str, Any], markdown: str) -> None:
    """``run_card.json`` and ``RUN_CARD.md`` of a training run (every stage writes one)."""
    write_json(folder / RUN_CARD, card)
    (folder / RUN_CARD_MD).write_text(markdown, encoding="utf-8")
    first, final = card.get("first_loss"), card.get("final_loss")
    loss = f" (loss {first:.4f} -> {final:.4f})" if first is not None and final is not None else ""
    log.info("wrote %s%s", folder, loss)


def read_run_card(folder: str | Path) -> dict[str, Any] | None:
    """The ``run_card.json`` of a training output folder (an adapter, a full model, a head), or ``None``."""
    path = Path(folder) / RUN_CARD
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (results.json and run cards record it)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
