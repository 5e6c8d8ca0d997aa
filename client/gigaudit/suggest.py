"""Short lists and "did you mean": edit distance over a list of names, and long lists capped to a few items."""
from __future__ import annotations

import re
from typing import Sequence

CAP_ITEMS = 8


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions), case-insensitive."""
    a, b = a.lower(), b.lower()
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def closest(word: str, choices: Sequence[str], n: int = 3) -> list[str]:
    """Up to `n` choices nearest to `word`, within a distance of a third of its length (at least 2); names that
    start with it or contain it come first."""
    limit = max(2, len(word) // 3)
    scored = []
    for choice in choices:
        d = edit_distance(word, choice)
        if choice.lower().startswith(word.lower()) or word.lower() in choice.lower():
            d = min(d, 1) - 0.5
        if d <= limit:
            scored.append((d, choice))
    return [c for _, c in sorted(scored)[:n]]


def capped(items: Sequence[str], limit: int = CAP_ITEMS) -> str:
    """`a, b, c, … (+N more)`."""
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f", … (+{len(items) - limit} more)" if len(items) > limit else "")


def unknown(kind: str, word: str, choices: Sequence[str], listing: str) -> str:
    """"unknown architecture 'resnt18'; did you mean resnet18? (gigaudit architectures lists all 83)"."""
    near = closest(word, choices)
    hint = f"; did you mean {' or '.join(near)}?" if near else f"; there are {len(choices)}: {capped(sorted(choices))}"
    return f"unknown {kind} {word!r}{hint} (`{listing}` lists them all)"


_LIST = re.compile(r"(?:[^,;:()\[\]\s][^,;:()\[\]]*?, ){%d,}[^,;:()\[\]]*[^,;:()\[\]\s]" % CAP_ITEMS)


def cap_lists(text: str, limit: int = CAP_ITEMS) -> str:
    """Every comma-separated run of more than `limit` items in `text` cut to `limit` items and a count."""
    def cut(match: re.Match) -> str:
        items = match.group(0).split(", ")
        return capped(items, limit) if len(items) > limit else match.group(0)

    return _LIST.sub(cut, text)
