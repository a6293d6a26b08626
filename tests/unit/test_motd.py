"""The MOTD scroll is the seed's papel.sh frame (pure functions; the byte-for-byte
comparison with the seed's own script is tests/functional/test_motd_seed.py)."""

import re

import pytest

import webfarm_motd as motd

PRENTICE = (
    "Many a writer seems to think he is never profound except\n"
    "when he can't understand his own meaning.\n"
    "\t\t-- George D. Prentice\n"
)


def rows(out):
    return out.splitlines()[2:-2]


def test_the_seed_sample_output_is_reproduced(seed_text):
    sample = seed_text.split("$ fortune | ./papel.sh\n", 1)[1].splitlines()[:7]
    # The blog lost the trailing space papel.sh prints after the last text row's "|\".
    assert [line.rstrip() for line in motd.scroll(PRENTICE).splitlines()] == sample


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", ["", "", ""]),
        ("one line\n", ["one line", "", ""]),
        ("first\n\nsecond\n", ["first", "", "second"]),
        ("a\n\nb\n\nc\n", ["a", "", "b", "", "c"]),
    ],
)
def test_short_texts_fill_three_rows_and_blank_lines_stay(text, expected):
    out = motd.scroll(text)
    body = [row[12:77].rstrip() for row in rows(out)]
    assert body == expected


def test_another_width_scales_the_same_frame():
    text = "some fortune\n\nwith two lines\n\nand a third"
    wide, narrow = motd.scroll(text, 65).splitlines(), motd.scroll(text, 40).splitlines()
    assert len(wide) == len(narrow)
    for a, b in zip(wide, narrow, strict=True):
        assert len(a) - len(b) == 25
        # The same frame: the same characters once the padding runs are squeezed.
        assert re.sub(r"([ -])\1+", r"\1", a) == re.sub(r"([ -])\1+", r"\1", b)
    assert all(len(line) <= 35 for line in motd.fill("word " * 50, 40))


def test_width_too_small_is_rejected():
    with pytest.raises(ValueError, match="at least"):
        motd.fill("text", width=3)


def test_is_scroll_recognizes_only_a_whole_scroll_of_that_width():
    out = motd.scroll("some fortune\nwith two lines", width=30)
    assert motd.is_scroll(out, 30)
    assert motd.is_scroll(motd.scroll(" ".join(["w"] * 200), 30), 30)
    assert not motd.is_scroll(out, 31)
    assert not motd.is_scroll(out[:-1], 30)
    assert not motd.is_scroll(out + "trailing text\n", 30)
    assert not motd.is_scroll("plain motd\n", 30)
    broken = out.replace("|/\n", "| \n", 1)
    assert not motd.is_scroll(broken, 30)


def test_every_line_of_a_long_text_gets_a_row():
    text = " ".join(f"word{i}" for i in range(200))
    lines = motd.fill(text)
    assert len(lines) > 10 and all(len(line) <= 60 for line in lines)
    out = motd.scroll(text)
    assert len(rows(out)) == len(lines)
    assert " ".join(row[12:77] for row in rows(out)).split() == text.split()


def test_no_row_overflows_on_long_words_or_wide_characters():
    for text in ("x" * 200 + " end", "日本語のテキスト " * 20, "e\u0301" * 90):
        widths = {motd.display_width(row) for row in rows(motd.scroll(text))}
        assert widths <= {78, 79, 80}, text
    assert motd.fill("x" * 140) == ["x" * 65, "x" * 65, "x" * 10]
    assert motd.display_width("日本語") == 6 and motd.display_width("e\u0301") == 1
