"""Deciding which predicted metric names hit which gold names.

A matcher has two parts. `pair_scores` rates (gold name, predicted name) pairs: a score and whether the
pair may be matched at all. It sees each distinct pair of names once, as codes into a vocabulary of the
distinct names in the whole run, so its work grows with the number of distinct names, not of cases (a
100k-case run of a fine-tuned model repeats the same few thousand names). `assign` then turns eligible
pairs into one-to-one hits per case: greedily in gold order (the seed's protocol) or by optimal
assignment. Both steps run on whole columns; only cases where eligible pairs compete for the same name
go through a per-case loop, over plain Python lists, and those are few (the benchmark prints how many).

Matchers:
- `upstream`: the seed's batch verdict protocol, exactly (see `UpstreamMatcher`).
- `fuzzy`: normalised Levenshtein similarity or containment, optimal one-to-one assignment.
- `difflib`: the seed's eval_script.py rule: the first unused prediction that is equal, contained either
  way, or has difflib ratio >= 0.7 (see `DifflibMatcher`).
- `embedding`: cosine of sentence embeddings, optimal one-to-one assignment (see evalkit.embed).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from reportminer.data.names import normalise_name

from .options import MATCHERS

# Pairs with a score at or above this bound are candidates in the seed's protocol.
UPSTREAM_JACCARD = 0.5
DEFAULT_FUZZY_THRESHOLD = 0.7
DEFAULT_EMBEDDING_THRESHOLD = 0.8


@dataclass
class MatchStats:
    """How the assignment was done (the benchmark reports it; a large `looped` share is a red flag).

    Cases scored in parts (`score.score_set` on large runs) add their parts' stats: `unique_pairs` and
    `unique_names` are then sums over the parts, not over the run."""

    cases: int = 0
    pairs: int = 0
    unique_pairs: int = 0
    unique_names: int = 0
    looped_cases: int = 0


class Matcher(ABC):
    name: str = ""
    optimal: bool = True  # False: greedy in gold order, first best candidate (the seed's protocol)
    first_eligible: bool = False  # greedy only: take the first eligible prediction, whatever its score
    # Per-case results whatever the other cases, and `pair_scores` safe to run in two threads at once:
    # large runs may be scored in parts, in threads (score.score_set).
    parts_ok: bool = True

    @abstractmethod
    def pair_scores(self, names: list[str], g: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(score float64, eligible bool) for each pair of codes (g[i], p[i]) into `names`.

        Pairs are distinct. Eligible pairs must have score > 0 (a score of 0 is never a hit).
        """

    def describe(self) -> dict[str, Any]:
        return {"matcher": self.name}


# ------------------------------------------------------------------------------------------ upstream


def bigrams(name: str) -> set[str]:
    """Character bigrams; a one-character name is its own single "bigram"; the empty name has none."""
    if len(name) == 1:
        return {name}
    return {name[i : i + 2] for i in range(len(name) - 1)}


def bigram_jaccard(a: str, b: str) -> float:
    """Reference (scalar) form of the seed's similarity; the matcher uses the vectorised one below."""
    sa, sb = bigrams(a), bigrams(b)
    union = len(sa | sb)
    return len(sa & sb) / union if union else 0.0


def _bigram_matrix(names: list[str]):
    """Sparse 0/1 matrix names x distinct bigrams (set semantics), and each name's bigram-set size.

    Built with polars string/list expressions, not a Python loop over names; `bigrams` is the scalar
    definition it must agree with (the tests compare them).
    """
    from scipy import sparse

    chars = pl.col("name").str.split("")
    df = pl.DataFrame({"name": pl.Series(names, dtype=pl.String)}).with_row_index("i").select(
        "i",
        pl.when(pl.col("name").str.len_chars() == 1)
        .then(pl.concat_list(pl.col("name")))
        .otherwise(chars.list.eval(pl.element() + pl.element().shift(-1)).list.drop_nulls())
        .alias("bg"),
    )
    long = df.explode("bg").drop_nulls("bg").unique(["i", "bg"])
    codes = long["bg"].unique().to_frame().with_row_index("j")
    long = long.join(codes, on="bg")
    i, j = long["i"].to_numpy().astype(np.int64), long["j"].to_numpy().astype(np.int64)
    m = sparse.csr_matrix((np.ones(len(i), dtype=np.float32), (i, j)), shape=(len(names), max(1, codes.height)))
    sizes = np.bincount(i, minlength=len(names))
    return m, sizes


def pair_jaccard(names: list[str], g: np.ndarray, p: np.ndarray) -> np.ndarray:
    m, sizes = _bigram_matrix(names)
    inter = np.asarray(m[g].multiply(m[p]).sum(axis=1)).ravel().astype(np.float64)
    union = sizes[g] + sizes[p] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def _contains(names: list[str], g: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gold contains pred, pred contains gold), literal substring tests on whole columns."""
    df = pl.DataFrame({"g": pl.Series(names, dtype=pl.String)[g], "p": pl.Series(names, dtype=pl.String)[p]})
    out = df.select(
        pl.col("g").str.contains(pl.col("p"), literal=True).alias("g_in"),
        pl.col("p").str.contains(pl.col("g"), literal=True).alias("p_in"),
    )
    return out["g_in"].to_numpy(), out["p_in"].to_numpy()


class UpstreamMatcher(Matcher):
    """The seed's batch verdict protocol, exactly.

    For each gold name in order, among predicted names not yet used, the candidates are those equal to
    it, containing it or contained in it, or whose bigram sets have Jaccard >= 0.5. The candidate with
    the highest score (bigram Jaccard; 1.0 when equal) is taken, the first in predicted order on ties;
    a candidate whose score is 0 is never taken (so containment alone, e.g. "率" in "毛利率", whose bigram
    sets are disjoint, is not a hit). No normalisation of the names: the seed compared them as written.
    """

    name = "upstream"
    optimal = False

    def pair_scores(self, names: list[str], g: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        equal = g == p  # codes index distinct names, so equal codes <=> equal strings
        jac = pair_jaccard(names, g, p)
        g_in, p_in = _contains(names, g, p)
        score = np.where(equal, 1.0, jac)
        candidate = equal | g_in | p_in | (jac >= UPSTREAM_JACCARD)
        return score, candidate & (score > 0)


# --------------------------------------------------------------------------------------------- fuzzy


# The contract's one normalisation rule (the engine's self-consistency vote uses the same).
normalise = normalise_name


@dataclass
class FuzzyMatcher(Matcher):
    """Normalised edit similarity (1 - Levenshtein / longer length) or containment, optimal assignment.

    A pair is eligible when the normalised names are equal, their similarity reaches `threshold`, or one
    contains the other and the shorter has at least `min_contained` characters (so "率" is not a hit in
    every ratio). The score (used to prefer one assignment over another) is the similarity.
    """

    threshold: float = DEFAULT_FUZZY_THRESHOLD
    min_contained: int = 2
    name: str = field(default="fuzzy", init=False)

    def pair_scores(self, names: list[str], g: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from rapidfuzz.distance import Levenshtein
        from rapidfuzz.process import cpdist

        norm = [normalise(s) for s in names]
        ng = pl.Series(norm, dtype=pl.String)
        gs, ps = ng[g], ng[p]
        if len(g):
            sim = cpdist(gs.to_list(), ps.to_list(), scorer=Levenshtein.normalized_similarity, workers=-1)
            sim = np.asarray(sim, dtype=np.float64)
        else:
            sim = np.zeros(0)
        lens = ng.str.len_chars().to_numpy()
        g_in, p_in = _contains(norm, g, p)
        shorter = np.minimum(lens[g], lens[p])
        equal = (gs == ps).to_numpy()
        sim = np.where(equal, 1.0, sim)
        contained = (g_in | p_in) & (shorter >= self.min_contained)
        eligible = (equal | (sim >= self.threshold) | contained) & (np.maximum(lens[g], lens[p]) > 0)
        # A contained pair with little overlap in length still needs a positive weight to be assigned.
        score = np.where(eligible, np.maximum(sim, 1e-6), sim)
        return score, eligible

    def describe(self) -> dict[str, Any]:
        return {"matcher": self.name, "threshold": self.threshold, "min_contained": self.min_contained}


# ------------------------------------------------------------------------------------------- difflib


def _sequence_matcher() -> Any:
    """cydifflib's SequenceMatcher (difflib's algorithm compiled: the same ratios, ~4x faster on these
    names; the tests compare the two), else the standard library's."""
    try:
        from cydifflib import SequenceMatcher  # type: ignore[import-untyped]  # (no type information)
    except ImportError:  # pragma: no cover - the eval extra pins it
        from difflib import SequenceMatcher
    return SequenceMatcher


def difflib_ratio(a: str, b: str) -> float:
    """`difflib.SequenceMatcher(None, gold, pred).ratio()`, the seed script's similarity (not symmetric)."""
    return _sequence_matcher()(None, a, b).ratio()


@dataclass
class DifflibMatcher(Matcher):
    """The rule of the seed's `eval_script.py`, exactly: for each gold name in order, the *first*
    predicted name not yet used that is equal to it, contains it or is contained in it, or whose
    `difflib.SequenceMatcher(None, gold, pred).ratio()` reaches `threshold` (0.7). Names as written.

    difflib is pure Python (~10 us a pair), so it runs only where it can decide: rapidfuzz's Indel
    similarity 2*LCS/(len a + len b) bounds difflib's ratio 2*M/(len a + len b) from above (difflib's
    matching blocks are a common subsequence, so M <= LCS), and a pair below the threshold by that bound
    is not a hit. On the 200k-case benchmark that leaves difflib 10,762 of 228,325 distinct pairs (4.7 %).
    The score reported for a hit is difflib's ratio (1.0 when equal); it does not choose between hits.
    """

    threshold: float = DEFAULT_FUZZY_THRESHOLD
    name: str = field(default="difflib", init=False)
    optimal: bool = field(default=False, init=False)
    first_eligible: bool = field(default=True, init=False)

    def pair_scores(self, names: list[str], g: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from rapidfuzz.distance import Indel
        from rapidfuzz.process import cpdist

        s = pl.Series(names, dtype=pl.String)
        # The pairs' names by indexing the vocabulary list (the same str objects, 0.01 s), not through
        # polars (`s[g].to_list()` made 456k new strings: 0.08 s).
        gs, ps = [names[i] for i in g.tolist()], [names[i] for i in p.tolist()]
        equal = g == p
        g_in, p_in = _contains(names, g, p)
        bound = (
            np.asarray(cpdist(gs, ps, scorer=Indel.normalized_similarity, workers=-1, dtype=np.float64))
            if len(g) else np.zeros(0)
        )
        lg = s.str.len_chars().to_numpy().astype(np.float64)
        la, lb = lg[g], lg[p]
        contained = ~equal & (g_in | p_in)
        # One name inside the other: difflib's longest block is the shorter name, nothing else matches,
        # so the ratio is 2 * shorter / (sum of lengths) (names under 200 characters: no autojunk).
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(equal, 1.0, np.where(contained, 2 * np.minimum(la, lb) / np.maximum(la + lb, 1), 0.0))
        # Only pairs the bound cannot rule out meet difflib. (cpdist's default float32 put 14/20 = 0.7
        # below 0.7: float64, and a margin for rounding.)
        todo = np.flatnonzero(
            (~equal & ~contained & (bound >= self.threshold - 1e-6)) | (contained & (np.maximum(la, lb) >= 200))
        )
        sm = _sequence_matcher()
        for i in todo.tolist():
            score[i] = sm(None, gs[i], ps[i]).ratio()
        eligible = equal | g_in | p_in | (score >= self.threshold)
        # An empty name is contained in every name (ratio 0): still a hit, as in the seed's script.
        return np.where(eligible, np.maximum(score, 1e-6), score), eligible

    def describe(self) -> dict[str, Any]:
        return {"matcher": self.name, "threshold": self.threshold}


def difflib_reference(gold: list[str], pred: list[str], threshold: float = DEFAULT_FUZZY_THRESHOLD) -> list[tuple[int, int]]:
    """The seed script's rule for one case as plain Python: (gold index, pred index) per hit."""
    used: set[int] = set()
    hits = []
    for gi, gn in enumerate(gold):
        for pi, pn in enumerate(pred):
            if pi not in used and (pn == gn or gn in pn or pn in gn or difflib_ratio(gn, pn) >= threshold):
                used.add(pi)
                hits.append((gi, pi))
                break
    return hits


# ----------------------------------------------------------------------------------------- embedding


class EmbeddingMatcher(Matcher):
    """Cosine similarity of sentence embeddings >= `threshold` (or equal names), optimal assignment."""

    name = "embedding"
    parts_ok = False  # the embedder's model and vector cache are not shared between threads

    def __init__(self, embedder: Any = None, threshold: float = DEFAULT_EMBEDDING_THRESHOLD):
        from .embed import default_embedder

        self.embedder = embedder if embedder is not None else default_embedder()
        self.threshold = threshold

    def pair_scores(self, names: list[str], g: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        used = np.unique(np.concatenate([g, p])) if len(g) else np.zeros(0, dtype=np.int64)
        emb = np.zeros((len(names), 1), dtype=np.float32)
        if len(used):
            vecs = self.embedder.embed([names[i] for i in used])
            emb = np.zeros((len(names), vecs.shape[1]), dtype=np.float32)
            emb[used] = vecs
        cos = np.empty(len(g), dtype=np.float64)
        step = 65536  # bounded memory: two gathered blocks of step x dim float32
        for s in range(0, len(g), step):
            a, b = emb[g[s : s + step]], emb[p[s : s + step]]
            cos[s : s + step] = np.einsum("ij,ij->i", a, b)
        equal = g == p
        cos = np.where(equal, 1.0, np.clip(cos, -1.0, 1.0))
        eligible = (equal | (cos >= self.threshold)) & (cos > 0)
        return cos, eligible

    def describe(self) -> dict[str, Any]:
        return {"matcher": self.name, "threshold": self.threshold, "model": getattr(self.embedder, "key", "?")}




def make_matcher(name: str, threshold: float | None = None, model: str | None = None, cache_dir: Any = None) -> Matcher:
    """A matcher by CLI name. `threshold` applies to fuzzy/embedding; `model` to embedding."""
    if name == "upstream":
        if threshold is not None:
            raise ValueError("the upstream matcher has a fixed protocol; --threshold applies to fuzzy/embedding")
        return UpstreamMatcher()
    if name == "difflib":
        return DifflibMatcher(threshold=DEFAULT_FUZZY_THRESHOLD if threshold is None else threshold)
    if name == "fuzzy":
        return FuzzyMatcher(threshold=DEFAULT_FUZZY_THRESHOLD if threshold is None else threshold)
    if name == "embedding":
        from .embed import load_embedder

        return EmbeddingMatcher(
            load_embedder(model, cache_dir=cache_dir),
            threshold=DEFAULT_EMBEDDING_THRESHOLD if threshold is None else threshold,
        )
    raise ValueError(f"unknown matcher {name!r}; choose one of {', '.join(MATCHERS)}")


# ---------------------------------------------------------------------------------------- assignment


def _explode(cases: pl.DataFrame, col: str, name: str, idx: str) -> pl.DataFrame:
    return (
        cases.select(
            "row",
            pl.col(col).alias(name),
            pl.int_ranges(0, pl.col(col).list.len()).alias(idx),
        )
        .explode([name, idx])
        .drop_nulls(idx)
        .with_columns(pl.col(idx).cast(pl.Int32))
    )


def _greedy_loop(e: pl.DataFrame, rank: str = "score") -> list[tuple[int, int, int, float]]:
    """The seed's greedy pass for cases whose best candidates collide. `e` sorted by row, gi, pi.

    Candidates compete on `rank` (the score, or a constant for first-eligible matchers)."""
    out: list[tuple[int, int, int, float]] = []
    rows, gis, pis, scores, ranks = (e[c].to_list() for c in ("row", "gi", "pi", "score", rank))
    n = len(rows)
    i = 0
    while i < n:
        row = rows[i]
        used: set[int] = set()
        while i < n and rows[i] == row:
            gi = gis[i]
            best, best_rank, best_score = -1, 0.0, 0.0
            while i < n and rows[i] == row and gis[i] == gi:
                if pis[i] not in used and ranks[i] > best_rank:  # strict: first wins ties; 0 never wins
                    best, best_rank, best_score = pis[i], ranks[i], scores[i]
                i += 1
            if best >= 0:
                used.add(best)
                out.append((row, gi, best, best_score))
    return out


def _optimal_loop(e: pl.DataFrame) -> list[tuple[int, int, int, float]]:
    """Maximum number of hits, then maximum total score, per case (Hungarian on a small matrix)."""
    from scipy.optimize import linear_sum_assignment

    out: list[tuple[int, int, int, float]] = []
    if e.height == 0:
        return out
    rows, gis, pis, scs = (e[c].to_numpy() for c in ("row", "gi", "pi", "score"))
    bounds = np.flatnonzero(np.diff(rows)) + 1  # `e` is sorted by row
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(rows)]):
        gi, pi, sc = gis[lo:hi], pis[lo:hi], scs[lo:hi]
        ug, g_idx = np.unique(gi, return_inverse=True)
        up, p_idx = np.unique(pi, return_inverse=True)
        big = float(len(ug) + len(up) + 1)  # one more hit always beats any gain in score
        w = np.zeros((len(ug), len(up)))
        w[g_idx, p_idx] = big + sc
        r, c = linear_sum_assignment(w, maximize=True)
        row = int(rows[lo])
        for a, b in zip(r, c):
            if w[a, b] > 0:
                out.append((row, int(ug[a]), int(up[b]), float(w[a, b] - big)))
    return out


def match(cases: pl.DataFrame, matcher: Matcher, stats: MatchStats | None = None) -> pl.DataFrame:
    """Hits of `matcher` over `cases` (columns row, gold_names, pred_names).

    Returns one row per hit: row, gi, pi (0-based positions in the case's gold and predicted lists),
    score.
    """
    stats = stats if stats is not None else MatchStats()
    stats.cases = cases.height
    out_schema = {"row": pl.UInt32, "gi": pl.Int32, "pi": pl.Int32, "score": pl.Float64}
    gold = _explode(cases, "gold_names", "g", "gi")
    pred = _explode(cases, "pred_names", "p", "pi")
    # Names become integer codes into the run's vocabulary of distinct names, and a (gold, pred) pair of
    # names one int64 key, so deduplicating and joining pairs never touches strings.
    vocab = pl.concat([gold["g"], pred["p"]]).unique().to_frame("name").with_row_index("code")
    stats.unique_names = vocab.height
    v = max(1, vocab.height)
    gold = gold.join(vocab, left_on="g", right_on="name").select("row", "gi", pl.col("code").cast(pl.Int64).alias("gc"))
    pred = pred.join(vocab, left_on="p", right_on="name").select("row", "pi", pl.col("code").cast(pl.Int64).alias("pc"))
    pairs = gold.join(pred, on="row", how="inner").select("row", "gi", "pi", (pl.col("gc") * v + pl.col("pc")).alias("key"))
    stats.pairs = pairs.height
    if pairs.height == 0:
        return pl.DataFrame(schema=out_schema)
    keys = pairs["key"].unique().to_numpy()
    stats.unique_pairs = len(keys)
    score, eligible = matcher.pair_scores(vocab["name"].to_list(), keys // v, keys % v)
    ok = eligible & (score > 0)
    scored = pl.DataFrame({"key": keys[ok], "score": np.asarray(score, dtype=np.float64)[ok]})
    e = pairs.join(scored, on="key", how="inner").select("row", "gi", "pi", "score").sort(["row", "gi", "pi"])
    row_key = pl.col("row").cast(pl.Int64) * (1 << 20)  # (row, position) as one key; positions < 2^20
    if not matcher.optimal:
        # Each gold's best candidate: highest score, first in predicted order on ties. Where no two golds
        # of a case want the same prediction, the greedy pass in gold order takes exactly these.
        # A first-eligible matcher ranks every candidate the same, so "best" is the first.
        e = e.with_columns((pl.lit(1.0) if matcher.first_eligible else pl.col("score")).alias("rank"))
        # The first row of each (row, gi) run of a frame sorted by row and gi: a shift, not a hash `unique`
        # (358k candidate pairs: 31 -> 2 ms warm; 64 ms in the first, cold call of a command).
        gold_key = row_key + pl.col("gi")
        first = gold_key != gold_key.shift(1, fill_value=-1)
        if matcher.first_eligible:  # `e` is sorted by row, gi, pi: the first of each gold is its best
            best = e.filter(first).drop("rank")
        else:
            best = e.sort(["row", "gi", "rank", "pi"], descending=[False, False, True, False]).filter(first).drop("rank")
        clash = best.filter((row_key + pl.col("pi")).is_duplicated())["row"].unique()
        simple = best.filter(~pl.col("row").is_in(clash.implode()))
        looped = _greedy_loop(e.filter(pl.col("row").is_in(clash.implode())), rank="rank")
    else:
        # Where every gold has at most one eligible prediction and vice versa, all eligible pairs are the
        # optimal assignment; only the other cases need the Hungarian algorithm.
        multi = (row_key + pl.col("gi")).is_duplicated() | (row_key + pl.col("pi")).is_duplicated()
        clash = e.filter(multi)["row"].unique()
        simple = e.filter(~pl.col("row").is_in(clash.implode()))
        looped = _optimal_loop(e.filter(pl.col("row").is_in(clash.implode())))
    stats.looped_cases = clash.len()
    looped_df = pl.DataFrame(looped, schema=out_schema, orient="row")
    return pl.concat([simple.cast(out_schema), looped_df]).sort(["row", "gi"])  # type: ignore[arg-type]


def upstream_reference(gold: list[str], pred: list[str]) -> list[tuple[int, int, float]]:
    """The seed's protocol for one case as plain Python: (gold index, pred index, score) per hit.

    The readable statement of the rule that the vectorised `UpstreamMatcher` + greedy assignment must
    reproduce; the tests check one against the other on random cases.
    """
    used: set[int] = set()
    hits = []
    for gi, g in enumerate(gold):
        best, best_score = -1, 0.0
        for pi, p in enumerate(pred):
            if pi in used:
                continue
            score = 1.0 if g == p else bigram_jaccard(g, p)
            candidate = g == p or g in p or p in g or score >= UPSTREAM_JACCARD
            if candidate and score > best_score:
                best, best_score = pi, score
        if best >= 0:
            used.add(best)
            hits.append((gi, best, best_score))
    return hits


def verdict(n_gold: int, n_pred: int, n_hits: int) -> str:
    """strict / loose / fail for one case (scalar twin of `score.verdict_expr`)."""
    if n_hits == n_gold and n_pred == n_gold:
        return "strict"
    if n_hits == n_gold and abs(n_pred - n_gold) <= 1:
        return "loose"
    return "fail"
