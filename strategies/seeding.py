"""k-means++ seeding (D^2 sampling) with lazy distance updates.

Each next centre is drawn with probability proportional to its squared distance to the
nearest centre chosen so far (Arthur & Vassilvitskii, 2007). The plain way brings every
row's distance up to date after each pick: one pass over all ``m`` rows per centre, bounded
by memory bandwidth (BADGE at 1M rows: most of its time).

Here the distances are updated lazily, and the draw stays exact. Each row keeps ``u``, its
squared distance to the nearest of the centres it has *seen* (those chosen by its last
update). Distances only shrink as centres are added, so ``u`` is an upper bound of the
true ``d``. A draw proposes row ``i`` with probability ``u_i / sum(u)``, brings that one row
up to date (its distances to the centres added since, one small product), and accepts it
with probability ``d_i / u_i``; a rejected row keeps its exact ``d_i`` as its new ``u_i``.
Every accepted row is drawn with probability proportional to ``u_i * d_i / u_i = d_i``, the
D^2 distribution, whatever the staleness of the others (rejection sampling with an
envelope). After ``max_reject`` rejections in a row (many stale bounds far above their
rows' distances: early picks, which move everything), every row is brought up to date in
one pass against all the centres added since the last such pass: a matrix-matrix product
instead of one matrix-vector product per centre.

Proposals come from a two-level sum tree (block sums, then one block), ``O(m / B + B)`` per
draw. Randomness: ``rng.random()`` for the proposal and one for the acceptance; the picks
follow the D^2 distribution exactly but are not the same rows as an eager implementation
with the same seed.

Pure numpy; rows are *row positions* ``0 .. m-1`` of whatever the caller's distance
function indexes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from strategies.base import InvalidInputError

__all__ = ["MAX_REJECT", "SUM_BLOCK", "d2_seeding"]

#: Rows per block of the proposal tree.
SUM_BLOCK = 1024
#: Rejected proposals in a row before every row is brought up to date at once.
MAX_REJECT = 8
#: Rows per chunk of a full update (bounds its [rows, centres] temporaries).
UPDATE_ROWS = 8192

#: ``sq_dists(rows int64[r], centres int64[c]) -> float64[r, c]``: squared distances.
SqDists = Callable[[np.ndarray, np.ndarray], np.ndarray]


def d2_seeding(
    first: int, sq_dists: SqDists, m: int, k: int, rng: np.random.Generator, *, max_reject: int = MAX_REJECT
) -> tuple[np.ndarray, dict[str, int]]:
    """``k`` row positions, ``first`` then D^2 draws, and counts of the work done
    (``proposals``, ``rejected``, ``row_updates``, ``full_updates``).

    ``sq_dists`` may return tiny negatives from rounding; they count as 0. When every
    remaining row coincides with a centre (all distances 0), the next one is drawn uniformly
    from the rows not taken.
    """
    k = min(int(k), m)
    chosen = [int(first)]
    taken = np.zeros(m, dtype=bool)
    taken[first] = True
    u = np.empty(m, dtype=np.float64)  # [m] upper bounds of d^2 to the nearest centre
    seen = np.ones(m, dtype=np.int64)  # [m] how many of ``chosen`` each u accounts for
    stats = {"proposals": 0, "rejected": 0, "row_updates": 0, "full_updates": 0}
    first_c = np.asarray([first], dtype=np.int64)
    for s in range(0, m, UPDATE_ROWS):
        rows = np.arange(s, min(m, s + UPDATE_ROWS), dtype=np.int64)
        u[rows] = np.maximum(sq_dists(rows, first_c)[:, 0], 0.0)
    u[first] = 0.0
    nb = -(-m // SUM_BLOCK)
    bsum = np.zeros(nb, dtype=np.float64)  # [nb] sum of u per block

    def resum() -> None:
        with np.errstate(over="ignore"):  # an infinite sum is refused with its value by propose
            np.add.reduceat(u, np.arange(0, m, SUM_BLOCK), out=bsum)

    def set_u(i: int, value: float) -> None:
        bsum[i // SUM_BLOCK] += value - u[i]
        u[i] = value

    def update_all() -> None:
        """Every row up to date with every centre (one pass against those added since)."""
        base = int(seen.min())
        new = np.asarray(chosen[base:], dtype=np.int64)
        if new.size:
            for s in range(0, m, UPDATE_ROWS):
                rows = np.arange(s, min(m, s + UPDATE_ROWS), dtype=np.int64)
                d = np.maximum(sq_dists(rows, new), 0.0).min(axis=1)  # [r]
                np.minimum(u[rows], d, out=u[s : s + rows.size])
            u[taken] = 0.0
            seen[:] = len(chosen)
        resum()
        stats["full_updates"] += 1

    def propose() -> int | None:
        total = float(bsum.sum())
        if not np.isfinite(total):
            raise InvalidInputError(f"gradient distances overflow (sum {total}); features or head are too large")
        if total <= 0.0:
            return None
        r = rng.random() * total
        cum = np.cumsum(bsum)  # [nb]
        j = min(int(np.searchsorted(cum, r, side="right")), nb - 1)
        lo = j * SUM_BLOCK
        ub = u[lo : lo + SUM_BLOCK]  # [B]
        r -= float(cum[j - 1]) if j else 0.0
        c = np.cumsum(ub)  # [B]
        i = min(int(np.searchsorted(c, r, side="right")), ub.size - 1)
        if ub[i] <= 0.0:  # rounding at a block's edge: the nearest row with weight
            pos = np.flatnonzero(ub > 0.0)
            if pos.size == 0:
                resum()  # a block sum drifted above its (zero) rows: fix it and draw again
                return propose()
            i = int(pos[np.argmin(np.abs(pos - i))])
        return lo + i

    resum()
    while len(chosen) < k:
        rejects = 0
        while True:
            i = propose()
            if i is None:
                if int(seen.min()) < len(chosen):
                    update_all()  # the bounds say 0: so are the distances once up to date
                    continue
                i = int(rng.choice(np.flatnonzero(~taken)))  # every row sits on a centre
                break
            stats["proposals"] += 1
            bound = float(u[i])
            if seen[i] < len(chosen):
                new = np.asarray(chosen[seen[i] :], dtype=np.int64)
                d = min(bound, float(np.maximum(sq_dists(np.asarray([i]), new), 0.0).min()))
                seen[i] = len(chosen)
                stats["row_updates"] += 1
            else:
                d = bound
            if rng.random() * bound < d:
                break
            set_u(i, d)
            stats["rejected"] += 1
            rejects += 1
            if rejects >= max_reject:
                update_all()
                rejects = 0
        chosen.append(int(i))
        taken[i] = True
        set_u(int(i), 0.0)
    return np.asarray(chosen, dtype=np.int64), stats
