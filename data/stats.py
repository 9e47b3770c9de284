"""What a data set looks like, and the shapes that have hurt this project before.

The seed's first data set had every row at exactly two metrics; the model it trained learnt "always
two", and nobody noticed until the scores came in. `stats` makes that visible before training: count,
scenario and type distributions, lengths, the most frequent names, and alarms.

Alarms (each rule needs at least MIN_ROWS_FOR_ALARMS rows; smaller sets are too small to judge):
  - `label_count_skew`: >= 80 % of the labelled rows have the same metric count (COUNT_SKEW_SHARE).
  - `type_imbalance`: a scenario (`type` column) holds < 5 % (SCENARIO_MIN_SHARE) or > 60 %
    (SCENARIO_MAX_SHARE) of the rows that name one, which includes a set with a single scenario. The
    seed's own split (A 39 %, B 29 %, C 10 %, D 22 %) passes; a scenario under 5 % is too rare to be
    learnt and one over 60 % dominates the loss. Sets without a `type` column are not judged.
  - `duplicate_paragraphs`: the same paragraph text appears more than once (repeats are over-weighted in
    training, and leak when they sit on both sides of a train/eval split).

Works on seed-format JSONL (file or folder) and on Parquet shards (gold columns, or the engine's
`metrics` column for predictions), one file at a time and with column projection, so it also runs over
nightly corpus shards. Computation is pyarrow.compute; nothing loops over rows in Python except hashing
paragraphs for the duplicate count.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .io import DataError, data_kind, jsonl_to_table, parquet_files, read_parquet
from .schema import (
    CHAPTER_TITLE,
    GOLD_ANALYSIS,
    GOLD_METRICS,
    MAX_ANALYSIS_CHARS,
    MAX_NAME_CHARS,
    MAX_REASON_CHARS,
    METRICS,
    PARAGRAPH,
    SCENARIO,
)

COUNT_SKEW_SHARE = 0.80
SCENARIO_MIN_SHARE = 0.05
SCENARIO_MAX_SHARE = 0.60
MIN_ROWS_FOR_ALARMS = 10
PREDICTED_METRICS = METRICS  # the engine's result column (same Arrow type as gold_metrics)


@dataclass(frozen=True)
class Alarm:
    code: str
    message: str


@dataclass
class DataStats:
    path: str
    rows: int = 0
    labelled: int = 0
    metric_column: str | None = None
    metric_count: dict[int, int] = field(default_factory=dict)
    scenarios: dict[str, int] | None = None
    count_by_scenario: dict[str, dict[int, int]] = field(default_factory=dict)
    metric_types: dict[str, int] = field(default_factory=dict)
    row_type_mix: dict[str, int] = field(default_factory=dict)  # financial / business / mixed / none
    paragraph_chars: dict[str, float] = field(default_factory=dict)
    title_chars: dict[str, float] = field(default_factory=dict)
    metrics_total: int = 0
    distinct_names: int = 0
    top_names: list[tuple[str, int]] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    label_chars_max: dict[str, int] = field(default_factory=dict)
    duplicate_paragraphs: int = 0
    alarms: list[Alarm] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["metric_count"] = {str(k): v for k, v in self.metric_count.items()}
        d["count_by_scenario"] = {s: {str(k): v for k, v in c.items()} for s, c in self.count_by_scenario.items()}
        d["top_names"] = [{"name": n, "count": c} for n, c in self.top_names]
        return d

    def render(self) -> str:
        """The terminal report."""
        L = [f"{self.path}: {self.rows} rows, {self.labelled} labelled" + (f" ({self.metric_column})" if self.metric_column else "")]

        def dist(d: dict[Any, int], total: int) -> str:
            return "  ".join(f"{k}: {v} ({v / total:.0%})" for k, v in d.items()) if total else "-"

        if self.labelled:
            L.append(f"metric count      {dist(self.metric_count, self.labelled)}")
        if self.scenarios is not None:
            L.append(f"scenario (type)   {dist(self.scenarios, sum(self.scenarios.values()))}")
            for s, c in self.count_by_scenario.items():
                L.append(f"  {s:<16}count {dist(c, sum(c.values()))}")
        if self.metrics_total:
            L.append(f"metric_type       {dist(self.metric_types, self.metrics_total)}")
            L.append(f"row type mix      {dist(self.row_type_mix, self.labelled)}")
            L.append(
                f"scores            min {self.scores['min']:.2f}  mean {self.scores['mean']:.3f}  max {self.scores['max']:.2f}"
            )
            L.append(
                "longest label     "
                + "  ".join(f"{k} {v}" for k, v in self.label_chars_max.items())
                + f"  (schema bounds: name {MAX_NAME_CHARS}, reason {MAX_REASON_CHARS}, analysis {MAX_ANALYSIS_CHARS})"
            )
            L.append(f"metric names      {self.metrics_total} in total, {self.distinct_names} distinct; top: "
                     + ", ".join(f"{n} {c}" for n, c in self.top_names[:10]))
        if self.paragraph_chars:
            p = self.paragraph_chars
            L.append(
                f"paragraph chars   min {p['min']:.0f}  mean {p['mean']:.0f}  p50 {p['p50']:.0f}  p90 {p['p90']:.0f}  p99 {p['p99']:.0f}  max {p['max']:.0f}"
            )
        L.append(f"duplicate paragraphs {self.duplicate_paragraphs}")
        if self.alarms:
            L.append(f"ALARMS ({len(self.alarms)}):")
            L.extend(f"  [{a.code}] {a.message}" for a in self.alarms)
        else:
            L.append("alarms: none")
        return "\n".join(L)


def _length_summary(lengths: pa.ChunkedArray) -> dict[str, float]:
    lens = pc.drop_null(lengths)
    if len(lens) == 0:
        return {}
    q = pc.quantile(lens, q=[0.5, 0.9, 0.99], interpolation="nearest").to_pylist()
    mm = pc.min_max(lens).as_py()
    return {"min": mm["min"], "mean": round(pc.mean(lens).as_py(), 1), "p50": q[0], "p90": q[1], "p99": q[2], "max": mm["max"]}


def _tables(path: Path) -> Iterator[tuple[str, pa.Table]]:
    """Tables with only the columns stats reads: JSONL through data.io, Parquet file by file."""
    wanted = {CHAPTER_TITLE, PARAGRAPH, SCENARIO, GOLD_METRICS, GOLD_ANALYSIS, PREDICTED_METRICS}
    if data_kind(path) == "jsonl":
        yield str(path), jsonl_to_table(path)
        return
    files = parquet_files(path)
    for f in files:
        try:
            schema = pq.read_schema(f)
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise DataError(f"{f}: cannot read Parquet: {e}") from None
        yield str(f), read_parquet(f, columns=[c for c in schema.names if c in wanted])


class _Collected:
    """Arrays gathered table by table; `fill` turns them into the numbers of a DataStats."""

    def __init__(self) -> None:
        self.counts: list[pa.Array] = []  # metrics per labelled row
        self.scen_all: list[pa.Array] = []
        self.scen_labelled: list[pa.Array] = []
        self.para_lens: list[pa.Array] = []
        self.title_lens: list[pa.Array] = []
        self.names: list[pa.Array] = []
        self.mtypes: list[pa.Array] = []
        self.scores: list[pa.Array] = []
        self.reason_lens: list[pa.Array] = []
        self.analysis_lens: list[pa.Array] = []
        self.mix: Counter[str] = Counter()
        self.seen: set[int] = set()

    # ---- per table ------------------------------------------------------------------------------------

    def add_table(self, st: DataStats, t: pa.Table) -> None:
        st.rows += t.num_rows
        self.add_text(st, t)
        scen = t.column(SCENARIO).cast(pa.string()).combine_chunks() if SCENARIO in t.schema.names else None
        if scen is not None:
            self.scen_all.append(scen)
        self.add_labels(st, t, scen)

    def add_text(self, st: DataStats, t: pa.Table) -> None:
        """Paragraph and title lengths; repeated paragraphs (by hash)."""
        if PARAGRAPH in t.schema.names:
            para = t.column(PARAGRAPH)
            self.para_lens.append(pc.utf8_length(para).combine_chunks())
            for p in para.to_pylist():
                h = hash(p)
                if h in self.seen:
                    st.duplicate_paragraphs += 1
                else:
                    self.seen.add(h)
        if CHAPTER_TITLE in t.schema.names:
            self.title_lens.append(pc.utf8_length(t.column(CHAPTER_TITLE)).combine_chunks())

    def add_labels(self, st: DataStats, t: pa.Table, scen: pa.Array | None) -> None:
        """Metric counts, names, types, scores and label lengths of the labelled rows (gold, else predicted)."""
        names = t.schema.names
        mcol = GOLD_METRICS if GOLD_METRICS in names else PREDICTED_METRICS if PREDICTED_METRICS in names else None
        if mcol is None:
            return
        st.metric_column = st.metric_column or mcol
        lists = t.column(mcol).combine_chunks()
        labelled = pc.is_valid(lists)
        if GOLD_ANALYSIS in names and mcol == GOLD_METRICS:
            analysis = t.column(GOLD_ANALYSIS).combine_chunks()
            labelled = pc.or_(labelled, pc.is_valid(analysis))
            self.analysis_lens.append(pc.utf8_length(pc.filter(analysis, pc.is_valid(analysis))))
        lists = pc.filter(lists, labelled)
        st.labelled += len(lists)
        self.counts.append(pc.fill_null(pc.list_value_length(lists), 0))
        if scen is not None:
            self.scen_labelled.append(pc.filter(scen, labelled))
        flat = pc.list_flatten(lists)
        if not len(flat):
            self.mix["none"] += len(lists)
            return
        self.names.append(pc.struct_field(flat, "metric_name"))
        types = pc.struct_field(flat, "metric_type")
        self.mtypes.append(types)
        self.scores.append(pc.struct_field(flat, "score"))
        self.reason_lens.append(pc.utf8_length(pc.struct_field(flat, "reason")))
        self.add_type_mix(lists, types)

    def add_type_mix(self, lists: pa.Array, types: pa.Array) -> None:
        """Rows whose metrics are all financial, all business, mixed, or neither."""
        per_row = pa.table(
            {"row": pc.list_parent_indices(lists), "fin": pc.equal(types, "financial"), "bus": pc.equal(types, "business")}
        ).group_by("row").aggregate([("fin", "any"), ("bus", "any")])
        fin, bus = per_row.column("fin_any"), per_row.column("bus_any")
        mixed = pc.sum(pc.and_(fin, bus)).as_py() or 0
        fin_only = pc.sum(pc.and_(fin, pc.invert(bus))).as_py() or 0
        bus_only = pc.sum(pc.and_(bus, pc.invert(fin))).as_py() or 0
        self.mix["mixed"] += mixed
        self.mix["financial"] += fin_only
        self.mix["business"] += bus_only
        self.mix["none"] += len(lists) - mixed - fin_only - bus_only  # no metrics, or only unknown types

    # ---- totals ---------------------------------------------------------------------------------------

    def fill(self, st: DataStats, top: int) -> None:
        self.fill_lengths(st)
        self.fill_scenarios(st)
        self.fill_counts(st)
        self.fill_names(st, top)
        if st.labelled:
            st.row_type_mix = {k: self.mix.get(k, 0) for k in ("financial", "business", "mixed", "none")}

    def fill_lengths(self, st: DataStats) -> None:
        if self.para_lens:
            st.paragraph_chars = _length_summary(pa.chunked_array(self.para_lens, pa.int32()))
        if self.title_lens:
            st.title_chars = _length_summary(pa.chunked_array(self.title_lens, pa.int32()))

    def fill_scenarios(self, st: DataStats) -> None:
        if self.scen_all:
            vc = pc.value_counts(pc.drop_null(pa.chunked_array(self.scen_all, pa.string())))
            st.scenarios = dict(sorted((v["values"], v["counts"]) for v in vc.to_pylist()))

    def fill_counts(self, st: DataStats) -> None:
        """Metric-count distribution, overall and per scenario."""
        if not self.counts:
            return
        cnt = pa.chunked_array(self.counts, pa.int32())
        st.metric_count = dict(sorted((v["values"], v["counts"]) for v in pc.value_counts(cnt).to_pylist()))
        if self.scen_labelled:
            by = pa.table({"s": pa.chunked_array(self.scen_labelled, pa.string()), "n": cnt}).group_by(
                ["s", "n"]).aggregate([("n", "count")])
            rows = zip(*(by.column(x).to_pylist() for x in ("s", "n", "n_count")))
            for s, k, c in sorted(rows, key=lambda x: (str(x[0]), x[1])):
                st.count_by_scenario.setdefault(str(s) if s is not None else "(none)", {})[k] = c

    def fill_names(self, st: DataStats, top: int) -> None:
        """Top names, metric types, scores and the longest labels."""
        if not self.names:
            return
        nm = pa.chunked_array(self.names, pa.string())
        st.metrics_total = len(nm)
        vc = pc.value_counts(pc.drop_null(nm)).to_pylist()
        st.distinct_names = len(vc)
        st.top_names = [(v["values"], v["counts"]) for v in sorted(vc, key=lambda v: (-v["counts"], v["values"]))[:top]]
        tv = pc.value_counts(pc.fill_null(pa.chunked_array(self.mtypes, pa.string()), "(null)")).to_pylist()
        st.metric_types = dict(sorted(((v["values"], v["counts"]) for v in tv), key=lambda x: -x[1]))
        sc = pc.drop_null(pa.chunked_array(self.scores, pa.float64()))
        if len(sc):
            mm = pc.min_max(sc).as_py()
            st.scores = {"min": mm["min"], "mean": round(pc.mean(sc).as_py(), 4), "max": mm["max"]}
        st.label_chars_max = {
            "name": pc.max(pc.utf8_length(nm)).as_py() or 0,
            "reason": pc.max(pa.chunked_array(self.reason_lens, pa.int32())).as_py() or 0,
        }
        if self.analysis_lens:
            st.label_chars_max["analysis"] = pc.max(pa.chunked_array(self.analysis_lens, pa.int32())).as_py() or 0


def compute_stats(path: str | os.PathLike, *, top: int = 20, progress: bool = False) -> DataStats:
    """Statistics and alarms for a JSONL file/folder or Parquet shards (see the module docstring)."""
    from tqdm import tqdm

    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    st = DataStats(path=str(root))
    collected = _Collected()
    for _, t in tqdm(_tables(root), desc="stats", unit=" files", disable=not progress):
        collected.add_table(st, t)
    collected.fill(st, top)
    st.alarms = alarms(st)
    return st


def alarms(st: DataStats) -> list[Alarm]:
    out: list[Alarm] = []
    if st.labelled >= MIN_ROWS_FOR_ALARMS and st.metric_count:
        k, n = max(st.metric_count.items(), key=lambda kv: kv[1])
        if n / st.labelled >= COUNT_SKEW_SHARE:
            out.append(
                Alarm(
                    "label_count_skew",
                    f"{n} of {st.labelled} labelled rows ({n / st.labelled:.0%}) have exactly {k} metric(s) "
                    f"(alarm at >= {COUNT_SKEW_SHARE:.0%}); a model trained on this learns to always answer {k}",
                )
            )
    if st.scenarios:
        total = sum(st.scenarios.values())
        if total >= MIN_ROWS_FOR_ALARMS:
            if len(st.scenarios) == 1:
                (s, _), = st.scenarios.items()
                out.append(Alarm("type_imbalance", f"every row is scenario {s!r}; the other scenarios are not represented"))
            else:
                bad = [
                    f"{s} {c / total:.0%}"
                    for s, c in st.scenarios.items()
                    if c / total < SCENARIO_MIN_SHARE or c / total > SCENARIO_MAX_SHARE
                ]
                if bad:
                    out.append(
                        Alarm(
                            "type_imbalance",
                            f"scenario share outside [{SCENARIO_MIN_SHARE:.0%}, {SCENARIO_MAX_SHARE:.0%}]: {', '.join(bad)} "
                            f"(of {total} rows)",
                        )
                    )
    if st.duplicate_paragraphs and st.rows >= MIN_ROWS_FOR_ALARMS:
        out.append(
            Alarm(
                "duplicate_paragraphs",
                f"{st.duplicate_paragraphs} row(s) repeat a paragraph seen earlier in the set; repeats are over-weighted "
                "in training and leak across a train/eval split",
            )
        )
    return out
