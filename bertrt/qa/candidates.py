"""The answer candidates of run_squad's write_predictions, in numpy over all features at once: each feature's
allowed (start, end) pairs among its n-best starts and ends, ranked best first within each example.

Rows are padded to the longest feature with -inf logits (which sort last), so that a whole batch takes a handful of
numpy calls instead of a dozen small ones per feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from bertrt.qa.features import Feature


def _padded(rows: Sequence, lengths: np.ndarray, width: int, fill, dtype, inside: np.ndarray | None) -> np.ndarray:
    """[len(rows), width]: rows[i][:lengths[i]] in row i, `fill` after it. `inside` is
    np.arange(width) < lengths[:, None], or None where every length is `width`."""
    if len({len(r) for r in rows}) == 1 and len(rows[0]) >= width:
        # Rows of one length (one batch's logits): one stacked copy instead of one assignment per row.
        out = np.asarray(rows)[:, :width].astype(dtype)
        if inside is not None:
            out[~inside] = fill
        return out
    out = np.full((len(rows), width), fill, dtype=dtype)
    # row-major order: row 0's first lengths[0] cells, then row 1's, ...
    out[np.ones_like(out, dtype=bool) if inside is None else inside] = np.concatenate(
        [np.asarray(r)[:n] for r, n in zip(rows, lengths.tolist())])
    return out


@dataclass
class PairTable:
    """Per feature f: its top-k start positions top_start[f, i, 0] and end positions top_end[f, 0, j] (k = n_best,
    in rank order), which (start rank, end rank) pairs are allowed (valid[f, i, j]) and their logits."""

    top_start: np.ndarray  # [n, k, 1]
    top_end: np.ndarray  # [n, 1, k]
    valid: np.ndarray  # bool [n, k, k]
    logit: np.ndarray  # float64 [n, k, k]: start + end logit (meaningful where valid)
    null: np.ndarray  # float64 [n]: start[0] + end[0], v2's "no answer" score of each feature


def pair_table(features: Sequence[Feature], start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray],
               lengths: np.ndarray, n_best: int, max_answer_length: int) -> PairTable:
    """run_squad's filters on each feature's n-best starts x n-best ends; `lengths` holds each feature's length."""
    n, width = len(features), int(lengths.max())
    inside = None if lengths.min() == width else np.arange(width) < lengths[:, None]
    start = _padded(start_logits, lengths, width, -np.inf, np.float64, inside)  # float64, as run_squad adds them
    end = _padded(end_logits, lengths, width, -np.inf, np.float64, inside)
    # make_features' layout: the context window is segment 1 except the final [SEP] (token_spans not None)
    is_context = _padded([f.segment_ids for f in features], lengths, width, False, bool, inside)
    is_context[np.arange(n), lengths - 1] = False
    max_context = _padded([f.max_context for f in features], lengths, width, False, bool, inside)
    k = min(n_best, width)
    top_start, top_end = _top_k(start, k), _top_k(end, k)  # [n, k]
    rows = np.arange(n)[:, None]
    starts_ok = is_context[rows, top_start] & max_context[rows, top_start]
    length = top_end[:, None, :] - top_start[:, :, None]  # end - start, [n, k, k]
    valid = (starts_ok[:, :, None] & is_context[rows, top_end][:, None, :]
             & (length >= 0) & (length < max_answer_length))  # end >= start, end - start + 1 <= max_answer_length
    return PairTable(top_start[:, :, None], top_end[:, None, :], valid,
                     start[rows, top_start][:, :, None] + end[rows, top_end][:, None, :], start[:, 0] + end[:, 0])


def _top_k(x: np.ndarray, k: int) -> np.ndarray:
    """Per row of x (float64, no NaN), the positions of the k largest values, largest first, equal values in
    position order: np.argsort(-x, axis=1, kind="stable")[:, :k] (run_squad's sorted() over enumerate).

    For logits that are float32 values (what models give) the stable sort is replaced by a plain one over unique
    integer keys (value order, then position), twice as fast on a batch's rows; small inputs keep the stable sort,
    which is then cheaper."""
    n, width = x.shape
    if n * width < 2048 or width >= 1 << 20:
        return np.argsort(-x, axis=1, kind="stable")[:, :k]
    x32 = x.astype(np.float32)
    if not np.array_equal(x32, x):
        return np.argsort(-x, axis=1, kind="stable")[:, :k]
    bits = x32.view(np.int32).astype(np.int64)
    # Float order as integers, descending: -bits for x >= 0, the magnitude bits for x < 0 (-0.0 and 0.0 both 0,
    # as they compare equal).
    descending = np.where(bits < 0, bits & 0x7FFFFFFF, -bits)
    return np.argsort((descending << 20) + np.arange(width), axis=1)[:, :k]


def near_top(table: PairTable, n_best: int) -> np.ndarray:
    """The allowed pairs whose logit is at least the feature's n_best-th best allowed logit (ties included): a
    superset of every example's n_best best candidates (a candidate below that logit has n_best better ones in its
    own feature), so ranking just these gives each example's first n_best exactly, at a fraction of the sort."""
    k2 = table.valid.shape[1] * table.valid.shape[2]
    flat = np.where(table.valid, table.logit, -np.inf).reshape(len(table.valid), k2)
    if k2 <= n_best or np.isnan(flat).any():  # NaN: keep everything, where the full ranking puts it
        return table.valid
    kth = -np.partition(-flat, n_best - 1, axis=1)[:, n_best - 1]  # -inf where a feature has fewer allowed pairs
    return table.valid & (table.logit >= kth[:, None, None])


@dataclass
class Ranked:
    """Candidates (feature, start, end, logit) best first within each example; example x's are
    [bounds[x], bounds[x + 1]). Feature -1 is v2's "no answer" (start = end = 0)."""

    feature: np.ndarray
    start: np.ndarray
    end: np.ndarray
    logit: np.ndarray
    example: np.ndarray
    bounds: np.ndarray  # [n_examples + 1]


def ranked(table: PairTable, allowed: np.ndarray, example_of: np.ndarray, null_score: np.ndarray,
           version_2: bool) -> Ranked:
    """The pairs where `allowed` [n, k, k] (and, v2, each example's null, where it has windows), ranked."""
    feature, i, j = np.nonzero(allowed)  # row-major: feature, start rank, end rank
    s, e = table.top_start[feature, i, 0], table.top_end[feature, 0, j]
    logit = table.logit[feature, i, j]
    example = example_of[feature]
    if version_2:
        # run_squad ranks "no answer" (feature -1) after the spans, so it takes an n-best slot when good: appended
        # last, the stable sort below puts it after spans of equal logit.
        nulls = np.flatnonzero(np.isfinite(null_score))  # the examples that have windows
        example = np.concatenate([example, nulls])
        feature, s, e = (np.concatenate([a, np.full(len(nulls), v)]) for a, v in ((feature, -1), (s, 0), (e, 0)))
        logit = np.concatenate([logit, null_score[nulls]])
    # Best first within each example; ties keep run_squad's window/start/end order (lexsort is stable; an example's
    # features are in window order).
    order = np.lexsort((-logit, example))
    example = example[order]
    return Ranked(feature[order], s[order], e[order], logit[order], example,
                  np.searchsorted(example, np.arange(len(null_score) + 1)))
