"""Render text inside a paper scroll (the seed's papel.sh frame). Pure functions, no Salt.

The frame, for a text column ``width`` characters wide::

      __________________
     / \\                 \\.
    |   |                 |.
     \\_ |  text           |.
        |  more text      |.
        |   ______________|___
        |  /                 /.
        \\_/_________________/.

Width counts characters (str), not bytes; tabs expand to 8-column stops before wrapping.
"""

import textwrap

DEFAULT_WIDTH = 65
MIN_WIDTH = 8


def wrap(text, width=DEFAULT_WIDTH):
    """Wrap ``text`` to lines of at most ``width`` characters.

    Paragraph breaks (blank lines) are kept, lines break at word boundaries and a word
    longer than ``width`` is hard-split.
    """
    if width < MIN_WIDTH:
        raise ValueError(f"width must be at least {MIN_WIDTH}, got {width}")
    lines = []
    for raw in text.expandtabs(8).splitlines():
        if not raw.strip():
            lines.append("")
            continue
        lines.extend(
            textwrap.wrap(
                raw.rstrip(),
                width=width,
                break_long_words=True,
                break_on_hyphens=False,
                drop_whitespace=True,
                replace_whitespace=True,
            )
        )
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def frame(lines, width):
    """Draw the scroll around ``lines`` (each at most ``width`` characters)."""
    inner = width + 4
    body = [f"    |  {line.ljust(width)}  |." for line in lines]
    # The rolled top-left corner takes two rows of its own beside the first text rows.
    head = [
        "  " + "_" * (inner + 2),
        " / \\" + " " * inner + "\\.",
        "|   |" + " " * inner + "|.",
    ]
    if body:
        body[0] = " \\_ |" + body[0][5:]
    else:
        body = [" \\_ |" + " " * inner + "|."]
    tail = [
        "    |   " + "_" * (inner - 3) + "|___",
        "    |  /" + " " * (inner + 1) + "/.",
        "    \\_/" + "_" * (inner + 1) + "/.",
    ]
    return "\n".join(head + body + tail) + "\n"


def scroll(text, width=DEFAULT_WIDTH):
    """Wrap ``text`` and draw it inside the scroll."""
    return frame(wrap(text, width), width)


def is_scroll(text, width):
    """True when ``text`` is exactly one scroll of text column ``width`` (any wording)."""
    lines = text.splitlines()
    if len(lines) < 7 or not text.endswith("\n"):
        return False
    empty = frame([], width).splitlines()
    rows = lines[3:-3]
    return (
        lines[:3] == empty[:3]
        and lines[-3:] == empty[-3:]
        and rows[0].startswith(" \\_ |")
        and all(row.startswith("    |  ") for row in rows[1:])
        and all(len(row) == width + 11 and row.endswith("  |.") for row in rows)
    )
