"""Output decoding and line splitting (pure)."""

from __future__ import annotations

from workspaces_jobs.tasks.lines import SPLIT_MARKER, LineSplitter


def collect(chunks: list[bytes], max_chars: int = 10) -> list[str]:
    out: list[str] = []
    splitter = LineSplitter(out.append, max_chars=max_chars)
    for chunk in chunks:
        splitter.feed(chunk)
    splitter.close()
    return out


def test_lines_across_chunks_and_no_final_newline() -> None:
    assert collect([b"ab", b"c\nde", b"f\r\n", b"tail"]) == ["abc", "def", "tail"]


def test_invalid_utf8_is_replaced() -> None:
    assert collect([b"bad \xff\xfe!\n"], max_chars=100) == ["bad \ufffd\ufffd!"]


def test_multibyte_char_split_between_chunks_survives() -> None:
    euro = "€".encode()
    assert collect([euro[:1], euro[1:] + b"\n"]) == ["€"]


def test_long_line_is_split_with_marker() -> None:
    lines = collect([b"x" * 25 + b"\n"])
    assert lines == ["x" * 10 + SPLIT_MARKER, "x" * 10 + SPLIT_MARKER, "x" * 5]
