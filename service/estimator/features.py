"""Cheap hand-made text features that carry difficulty signal embeddings miss (size, notation)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

_LATEX_CMD = re.compile(r"\\[a-zA-Z]+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_MATH_SYM = re.compile(r"[=+\-*/^_<>|]")
_WORD = re.compile(r"\w+")
_BIG_OPS = re.compile(r"\\(?:sum|prod|int|lim|binom|frac|sqrt|log|sin|cos|tan)\b")
_KEYWORDS: tuple[tuple[str, str], ...] = (  # each matched from a word boundary
    ("prove", r"(?:prove|show that)\b"),
    ("count", r"(?:how many|number of)\b"),
    ("prob", r"probabilit"),
    ("max", r"(?:maxim|minim|greatest|least|largest|smallest)"),
    ("geom", r"(?:triangle|circle|angle|square|polygon|area)\b"),
    ("all", r"(?:all|every)\b"),
)
# One case-insensitive scan for all keywords: six searches took half the time of a feature
# row. Every keyword starts at a word boundary, so no match hides another.
_ANY_KEYWORD = re.compile(
    r"\b(?:" + "|".join(f"(?P<{k}>{p})" for k, p in _KEYWORDS) + ")", re.IGNORECASE
)

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "digit_share",
    "latex_per_100",
    "log_latex",
    "log_dollars",
    "log_math_syms",
    "log_numbers",
    "max_number_digits",
    "questions",
    "log_newlines",
    "upper_share",
    "log_big_ops",
    "non_ascii_share",
    *(f"kw_{k}" for k, _ in _KEYWORDS),
)
N_FEATURES = len(FEATURE_NAMES)


_ASCII_DIGIT = re.compile(r"[0-9]")
_ASCII_UPPER = re.compile(r"[A-Z]")


def _char_counts(text: str) -> tuple[int, int, int]:
    """Digits, upper-case letters and non-ASCII characters, in C for ASCII text.

    Per-character Python loops were half the embedding time; the fast path gives the same
    counts because str.isdigit / str.isupper only differ from [0-9] / [A-Z] outside ASCII.
    """
    if text.isascii():
        return len(_ASCII_DIGIT.findall(text)), len(_ASCII_UPPER.findall(text)), 0
    return (
        sum(c.isdigit() for c in text),
        sum(c.isupper() for c in text),
        sum(ord(c) > 127 for c in text),
    )


def _one(text: str) -> list[float]:
    """Compute the feature row of one text."""
    n = max(len(text), 1)
    digits, upper, non_ascii = _char_counts(text)
    latex = len(_LATEX_CMD.findall(text))
    numbers = _NUMBER.findall(text)
    row = [
        math.log1p(len(text)),
        math.log1p(len(_WORD.findall(text))),
        digits / n,
        100.0 * latex / n,
        math.log1p(latex),
        math.log1p(text.count("$")),
        math.log1p(len(_MATH_SYM.findall(text))),
        math.log1p(len(numbers)),
        float(max((len(x) for x in numbers), default=0)),
        float(text.count("?")),
        math.log1p(text.count("\n")),
        upper / n,
        math.log1p(len(_BIG_OPS.findall(text))),
        non_ascii / n,
    ]
    found = {m.lastgroup for m in _ANY_KEYWORD.finditer(text)}
    row.extend(1.0 if name in found else 0.0 for name, _ in _KEYWORDS)
    return row


def text_features(texts: Sequence[str]) -> np.ndarray:
    """Return an (n, N_FEATURES) float32 matrix; the model standardises it."""
    if len(texts) == 0:
        return np.zeros((0, N_FEATURES), dtype=np.float32)
    return np.asarray([_one(t) for t in texts], dtype=np.float32)
