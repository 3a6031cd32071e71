"""Text-overlap metrics for generated responses (pure Python, no model).

ROUGE-L (Lin, 2004, "ROUGE: A Package for Automatic Evaluation of Summaries", section 3.1)
over one prediction and one reference:

    P = LCS(pred, ref) / |pred|,   R = LCS(pred, ref) / |ref|,   F = 2 P R / (P + R)

(``beta = 1``), which simplifies to ``F = 2 LCS / (|pred| + |ref|)``. Tokens are the
lowercased word-character runs (``\\w+``, Unicode aware): punctuation and whitespace only
separate tokens, so "Paris." and "paris" match.

Empty cases (``|x|`` = number of tokens, so a string of punctuation is empty too):

* both empty: 1.0; an empty answer to an empty reference has nothing wrong with it.
  (The ``rouge_score`` package returns 0 here; references in real data are never empty,
  so this only decides degenerate test cases.)
* exactly one empty: 0.0 (nothing in common, and P or R is 0).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["lcs_length", "mean_rouge_l", "rouge_l", "words"]

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The lowercased word tokens ROUGE-L compares."""
    return _WORD.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists.

    One row of the dynamic-programming table at a time: O(|a| |b|) time, O(min) memory.
    """
    if len(a) < len(b):
        a, b = b, a  # the row runs over the shorter list
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (beta = 1) of ``prediction`` against ``reference``, in [0, 1]."""
    p, r = words(prediction), words(reference)
    if not p and not r:
        return 1.0
    if not p or not r:
        return 0.0
    return 2.0 * lcs_length(p, r) / (len(p) + len(r))


def mean_rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 over aligned pairs (each pair weighs the same)."""
    if len(predictions) != len(references):
        raise ValueError(
            f"mean_rouge_l needs one reference per prediction: {len(predictions)} predictions, "
            f"{len(references)} references"
        )
    if not predictions:
        raise ValueError("mean_rouge_l of no pairs is undefined")
    return sum(rouge_l(p, r) for p, r in zip(predictions, references, strict=True)) / len(predictions)
