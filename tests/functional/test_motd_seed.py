"""The MOTD scroll against the seed's own papel.sh.

Where papel.sh is right the output is compared byte for byte with the seed's own script
(run with /bin/sh, its ``fmt -w 60`` and printf); where it is wrong a test says how and
checks that webfarm is right instead.
"""

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import webfarm_motd as motd

FORTUNES = Path("/usr/share/games/fortunes")


@pytest.fixture(scope="module")
def papel(seed_text, tmp_path_factory):
    """The seed's papel.sh, cut out of the seed, as a runnable function."""
    match = re.search(r"^#!/bin/sh\n# Poner en el cron:.*?^BOTTON\n\n\)\n", seed_text, re.S | re.M)
    assert match, "papel.sh not found in the seed"
    script = tmp_path_factory.mktemp("seed") / "papel.sh"
    script.write_text(match.group(0))
    if not shutil.which("fmt"):
        pytest.skip("fmt (coreutils) is not installed")

    def run(text):
        proc = subprocess.run(
            ["/bin/sh", str(script)], input=text.encode(), capture_output=True, check=True
        )
        return proc.stdout.decode()

    return run


def fmt60(text):
    out = subprocess.run(["fmt", "-w", "60"], input=text.encode(), capture_output=True, check=True)
    return out.stdout.decode().splitlines()


def papel_handles(text):
    """papel.sh is right for at most three filled lines of at most 65 plain ASCII characters
    (no backslash for ``read`` to eat, no tab that fmt puts between words)."""
    lines = fmt60(text)
    return (
        text.isascii()
        and "\\" not in text
        and len(lines) <= 3
        and all(len(line.strip()) <= 65 and "\t" not in line.strip() for line in lines)
    )


def fortunes():
    texts = []
    for name in ("fortunes", "literature", "riddles"):
        path = FORTUNES / name
        if path.exists():
            texts += [t.strip("\n") + "\n" for t in path.read_text("utf-8").split("\n%\n")]
    return texts


def generated(count, seed=7):
    rng = random.Random(seed)
    vocab = (
        "a an the I cat sat on mat. Mr. e.g. (see) [x] 'q' \"hi\" what? yes! no, so; "
        "colon: dash- -- well... antidisestablishment end.) 12 3.14"
    ).split()
    texts = []
    for _ in range(count):
        lines = []
        for _ in range(rng.randint(1, 4)):
            indent = rng.choice(["", "", " ", "\t", "\t\t"])
            words = [
                rng.choice(vocab) + rng.choice([" ", " ", "  "]) for _ in range(rng.randint(1, 14))
            ]
            lines.append(indent + "".join(words).rstrip())
            if rng.random() < 0.15:
                lines.append("")
        texts.append("\n".join(lines) + "\n")
    return texts


def rows(out):
    return out.splitlines()[2:-2]


def test_byte_identical_to_papel_sh_on_every_fortune_it_handles(papel):
    texts = [t for t in fortunes() if papel_handles(t)]
    if len(texts) < 100:
        pytest.skip("fortunes-min is not installed: fewer than 100 fortunes to compare")
    for text in texts:
        assert motd.scroll(text) == papel(text), text


def test_byte_identical_to_papel_sh_on_generated_texts(papel):
    texts = [t for t in generated(300) if papel_handles(t)]
    assert len(texts) > 100
    for text in texts:
        assert motd.scroll(text) == papel(text), repr(text)


def test_fill_is_fmt_w60_for_texts_of_any_length():
    compared = 0
    for text in generated(300, seed=11) + fortunes():
        ref = [line.strip() for line in fmt60(text)]
        if not text.isascii() or any("\t" in line or len(line) > 65 for line in ref):
            continue
        assert motd.fill(text) == ref, repr(text)
        compared += 1
    assert compared > 250


def test_papel_sh_drops_the_fourth_line_and_webfarm_keeps_it(papel):
    text = " ".join(f"word{i}" for i in range(32)) + "\n"
    lines = motd.fill(text)
    assert len(lines) == 4
    ours, theirs = motd.scroll(text), papel(text)
    assert lines[3] not in theirs  # papel.sh's second `read c` overwrites the fourth line
    assert all(line in ours for line in lines)
    assert len(rows(ours)) == 4 and rows(ours)[1].startswith("    |       " + lines[1])
    assert " ".join(lines).split() == text.split()


def test_papel_sh_overflows_on_a_long_word_and_webfarm_splits_it(papel):
    text = "see https://example.org/" + "x" * 70 + " now\n"
    theirs = rows(papel(text))
    assert max(len(row) for row in theirs) > 80  # its right edge is pushed out
    ours = rows(motd.scroll(text))
    assert [len(row) for row in ours] == [79, 78, 80]
    assert "".join(motd.fill(text)).replace(" ", "") == text.strip().replace(" ", "")


def test_papel_sh_pads_bytes_and_webfarm_pads_display_columns(papel):
    text = "Ünïcödé façade, naïve résumé; 日本語 too\n"
    theirs = rows(papel(text))
    assert motd.display_width(theirs[0]) < 79  # printf counted bytes: the edge moves left
    ours = rows(motd.scroll(text))
    assert [motd.display_width(row) for row in ours] == [79, 78, 80]
    assert motd.display_width("日本語") == 6 and motd.display_width("e\u0301") == 1


def test_papel_sh_eats_backslashes_and_webfarm_keeps_them(papel):
    text = "copy C:\\temp\\new to /srv\n"
    assert "C:\\temp\\new" not in papel(text)
    assert "C:\\temp\\new" in motd.scroll(text)


def test_a_tab_fmt_would_put_between_words_is_spaces():
    # fmt re-introduces tabs for runs of spaces once its input had a tab; in a row they
    # would break the frame. Columns 0-5 "abcde." + two spaces reach the tab stop at 8.
    text = "\tx\nabcde.  fghij\n"
    assert any("\t" in line.strip() for line in fmt60(text))
    assert motd.fill(text) == ["x", "abcde.  fghij"]
