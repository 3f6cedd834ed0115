"""Streamed text cutting (every backend's streaming): the deltas sent join to the final answer, a stop string is
never shown, half a character is held back."""

from __future__ import annotations

from taskfit.models.base import StreamCutter, cut_at_stop


def stream(pieces: list[str], stop: list[str]) -> tuple[list[str], str]:
    sent: list[str] = []
    cutter = StreamCutter(stop, sent.append)
    text = ""
    for piece in pieces:
        text += piece
        if cutter.update(text):
            break
    final, _ = cut_at_stop(text, stop)
    cutter.finish(final)
    return sent, final


def test_streamed_deltas_join_to_the_final_answer_and_never_show_a_stop_string():
    sent, final = stream(["Hel", "lo", " wor", "ld", "\nUs", "er: more"], ["\nUser:"])
    assert "".join(sent) == final == "Hello world"
    assert all("\n" not in s for s in sent)  # the tail that could become the stop string was held back
    assert len(sent) >= 2


def test_a_stop_string_in_the_leading_whitespace_does_not_end_the_stream():
    sent, final = stream(["\n", "答", "案", "\n", "extra"], ["\n"])
    assert final == "\n答案"
    assert "".join(sent) == final


def test_half_a_character_is_held_back():
    sent: list[str] = []
    cutter = StreamCutter([], sent.append)
    cutter.update("ab\ufffd")
    assert sent == ["ab"]
    cutter.update("ab中")
    assert "".join(sent) == "ab中"
