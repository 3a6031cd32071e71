"""Label resolution: an example's label as a pure function of its append-only label events.

How events become an example's label (``resolve``):

* ``overlap == 1``: the newest label among the annotators' standing votes (each one's
  latest event, when it is a ``label``). Anyone may correct anyone; an undo withdraws
  only its own annotator's label, so an earlier label by someone else comes back.
* ``overlap > 1``: each annotator's latest event is their vote (``retract`` and ``unsure``
  withdraw it). Once ``overlap`` annotators have voted, the rule decides:

  - ``majority``: the label with a strict majority wins; without one the example is
    *disputed* and goes back to the queue for one more annotator (``LabelState.needs``),
    until a majority exists;
  - ``unanimous``: the votes must all agree; any disagreement is *disputed* and routed
    back to the annotators who voted (they see the other votes and may change theirs),
    as well as to anyone else, until every standing vote agrees.

  An ``adjudicator``'s standing vote decides a disputed example under either rule.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

KINDS = ("label", "retract", "unsure")


@dataclass
class LabelState:
    """Where one example stands: its resolved label (or None) and the votes behind it."""

    label: str | None
    votes: dict[str, str] = field(default_factory=dict)  # annotator -> label
    status: str = "pending"  # pending | resolved | disputed
    needs: int = 1  # more votes required before it can resolve


@dataclass(frozen=True)
class ResolvePolicy:
    """How votes become a label: votes needed, the rule past them, and who adjudicates."""

    overlap: int = 1
    rule: str = "majority"  # majority | unanimous
    adjudicator: str | None = None

    def __post_init__(self) -> None:
        if self.overlap < 1:
            raise ValueError(f"overlap must be >= 1, got {self.overlap}")
        if self.rule not in ("majority", "unanimous"):
            raise ValueError(f"unknown resolve rule {self.rule!r} (majority or unanimous)")

    @property
    def routes_back(self) -> bool:
        """Disputes return to the annotators who voted (not only to new ones)."""
        return self.rule == "unanimous"


def as_policy(policy: int | ResolvePolicy) -> ResolvePolicy:
    return policy if isinstance(policy, ResolvePolicy) else ResolvePolicy(overlap=int(policy))


def resolve(events: Iterable[Mapping[str, Any]], overlap: int | ResolvePolicy = 1) -> dict[str, LabelState]:
    """Resolve label events (oldest first) into one ``LabelState`` per example id.

    ``overlap``: the votes needed (an int, majority rule) or a full ``ResolvePolicy``.
    """
    policy = as_policy(overlap)
    overlap = policy.overlap
    latest: dict[str, dict[str, tuple[int, Mapping[str, Any]]]] = {}  # example -> annotator -> (order, event)
    for order, e in enumerate(events):
        latest.setdefault(e["example_id"], {})[e["annotator"]] = (order, e)
    out: dict[str, LabelState] = {}
    for ex, by_ann in latest.items():
        current = {a: oe for a, oe in by_ann.items() if (oe[1].get("kind") or "label") == "label"}
        votes = {a: oe[1]["label"] for a, oe in current.items()}
        if overlap == 1:
            # The newest standing vote decides: a correction by anyone replaces the label,
            # and an undo withdraws only its own annotator's label.
            label = max(current.values(), key=lambda oe: oe[0])[1]["label"] if current else None
            out[ex] = LabelState(label, votes, "resolved" if label is not None else "pending", 0 if label else 1)
            continue
        if len(votes) < overlap:
            out[ex] = LabelState(None, votes, "pending", overlap - len(votes))
            continue
        (top, n_top), *rest = Counter(votes.values()).most_common() + [(None, 0)]
        agreed = n_top == len(votes) if policy.rule == "unanimous" else n_top * 2 > len(votes)
        if agreed:
            out[ex] = LabelState(top, votes, "resolved", 0)
        elif policy.adjudicator is not None and policy.adjudicator in votes:
            out[ex] = LabelState(votes[policy.adjudicator], votes, "adjudicated", 0)
        else:
            out[ex] = LabelState(None, votes, "disputed", 1)
    return out


@dataclass
class AgreementCounts:
    """Sums behind ``agreement``; counts of disjoint sets of examples add up."""

    n_items: int = 0
    pairs: int = 0
    same: int = 0
    marginals: Counter = field(default_factory=Counter)  # label -> votes in pairs

    def __add__(self, other: AgreementCounts) -> AgreementCounts:
        return AgreementCounts(
            self.n_items + other.n_items, self.pairs + other.pairs, self.same + other.same,
            self.marginals + other.marginals,
        )

    def __sub__(self, other: AgreementCounts) -> AgreementCounts:
        """Take out the counts of examples that ``other`` summed (a part of these)."""
        return AgreementCounts(
            self.n_items - other.n_items, self.pairs - other.pairs, self.same - other.same,
            self.marginals - other.marginals,
        )

    def summary(self) -> dict[str, Any]:
        if not self.pairs:
            return {"n_items": 0, "pairs": 0, "percent": None, "kappa": None}
        po = self.same / self.pairs
        total = sum(self.marginals.values())
        pe = sum((c / total) ** 2 for c in self.marginals.values())
        kappa = None if pe >= 1.0 else (po - pe) / (1.0 - pe)
        return {"n_items": self.n_items, "pairs": self.pairs, "percent": po, "kappa": kappa}


def agreement_counts(events: Iterable[Mapping[str, Any]]) -> AgreementCounts:
    """Pairwise agreement sums over the examples two or more annotators labeled."""
    out = AgreementCounts()
    for st in resolve(events, overlap=2).values():
        labs = list(st.votes.values())
        if len(labs) < 2:
            continue
        out.n_items += 1
        for i in range(len(labs)):
            for j in range(i + 1, len(labs)):
                out.pairs += 1
                out.same += labs[i] == labs[j]
                out.marginals[labs[i]] += 1
                out.marginals[labs[j]] += 1
    return out


def agreement(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Agreement between annotators on examples two or more of them labeled.

    ``percent``: share of annotator pairs (over all shared examples) that chose the same
    label; ``kappa``: Cohen's kappa pooled over those pairs (None when undefined);
    ``n_items``: examples with two or more votes.
    """
    return agreement_counts(events).summary()
