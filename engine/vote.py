"""Self-consistency: one answer from N sampled answers by voting on the metric set. Pure functions.

A small model's single greedy answer over-extracts (issue 7: 1.64 predicted metrics per labelled one).
Metrics that most samples agree on are the ones it is sure of; a metric that appears in one sample of
five is usually a number it latched onto. The vote:

1. Cluster the metrics of all valid samples by name (data.names: equal after NFKC/casefold/whitespace,
   or one contains the other with the shorter >= 2 characters). A cluster takes at most one metric per
   sample; an exactly-equal (normalised) name is preferred over a containment match.
2. Keep a cluster when the share of valid samples naming it (`agreement`) is >= `threshold`.
3. Its name and type: the most frequent form in the cluster (ties: the form of the earliest sample).
   Its score: the mean of the cluster's scores. Its reason: the chosen sample's, else the first of the
   winning name.
4. The chosen sample: most kept clusters named, then fewest metrics outside them, then lowest index. It
   gives the `analysis`, the `raw` text, and the order of metrics within equal agreement.
5. At most `max_metrics` (the schema's maximum), preferring higher agreement, then higher score. The
   output order is agreement (high first), then the chosen sample's order, then score.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reportminer.data.names import names_equal, normalise_name, same_metric
from reportminer.data.schema import AGREEMENT, MAX_METRICS, Extraction, Metric

DEFAULT_VOTE_THRESHOLD = 0.5
_EPS = 1e-9


@dataclass
class _Cluster:
    members: list[tuple[int, int, Metric]] = field(default_factory=list)  # (sample, position, metric)

    @property
    def samples(self) -> set[int]:
        return {s for s, _, _ in self.members}

    def majority(self, attr: str) -> str:
        values = [getattr(m, attr) for _, _, m in self.members]
        counts = Counter(values)
        best = max(counts.values())
        return next(v for v in values if counts[v] == best)  # members are in sample order: earliest wins ties


@dataclass(frozen=True)
class Vote:
    chosen: int  # index (into the answers given) of the sample giving analysis, raw and order
    analysis: str
    metrics: list[dict[str, Any]]  # metric dicts with `agreement`, in output order
    valid: int
    total: int


def _cluster(answers: Sequence[Extraction | None]) -> list[_Cluster]:
    clusters: list[_Cluster] = []
    for s, ex in enumerate(answers):
        if ex is None:
            continue
        for pos, m in enumerate(ex.metrics):
            open_ = [c for c in clusters if s not in c.samples]
            c = next((c for c in open_ if any(names_equal(m.metric_name, o.metric_name) for _, _, o in c.members)), None)
            if c is None:
                c = next((c for c in open_ if any(same_metric(m.metric_name, o.metric_name) for _, _, o in c.members)), None)
            if c is None:
                c = _Cluster()
                clusters.append(c)
            c.members.append((s, pos, m))
    return clusters


def vote(
    answers: Sequence[Extraction | None], threshold: float = DEFAULT_VOTE_THRESHOLD, max_metrics: int = MAX_METRICS
) -> Vote | None:
    """The voted answer of `answers` (None entries are invalid samples); None when none is valid."""
    valid = [s for s, ex in enumerate(answers) if ex is not None]
    if not valid:
        return None
    n = len(valid)
    clusters = _cluster(answers)
    kept = [c for c in clusters if len(c.samples) >= threshold * n - _EPS]
    kept_ids = {id(c) for c in kept}

    def fit(s: int) -> tuple[int, int, int]:
        ex = answers[s]
        assert ex is not None
        named = sum(1 for c in kept if s in c.samples)
        return (-named, len(ex.metrics) - named, s)

    chosen = min(valid, key=fit)
    chosen_ex = answers[chosen]
    assert chosen_ex is not None

    rows: list[tuple[tuple[float, int, float, int], dict[str, Any]]] = []
    for k, c in enumerate(clusters):
        if id(c) not in kept_ids:
            continue
        name = c.majority("metric_name")
        in_chosen = [(pos, m) for s, pos, m in c.members if s == chosen]
        if in_chosen:
            position, reason = in_chosen[0][0], in_chosen[0][1].reason
        else:
            position, reason = MAX_METRICS + k, next(m.reason for _, _, m in c.members if m.metric_name == name)
        score = sum(m.score for _, _, m in c.members) / len(c.members)
        agreement = len(c.samples) / n
        rows.append(((-agreement, position, -score, k), {
            "metric_name": name,
            "metric_type": c.majority("metric_type"),
            "score": score,
            "reason": reason,
            AGREEMENT: agreement,
        }))
    # The cap prefers agreement, then score; the order of what stays is agreement, then the chosen answer's.
    capped = sorted(rows, key=lambda r: (r[0][0], r[0][2], r[0][3]))[:max_metrics]
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _, m in sorted(capped, key=lambda r: r[0]):
        key = normalise_name(m["metric_name"])
        if key in seen:  # two clusters settled on the same name: the contract forbids duplicates
            continue
        seen.add(key)
        out.append(m)
    return Vote(chosen=chosen, analysis=chosen_ex.analysis, metrics=out, valid=n, total=len(answers))


def split_by_threshold(
    metrics: list[dict[str, Any]], threshold: float | None, key: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept, dropped): metrics whose `key` ("score" or "agreement") is below `threshold` are dropped."""
    if threshold is None:
        return metrics, []
    kept = [m for m in metrics if float(m.get(key) or 0.0) >= threshold - _EPS]
    dropped = [m for m in metrics if float(m.get(key) or 0.0) < threshold - _EPS]
    return kept, dropped
