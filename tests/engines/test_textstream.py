"""Streamed text never shows half a UTF-8 character or any part of a stop sequence."""

from __future__ import annotations

from kennel.engines.textstream import TextStream


def _run(pieces: list[bytes], stop: list[str]) -> tuple[list[str], bool]:
    ts = TextStream(stop)
    out = [ts.feed(p) for p in pieces]
    out.append(ts.flush())
    return out, ts.stopped


def test_multibyte_characters_wait_until_whole() -> None:
    data = "Xin chào, 你好".encode()
    out, stopped = _run([data[i : i + 1] for i in range(len(data))], [])
    assert "".join(out) == "Xin chào, 你好" and not stopped
    assert all("\ufffd" not in piece for piece in out)


def test_stop_sequence_is_cut_and_never_leaks() -> None:
    out, stopped = _run([b"Hello", b" wor", b"ld", b"<|e", b"nd|>", b" more"], ["<|end|>"])
    assert "".join(out) == "Hello world" and stopped
    assert not any("<" in piece for piece in out)


def test_held_back_prefix_is_released_when_it_is_not_a_stop() -> None:
    out, stopped = _run([b"a <", b"b>", b" c"], ["<|end|>"])
    assert "".join(out) == "a <b> c" and not stopped
    assert out[0] == "a "  # '<' waited: it could have started '<|end|>'


def test_stop_split_across_many_pieces_and_several_stops() -> None:
    out, stopped = _run([b"x", b"Y", b"E", b"S", b"!"], ["YES", "NO"])
    assert "".join(out) == "x" and stopped
    out, _ = _run([b"N", b"ope"], ["NO"])
    assert "".join(out) == "Nope"
