import pytest
import webfarm_motd as motd

FRAME_ROW = len("    |  ") + len("  |.")


def rows(out):
    lines = out.splitlines()
    return lines[3:-3]


def text_of(out):
    return [row[7:-4].rstrip() for row in rows(out)]


def test_frame_shape_rolled_corners():
    out = motd.scroll("hello", width=20)
    lines = out.splitlines()
    assert lines[0] == "  " + "_" * 26
    assert lines[1].startswith(" / \\") and lines[1].endswith("\\.")
    assert lines[2].startswith("|   |") and lines[2].endswith("|.")
    assert lines[3].startswith(" \\_ |")  # rolled top-left corner
    assert lines[-3].endswith("|___")
    assert lines[-2].startswith("    |  /") and lines[-2].endswith("/.")
    assert lines[-1].startswith("    \\_/") and lines[-1].endswith("/.")  # rolled bottom-right
    assert out.endswith("\n")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", []),
        ("one line", ["one line"]),
        ("first\nsecond", ["first", "second"]),
        ("\n\nbody\n\n", ["body"]),
        ("para one\n\npara two", ["para one", "", "para two"]),
    ],
)
def test_zero_one_two_and_paragraph_lines(text, expected):
    out = motd.scroll(text, width=20)
    assert text_of(out) == (expected or [""])
    assert all(len(row) == FRAME_ROW + 20 for row in rows(out))


def test_many_lines_wrap_at_word_boundaries():
    words = ("lorem ipsum dolor sit amet consectetur adipiscing elit " * 20).split()
    lines = motd.wrap(" ".join(words), width=30)
    assert len(lines) > 10
    assert all(len(line) <= 30 for line in lines)
    assert " ".join(lines).split() == words  # nothing lost, no word split


def test_utf8_width_counts_characters_not_bytes():
    text = "Ünïcödé façade naïve résumé " * 3
    lines = motd.wrap(text, width=20)
    assert all(len(line) <= 20 for line in lines)
    assert any(len(line.encode()) > 20 for line in lines)
    out = motd.scroll(text, width=20)
    assert {len(row) for row in rows(out)} == {FRAME_ROW + 20}


def test_tabs_expand_before_wrapping():
    out = motd.scroll("a\tb", width=20)
    assert "\t" not in out
    assert text_of(out) == ["a       b"]


def test_long_words_are_hard_split():
    lines = motd.wrap("x" * 45 + " end", width=20)
    assert lines == ["x" * 20, "x" * 20, "x" * 5 + " end"]


def test_width_too_small_is_rejected():
    with pytest.raises(ValueError, match="at least"):
        motd.wrap("text", width=3)


def test_is_scroll_recognizes_only_a_whole_scroll_of_that_width():
    out = motd.scroll("some fortune\nwith two lines", width=30)
    assert motd.is_scroll(out, 30)
    assert not motd.is_scroll(out, 31)
    assert not motd.is_scroll(out[:-1], 30)
    assert not motd.is_scroll(out + "trailing text\n", 30)
    assert not motd.is_scroll("plain motd\n", 30)
