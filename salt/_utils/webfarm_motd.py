"""The seed's papel.sh paper scroll, drawn in Python. Pure functions, no Salt.

papel.sh pipes its input through ``fmt -w 60`` and prints each line with ``printf "%-65s"``
inside this frame (the seed's sample output, text column ``width`` = 65)::

     __,-----------------------------------------------------------------------,__
    /  \\\\                                                                       \\ \\
    \\__/|       <first line>                                                     |/
        |       <middle lines>                                                   |
     __ |       <last line but one>                                              |
    /  \\|       <last line>                                                      |\\
    \\__//                                                                        //
       `------------------------------------------------------------------------``

For a text that papel.sh handles correctly (at most three lines after filling, each at
most ``width`` characters, plain ASCII without backslashes or tabs) the output here is
byte-identical to papel.sh's, trailing space after the last text row included.
tests/unit/test_motd.py runs the seed's script to check it. Where papel.sh is wrong,
this module is right instead:

- a fourth line is kept (papel.sh's extra ``read c`` drops it): every line gets a row;
- a word wider than the text column is split, so no row overflows the frame;
- widths are display columns (wide characters count 2, combining marks 0), not bytes;
- backslashes are printed as they are (``read`` without ``-r`` eats them);
- tabs in the output are spaces (fmt may put a tab between words; it breaks the frame).

``fill`` reproduces GNU fmt's paragraph filling (coreutils ``fmt``, default mode): lines
of one indentation form a paragraph, breaks minimise fmt's cost of each line's distance
from the goal width (93% of the maximum) plus its raggedness, with fmt's bonuses and
penalties around sentence ends and punctuation, and a sentence end keeps two spaces.
"""

import unicodedata
from itertools import pairwise

DEFAULT_WIDTH = 65
MIN_WIDTH = 8
FMT_MARGIN = 5  # papel.sh fills at 60 for its 65-column text field
TABWIDTH = 8

_TEXT_PREFIX = {
    "first": "\\__/|       ",
    "middle": "    |       ",
    "penult": " __ |       ",
    "last": "/  \\|       ",
}
_TEXT_SUFFIX = {"first": "|/", "middle": "|", "penult": "|", "last": "|\\ "}


def _equiv(n):
    return n * n


def _short_cost(n):
    return _equiv(n * 10)


def _ragged_cost(n):
    return _short_cost(n) // 2


LINE_COST = _equiv(70)
SENTENCE_BONUS = _equiv(50)
NOBREAK_COST = _equiv(600)
PAREN_BONUS = _equiv(40)
PUNCT_BONUS = _equiv(40)
_OPEN, _CLOSE, _PERIOD = "(['`\"", ")]'\"", ".?!"
_PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def _widow_cost(n):
    return _equiv(200) // (n + 2)


def _orphan_cost(n):
    return _equiv(150) // (n + 2)


def display_width(text):
    """Terminal columns of ``text``: East Asian wide/full-width characters take two,
    combining marks and format characters none, every other character one."""
    cols = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        cols += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return cols


def _split_wide(word, width):
    """Cut ``word`` into pieces of at most ``width`` display columns."""
    pieces, piece, cols = [], "", 0
    for ch in word:
        w = display_width(ch)
        if piece and cols + w > width:
            pieces.append(piece)
            piece, cols = "", 0
        piece += ch
        cols += w
    pieces.append(piece)
    return pieces


class _Word:
    __slots__ = ("text", "length", "space", "paren", "period", "punct", "final")

    def __init__(self, text):
        self.text = text
        self.length = display_width(text)
        self.paren = text[0] in _OPEN
        self.punct = text[-1] in _PUNCT
        end = len(text) - 1
        while end > 0 and text[end] in _CLOSE:
            end -= 1
        self.period = text[end] in _PERIOD
        self.space = 1
        self.final = False


def _indent(line):
    """Column after the leading blanks of ``line`` (tabs to 8-column stops), and the rest."""
    col = 0
    for i, ch in enumerate(line):
        if ch == " ":
            col += 1
        elif ch == "\t":
            col = (col // TABWIDTH + 1) * TABWIDTH
        else:
            return col, line[i:]
    return col, ""


def _words(rest, column, fold):
    """Split one line (after its indent) into words, recording fmt's spacing facts."""
    words = []
    i, n = 0, len(rest)
    while i < n:
        j = i
        while j < n and rest[j] not in " \t":
            j += 1
        column += display_width(rest[i:j])
        start = column
        k = j
        while k < n and rest[k] in " \t":
            column = (column // TABWIDTH + 1) * TABWIDTH if rest[k] == "\t" else column + 1
            k += 1
        for piece in _split_wide(rest[i:j], fold):
            words.append(_Word(piece))
        word = words[-1]
        word.space = column - start
        at_end = k >= n
        word.final = word.period and (at_end or word.space > 1)
        if at_end:
            word.space = 2 if word.final else 1
        i = k
    return words


def _paragraphs(text, fold):
    """Yield fmt's units: ``None`` for a blank line, else (indent, words) of a paragraph."""
    indent, words = None, []
    for raw in text.splitlines():
        line = raw.translate({0x0B: " ", 0x0C: " ", 0x0D: " "})
        col, rest = _indent(line)
        if not rest:
            if words:
                yield indent, words
            indent, words = None, []
            yield None
            continue
        if words and col != indent:
            yield indent, words
            words = []
        if not words:
            indent = col
        words.extend(_words(rest, col, fold))
    if words:
        yield indent, words


def _base_cost(words, i):
    cost = LINE_COST
    this = words[i]
    if i > 0:
        prev = words[i - 1]
        if prev.period:
            cost += -SENTENCE_BONUS if prev.final else NOBREAK_COST
        elif prev.punct:
            cost -= PUNCT_BONUS
        elif i > 1 and words[i - 2].final:
            cost += _widow_cost(prev.length)
    if this.paren:
        cost -= PAREN_BONUS
    elif this.final:
        cost += _orphan_cost(this.length)
    return cost


def _breaks(words, indent, max_width, goal):
    """fmt's dynamic programme: the index of the first word of each line."""
    words[-1].period = words[-1].final = True
    limit = len(words)
    best_cost = [0] * (limit + 1)
    next_break = [limit] * (limit + 1)
    line_length = [0] * (limit + 1)
    for start in range(limit - 1, -1, -1):
        best = None
        length = indent + words[start].length
        w = start
        while True:
            w += 1
            if w == limit:
                cost = 0
            else:
                cost = _short_cost(goal - length)
                if next_break[w] != limit:
                    cost += _ragged_cost(length - line_length[w])
            cost += best_cost[w]
            if best is None or cost < best:
                best, next_break[start], line_length[start] = cost, w, length
            if w == limit:
                break
            length += words[w - 1].space + words[w].length
            if length >= max_width:
                break
        best_cost[start] = best + _base_cost(words, start)
    starts, i = [], 0
    while i < limit:
        starts.append(i)
        i = next_break[i]
    return starts + [limit]


def fill(text, width=DEFAULT_WIDTH):
    """Fill ``text`` as ``fmt -w <width - 5>`` does, then strip each line as ``read`` does.

    Returns the rows of the scroll; no row is wider than ``width`` display columns.
    """
    if width < MIN_WIDTH:
        raise ValueError(f"width must be at least {MIN_WIDTH}, got {width}")
    max_width = width - FMT_MARGIN
    goal = max_width * (2 * (100 - 7) + 1) // 200
    lines = []
    for para in _paragraphs(text, width):
        if para is None:
            lines.append("")
            continue
        indent, words = para
        starts = _breaks(words, indent, max_width, goal)
        for a, b in pairwise(starts):
            parts = []
            for word in words[a : b - 1]:
                parts.append(word.text + " " * word.space)
            parts.append(words[b - 1].text)
            lines.append("".join(parts))
    return lines


def _row(kind, line, width):
    pad = " " * max(0, width - display_width(line))
    return _TEXT_PREFIX[kind] + line + pad + _TEXT_SUFFIX[kind]


def _edges(width):
    extra = width - DEFAULT_WIDTH
    top = [
        " __," + "-" * (71 + extra) + ",__",
        "/  \\\\" + " " * (71 + extra) + "\\ \\",
    ]
    bottom = [
        "\\__//" + " " * (72 + extra) + "//",
        "   `" + "-" * (72 + extra) + "``",
    ]
    return top, bottom


def frame(lines, width=DEFAULT_WIDTH):
    """Draw the seed's scroll around ``lines`` (each at most ``width`` display columns).

    Fewer than three lines are padded with blank rows, as papel.sh prints them.
    """
    lines = list(lines) + [""] * max(0, 3 - len(lines))
    kinds = ["first"] + ["middle"] * (len(lines) - 3) + ["penult", "last"]
    top, bottom = _edges(width)
    rows = [_row(kind, line, width) for kind, line in zip(kinds, lines, strict=True)]
    return "\n".join(top + rows + bottom) + "\n"


def scroll(text, width=DEFAULT_WIDTH):
    """Fill ``text`` and draw it inside the scroll."""
    return frame(fill(text, width), width)


def is_scroll(text, width):
    """True when ``text`` is exactly one scroll of text column ``width`` (any wording)."""
    if not text.endswith("\n"):
        return False
    lines = text[:-1].split("\n")
    if len(lines) < 7:
        return False
    top, bottom = _edges(width)
    if lines[:2] != top or lines[-2:] != bottom:
        return False
    body = lines[2:-2]
    kinds = ["first"] + ["middle"] * (len(body) - 3) + ["penult", "last"]
    for kind, row in zip(kinds, body, strict=True):
        prefix, suffix = _TEXT_PREFIX[kind], _TEXT_SUFFIX[kind]
        if not (row.startswith(prefix) and row.endswith(suffix)):
            return False
        inner = row[len(prefix) : len(row) - len(suffix)]
        if display_width(inner) != width or "\n" in inner:
            return False
    return True
