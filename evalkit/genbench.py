"""Assemble the project's own rows (issue 16) into committed folders, validated, with composition stats.

Two sets, written by the team (never copied from ../shared/seed), assembled from the writers' batch files:

  bench  the generalisation benchmark: SRC/W*.jsonl (test-case format: {"id": "gb-...", "type": "test",
         "scenario", "input", "output", "perturb": {"insert", "insert_after", "remove"}}) ->
         benchmarks/genbench/cases.jsonl + stats.json. The writer's labels are labeller 1's; --labels FILE
         (JSONL of {"id", "output"}: the adjudicated labels) replaces the output of the cases it names;
         --second FILE (labeller 2's blind labels, same shape) adds agreement figures: same metric count,
         and same labels by the seed's verdict protocol (labeller 2 scored against labeller 1 with evalkit's
         upstream matcher: strict = same count and every name matched).
  train  the team's training rows: SRC/T*.jsonl (seed format, "id": "tr1-..."/"tr2-...", type A-D) ->
         benchmarks/restraint-train/rows.jsonl + stats.json.

Checks (any failure: nothing is written, exit 1): every row passes the contract's validator (data.validate,
seed rules, labels required); ids unique and with the set's prefix; scenarios known (bench); every
`perturb` expands (evalkit.perturb: the insert not already in the paragraph, insert_after and remove exact
substrings); no paragraph twice (whitespace ignored); no paragraph shared between the two sets (each
build reads the other set's built file, and its sources when `--other-src` names them: a training row must
never be a benchmark case), nor with the seed's rows when `--seed-dir` is given and present (read to compare
only). Near copies (a
paragraph sharing at least half of its 8-character shingles with a paragraph of the other set or the
seed) are listed as warnings in stats.json and on stderr, not refused.

Numbers are counted as the datasheet counts them: re.findall(r"\\d+(?:[.,]\\d+)*", paragraph).

    evalkit bench build-gen bench --src WRITERS/bench [--labels adjudicated.jsonl] [--second l2.jsonl] \
        [--other-src WRITERS/train] [--seed-dir ../shared/seed]
    evalkit bench build-gen train --src WRITERS/train [--other-src WRITERS/bench]
    evalkit bench check bench     # re-check the built folder (sha256, ids, perturb)
    python scripts/build_genbench.py bench --src ... | --check   # the same, the repository's folders as defaults

Folders (`--out`, and the other set's built folder) default to benchmarks/genbench and
benchmarks/restraint-train under the current folder (the repository root); the sources have no default.

The same sources give the same bytes (rows in file name order, then line order).
"""
from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reportminer.data.errors import DataError
from reportminer.data.scenarios import SCENARIOS

NUM = re.compile(r"\d+(?:[.,]\d+)*")
# stats.json's "builder" stays the script's name (the command line that builds it, and the same bytes as the
# committed benchmarks, built before the builder moved into evalkit); BUILDER_VERSION changes when output does.
BUILDER = "scripts/build_genbench.py"
BUILDER_VERSION = 1


@dataclass(frozen=True)
class Kind:
    name: str
    pattern: str
    out: Path  # the committed folder, relative to the repository root (the current folder)
    file: str
    id_prefixes: tuple[str, ...]
    other: str  # the other set's name (its paragraphs must not appear here)


KINDS = {
    "bench": Kind("bench", "W*.jsonl", Path("benchmarks/genbench"), "cases.jsonl", ("gb-",), "train"),
    "train": Kind("train", "T*.jsonl", Path("benchmarks/restraint-train"), "rows.jsonl", ("tr",), "bench"),
}


@dataclass
class Built:
    rows: list[dict[str, Any]]
    stats: dict[str, Any]
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _norm(text: str) -> str:
    return "".join(text.split())


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _dump(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def read_sources(src: Path, pattern: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str], list[Path]]:
    """(where, row) of every source file matching `pattern`, in file name then line order; JSON errors."""
    rows, errors = [], []
    files = sorted(src.glob(pattern))
    for f in files:
        for n, line in enumerate(f.read_text(encoding="utf-8-sig").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(f"{f}:{n}: invalid JSON: {e.msg}")
                continue
            if not isinstance(obj, dict):
                errors.append(f"{f}:{n}: not a JSON object")
                continue
            rows.append((f"{f.name}:{n}", obj))
    return rows, errors, files


def _read_labels(path: Path) -> dict[str, dict[str, Any]]:
    """id -> output of a labels file (JSONL of {"id", "output"}); a malformed line or a repeated id: DataError."""
    out: dict[str, dict[str, Any]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if line.strip():
            obj = json.loads(line)
            if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or not isinstance(obj.get("output"), dict):
                raise DataError(f"{path}:{n}: expected {{\"id\": ..., \"output\": {{...}}}}")
            if obj["id"] in out:
                raise DataError(f"{path}:{n}: id {obj['id']!r} twice")
            out[obj["id"]] = obj["output"]
    return out


def _validate(rows: list[dict[str, Any]], wheres: list[str]) -> list[str]:
    """The contract's validator over the rows as one file; problems named by source file and line."""
    from reportminer.data.validate import validate_path

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "rows.jsonl"
        p.write_bytes(_dump(rows))
        report = validate_path(p, seed_rules=True, require_labels=True)
    out = []
    for issue in report.errors:
        line = issue.line
        where = wheres[line - 1] if line and 0 < line <= len(wheres) else "?"
        out.append(f"{where}: {issue.field + ': ' if issue.field else ''}{issue.message}")
    return out


def _shingles(text: str, k: int = 8) -> set[str]:
    t = _norm(text)
    return {t[i:i + k] for i in range(max(1, len(t) - k + 1))}


def other_paragraphs(kind: Kind, other_src: Path | None, other_out: Path | None = None) -> dict[str, str]:
    """Normalised paragraph -> where, for the other set (its built file, and its sources when given)."""
    o = KINDS[kind.other]
    out: dict[str, str] = {}
    built = (other_out or o.out) / o.file
    sources = [(f"{built.name}:{n}", json.loads(x)) for n, x in enumerate(built.read_text(encoding="utf-8").splitlines(), 1)
               if x.strip()] if built.is_file() else []
    if other_src is not None and other_src.is_dir():
        sources += read_sources(other_src, o.pattern)[0]
    for where, r in sources:
        p = (r.get("input") or {}).get("paragraph")
        if isinstance(p, str):
            out.setdefault(_norm(p), where)
    return out


def seed_paragraphs(seed_dir: Path | None) -> dict[str, str]:
    if seed_dir is None or not seed_dir.is_dir():
        return {}
    out: dict[str, str] = {}
    for f in sorted([*seed_dir.glob("data/*.jsonl"), *seed_dir.glob("*.jsonl")]):
        for n, line in enumerate(f.read_text(encoding="utf-8-sig").splitlines(), 1):
            if line.strip():
                p = (json.loads(line).get("input") or {}).get("paragraph")
                if isinstance(p, str):
                    out.setdefault(_norm(p), f"seed {f.name}:{n}")
    return out


def near_copies(rows: list[tuple[str, str]], others: dict[str, str], share: float = 0.5) -> list[str]:
    """(where, paragraph) rows sharing >= `share` of their 8-char shingles with one of `others`."""
    if not others:
        return []
    index: dict[str, set[int]] = {}
    keys = list(others)
    for j, p in enumerate(keys):
        for s in _shingles(p):
            index.setdefault(s, set()).add(j)
    out = []
    for where, para in rows:
        sh = _shingles(para)
        c: Counter[int] = Counter()
        for s in sh:
            for j in index.get(s, ()):
                c[j] += 1
        if c:
            j, k = c.most_common(1)[0]
            if k / len(sh) >= share and _norm(para) != keys[j]:
                out.append(f"{where}: {100 * k / len(sh):.0f} % of its 8-character pieces are in {others[keys[j]]}")
    return out


def composition(rows: list[dict[str, Any]], kind: Kind) -> dict[str, Any]:
    """Counts the datasheet reports: per scenario / type, gold counts, length and number density."""
    def para(r: dict[str, Any]) -> str:
        return r["input"]["paragraph"]

    def block(rs: list[dict[str, Any]]) -> dict[str, Any]:
        n = len(rs)
        counts = Counter(len(r["output"]["metrics"]) for r in rs)
        nums = [len(NUM.findall(para(r))) for r in rs]
        chars = [len(para(r)) for r in rs]
        dense = sum(1 for c, k in zip(chars, nums) if c >= 180 and k >= 12)
        types = Counter(m["metric_type"] for r in rs for m in r["output"]["metrics"])
        return {
            "rows": n,
            "by_gold_count": {str(k): counts[k] for k in sorted(counts)},
            "mean_gold_count": round(sum(k * v for k, v in counts.items()) / n, 3) if n else None,
            "mean_chars": round(sum(chars) / n, 1) if n else None,
            "mean_numbers": round(sum(nums) / n, 2) if n else None,
            "long_dense": dense, "long_dense_share": round(dense / n, 3) if n else None,
            "metric_types": dict(sorted(types.items())),
        }

    group = "scenario" if kind.name == "bench" else "type"
    out = {"all": block(rows), f"by_{group}": {}}
    order = SCENARIOS if kind.name == "bench" else tuple(sorted({str(r.get("type")) for r in rows}))
    for g in order:
        rs = [r for r in rows if r.get(group) == g]
        if rs:
            out[f"by_{group}"][g] = block(rs)
    return out


def _rows(kind: Kind, pairs: list[tuple[str, dict[str, Any]]], adjudicated: dict[str, dict[str, Any]],
          errors: list[str]) -> tuple[list[dict[str, Any]], list[str], set[str], list[str]]:
    """The rows in source order with the adjudicated outputs applied (bench); ids, repeated paragraphs,
    scenario and type checked, problems appended to `errors`. (rows, wheres, ids seen, ids relabelled)"""
    changed = []
    rows: list[dict[str, Any]] = []
    wheres: list[str] = []
    seen_ids: dict[str, str] = {}
    seen_p: dict[str, str] = {}
    for where, r in pairs:
        rid = r.get("id")
        if not isinstance(rid, str) or not rid.startswith(kind.id_prefixes):
            errors.append(f"{where}: id {rid!r} must start with {' or '.join(kind.id_prefixes)}")
        elif rid in seen_ids:
            errors.append(f"{where}: id {rid!r} also at {seen_ids[rid]}")
        else:
            seen_ids[rid] = where
        p = (r.get("input") or {}).get("paragraph")
        if isinstance(p, str):
            if _norm(p) in seen_p:
                errors.append(f"{where}: paragraph also at {seen_p[_norm(p)]}")
            seen_p.setdefault(_norm(p), where)
        if kind.name == "bench":
            if r.get("scenario") not in SCENARIOS:
                errors.append(f"{where}: scenario {r.get('scenario')!r} is not one of the six")
            if r.get("type") != "test":
                errors.append(f"{where}: type must be \"test\" (the test-case format)")
            if isinstance(rid, str) and rid in adjudicated and adjudicated[rid] != r.get("output"):
                r = {**r, "output": adjudicated[rid]}
                changed.append(rid)
        rows.append(r)
        wheres.append(where)
    return rows, wheres, set(seen_ids), changed


def _apart(kind: Kind, rows: list[dict[str, Any]], wheres: list[str], other_src: Path | None, other_out: Path | None,
           seed_dir: Path | None, errors: list[str]) -> list[str]:
    """No paragraph of the other set or the seed (appended to `errors`); near copies returned as warnings."""
    others = other_paragraphs(kind, other_src, other_out)
    seed = seed_paragraphs(seed_dir)
    for where, r in zip(wheres, rows):
        p = _norm((r.get("input") or {}).get("paragraph") or "")
        if p in others:
            errors.append(f"{where}: paragraph is also in the {kind.other} set ({others[p]})")
        if p in seed:
            errors.append(f"{where}: paragraph is a seed row ({seed[p]})")
    paras = [(w, (r.get("input") or {}).get("paragraph") or "") for w, r in zip(wheres, rows)]
    return near_copies(paras, others) + near_copies(paras, seed)


def build(kind_name: str, src: Path, *, labels: Path | None = None, second: Path | None = None,
          other_src: Path | None = None, other_out: Path | None = None, seed_dir: Path | None = None) -> Built:
    """Rows and stats (nothing written); `errors` non-empty means the set must not be written."""
    kind = KINDS[kind_name]
    pairs, errors, files = read_sources(src, kind.pattern)
    if not files:
        errors.append(f"{src}: no {kind.pattern} files")
    adjudicated = _read_labels(labels) if labels is not None else {}
    rows, wheres, ids, changed = _rows(kind, pairs, adjudicated, errors)
    unknown = sorted(set(adjudicated) - ids)
    if unknown:
        errors.append(f"{labels}: label(s) for id(s) not in the set: {unknown[:5]}")
    if rows:
        errors += _validate(rows, wheres)
    if kind.name == "bench":
        from .perturb import variants

        for where, r in zip(wheres, rows):
            try:
                variants(r, where)
            except DataError as e:
                errors.append(str(e))
    warnings = _apart(kind, rows, wheres, other_src, other_out, seed_dir, errors)

    stats: dict[str, Any] = {
        "builder": BUILDER, "builder_version": BUILDER_VERSION, "set": kind.name,
        "sources": {f.name: {"sha256": _sha256(f), "rows": sum(1 for w in wheres if w.startswith(f.name + ":"))}
                    for f in files},
    }
    if not errors:
        stats["composition"] = composition(rows, kind)
    if kind.name == "bench":
        ins = sum(1 for r in rows if (r.get("perturb") or {}).get("insert"))
        rem = sum(1 for r in rows if (r.get("perturb") or {}).get("remove"))
        stats["perturb"] = {"cases": len(rows), "insert_variants": ins, "remove_variants": rem}
        stats["labels"] = {"labeller_1": "the writer's labels (W*.jsonl)",
                           "adjudicated": None if labels is None else {"file": str(labels), "sha256": _sha256(labels),
                                                                      "ids": len(adjudicated), "changed": sorted(changed)}}
        if second is not None and not errors:
            stats["agreement"] = agreement([r for _, r in pairs], _read_labels(second))  # labeller 1: the writer's
    stats["near_copies"] = warnings
    return Built(rows=rows, stats=stats, errors=errors, warnings=warnings)


def agreement(first: list[dict[str, Any]], second: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Labeller 2 against labeller 1 on the cases both labelled: count agreement and the seed protocol's
    verdicts (labeller 2 as predictions, labeller 1 as gold, evalkit's upstream matcher), per scenario."""
    from .matchers import UpstreamMatcher
    from .score import score_paths

    both = [r for r in first if r["id"] in second]
    if not both:
        return {"cases": 0}
    with tempfile.TemporaryDirectory() as tmp:
        g = Path(tmp) / "l1.jsonl"
        p = Path(tmp) / "l2.jsonl"
        g.write_bytes(_dump([{k: v for k, v in r.items() if k != "perturb"} for r in both]))
        p.write_bytes(_dump([{"id": r["id"], "output": second[r["id"]]} for r in both]))
        cases = score_paths(g, p, UpstreamMatcher())[0].cases

    def block(c: Any) -> dict[str, Any]:
        n = c.height
        same_count = int((c["n_gold"] == c["n_pred"]).sum())
        strict = int((c["verdict"] == "strict").sum())
        return {"cases": n, "same_count": same_count, "same_count_rate": round(same_count / n, 3),
                "same_labels": strict, "same_labels_rate": round(strict / n, 3),
                "passed": int((c["verdict"] != "fail").sum())}

    out = block(cases)
    out["by_scenario"] = {s: block(cases.filter(cases["scenario"] == s)) for s in SCENARIOS
                          if (cases["scenario"] == s).any()}
    out["disagreements"] = [r["id"] for r in cases.filter(cases["verdict"] != "strict").select("id").to_dicts()]
    return out


def write(b: Built, kind_name: str, out: Path | None = None) -> dict[str, Path]:
    kind = KINDS[kind_name]
    out = out or kind.out
    out.mkdir(parents=True, exist_ok=True)
    blob = _dump(b.rows)
    b.stats["sha256"] = hashlib.sha256(blob).hexdigest()
    paths = {"rows": out / kind.file, "stats": out / "stats.json"}
    for p, data in ((paths["rows"], blob),
                    (paths["stats"], (json.dumps(b.stats, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))):
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(p)
    return paths


def check(kind_name: str, out: Path | None = None, other_out: Path | None = None) -> list[str]:
    """Problems with a built folder: sha256 against stats.json, ids, validation, perturb expansion."""
    kind = KINDS[kind_name]
    out = out or kind.out
    f, s = out / kind.file, out / "stats.json"
    if not f.is_file() or not s.is_file():
        return [f"{out}: no {kind.file} or stats.json (build it first)"]
    stats = json.loads(s.read_text(encoding="utf-8"))
    problems = []
    if _sha256(f) != stats.get("sha256"):
        problems.append(f"{f}: sha256 differs from stats.json (edited after the build? rebuild it)")
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, kind.pattern.replace("*", "0")).write_bytes(f.read_bytes())
        b = build(kind_name, Path(tmp), other_out=other_out, seed_dir=None)
    return problems + b.errors


def table(stats: dict[str, Any]) -> str:
    c = stats.get("composition")
    if not c:
        return "(no composition: the set has errors)"
    group = "by_scenario" if "by_scenario" in c else "by_type"
    lines = [f"{'':<40}{'rows':>6}{'mean n':>8}{'chars':>7}{'numbers':>9}{'long&dense':>12}  gold counts"]
    for name, b in [("all", c["all"]), *c[group].items()]:
        lines.append(f"{name:<40}{b['rows']:>6}{b['mean_gold_count'] or 0:>8.2f}{b['mean_chars'] or 0:>7.0f}"
                     f"{b['mean_numbers'] or 0:>9.1f}{100 * (b['long_dense_share'] or 0):>11.0f}%  {b['by_gold_count']}")
    if "perturb" in stats:
        p = stats["perturb"]
        lines.append(f"perturbation variants: insert {p['insert_variants']}, remove {p['remove_variants']} "
                     f"of {p['cases']} cases")
    if "agreement" in stats and stats["agreement"].get("cases"):
        a = stats["agreement"]
        lines.append(f"agreement (labeller 2 vs 1, {a['cases']} cases): same count {100 * a['same_count_rate']:.1f} %, "
                     f"same labels {100 * a['same_labels_rate']:.1f} %")
    return "\n".join(lines)
