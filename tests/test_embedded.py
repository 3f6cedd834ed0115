"""Conversion of the embedded model: locking between processes and crash safety (fake converter, fast)."""

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from taskfit.models import embedded
from taskfit.models.embedded import COMPLETE_MARKER, EmbeddedModel, ensure_converted

FAKE = EmbeddedModel(name="fake", package="nope", gguf_file="fake.gguf", description="test")


def _slow_convert(model, out: Path) -> None:
    (out / "weights.bin").write_text("w")
    with (out.parent / "conversions.log").open("a") as log:
        log.write("converted\n")
    time.sleep(0.5)


def _worker(target: str) -> None:
    embedded._convert = _slow_convert
    ensure_converted(FAKE, Path(target))


def test_two_processes_convert_once(tmp_path):
    target = tmp_path / "models" / "fake-fp32"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(str(target),)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert (target / COMPLETE_MARKER).is_file() and (target / "weights.bin").read_text() == "w"
    assert (target.parent / "conversions.log").read_text().count("converted") == 1


def test_crash_midway_leaves_no_model_and_next_run_recovers(tmp_path, monkeypatch):
    target = tmp_path / "models" / "fake-fp32"

    def crash(model, out):
        (out / "half.bin").write_text("partial")
        raise RuntimeError("power loss")

    monkeypatch.setattr(embedded, "_convert", crash)
    with pytest.raises(RuntimeError):
        ensure_converted(FAKE, target)
    assert not target.exists()
    monkeypatch.setattr(embedded, "_convert", _slow_convert)
    assert ensure_converted(FAKE, target) == target
    assert not list(target.parent.glob(".fake-fp32.tmp-*"))
    assert not (target / "half.bin").exists()


def test_missing_package_says_how_to_install():
    from taskfit.errors import UserError

    with pytest.raises(UserError, match="make setup"):
        FAKE.gguf_path()
