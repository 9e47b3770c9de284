"""Decoding levers around the model's answer: self-consistency (`samples`), `score_threshold`, and the
settings that say which of them a run used.

`samples: 1` (the default) is the engine as it always was: one answer per row, greedy unless
`temperature` says otherwise; its metrics get `agreement` 1.0. With `samples: N > 1` one request asks vLLM
for N answers (`SamplingParams.n`: the prompt is submitted once and vLLM fans out N sequences), each is
parsed strictly like a single answer, and engine.vote turns the valid ones into one answer. A row is an
error only when all N are invalid.

`score_threshold` then drops the metrics the model is least sure of: by `score` with one sample, by
`agreement` with several (the sampled scores of a small model sit near 0.9 whatever it names, the share
of samples that name a metric does not). The dropped metrics stay in the row's `dropped_metrics`. When
the config leaves it unset, each adapter's manifest may supply it (`decoding.score_threshold`,
calibrated by scripts/calibrate_threshold.py for a given sample count); `score_threshold: 0` turns a
manifest's threshold off.

`type_prior` (on by default) retypes the answer's metrics by the adapter's learned type prior
(`data/type_prior.py`: how the training labels typed each name ending; the trainer writes it beside the
adapter) where the labels are unanimous enough; the model's own types stay in `raw`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from reportminer.data.manifest import AdapterManifest
from reportminer.data.schema import AGREEMENT, Extraction
from reportminer.data.type_prior import TypePrior

from .adapters import manifest_threshold_of
from .config import BASE, validate_decoding
from .rows import OK, RowResult, result_from_text
from .vote import split_by_threshold, vote

if TYPE_CHECKING:
    from .adapters import Adapter
    from .config import EngineConfig
    from .seam import Completion

__all__ = ["adapter_thresholds", "adapter_type_priors", "decoding_identity", "manifest_threshold",
           "row_from_completion", "sampling_temperature", "threshold_key", "validate_decoding"]


def sampling_temperature(c: "EngineConfig") -> float:
    """The temperature requests use: `temperature`, or `sample_temperature` when samples > 1 and it is 0."""
    if c.samples > 1 and c.temperature == 0:
        return c.sample_temperature
    return c.temperature


def threshold_key(c: "EngineConfig") -> str:
    """What score_threshold bounds: `score` for one answer a row, `agreement` for several."""
    return AGREEMENT if c.samples > 1 else "score"


def adapter_thresholds(c: "EngineConfig", adapters: list["Adapter"]) -> tuple[dict[str, float | None], list[str]]:
    """score_threshold per output `adapter` value: the config's, else the adapter manifest's, else None."""
    out: dict[str, float | None] = {}
    warnings: list[str] = []
    by_name = {a.name: a for a in adapters}
    for name in c.adapter_names:
        t = c.score_threshold
        a = by_name.get(name)
        if t is None and name != BASE and a is not None:
            t, w = a.threshold(c.samples)  # from the manifest read with the adapter (adapters.py)
            warnings += [f"adapter {name}: {w}"] if w else []
        out[name] = t
    return out, warnings


def manifest_threshold(adapter_dir: str | Path, samples: int) -> tuple[float | None, str | None]:
    """The manifest's decoding.score_threshold when it was calibrated for `samples`; else (None, why not)."""
    return manifest_threshold_of(AdapterManifest.read(adapter_dir), samples, adapter_dir)


def adapter_type_priors(c: "EngineConfig", adapters: list["Adapter"]) -> dict[str, TypePrior | None]:
    """The type prior per output `adapter` value: its adapter's type_prior.json when `type_prior` is on."""
    by_name = {a.name: a for a in adapters}
    out: dict[str, TypePrior | None] = {}
    for name in c.adapter_names:
        a = by_name.get(name)
        out[name] = a.the_prior() if c.type_prior and a is not None and name != BASE else None
    return out


def decoding_identity(c: "EngineConfig", adapters: list["Adapter"]) -> dict[str, Any]:
    """The decoding settings that decide a row's output, for the run identity."""
    thresholds, _ = adapter_thresholds(c, adapters)
    ident: dict[str, Any] = {"samples": c.samples, "score_threshold": thresholds, "merge_adapter": c.merge_adapter}
    priors = adapter_type_priors(c, adapters)
    if any(priors.values()):  # absent when none applies: runs from before the prior keep their identity
        ident["type_prior"] = {n: p.sha256() if p else None for n, p in priors.items()}
    if c.samples > 1:
        ident.update(temperature=sampling_temperature(c), vote_threshold=c.vote_threshold)
    return ident


def row_from_completion(name: str, comp: "Completion", c: "EngineConfig", threshold: float | None,
                        prior: TypePrior | None = None) -> RowResult:
    """The output row of one finished request: one answer, or the vote over its samples; then the threshold
    and the type prior."""
    if comp.samples is None:
        r = result_from_text(name, comp.text, comp.finish_reason, comp.prompt_tokens, comp.output_tokens, c.max_tokens)
        r.samples = {"valid": int(r.status == OK), "total": 1}
        if r.metrics is not None:
            r.metrics = [{**m, AGREEMENT: 1.0} for m in r.metrics]
        if r.dropped_metrics:  # a repeated name's later metrics (rows.result_from_text)
            r.dropped_metrics = [{**m, AGREEMENT: 1.0} for m in r.dropped_metrics]
    else:
        r = _voted_row(name, comp, c)
    if r.status == OK and threshold is not None:
        r.metrics, below = split_by_threshold(r.metrics or [], threshold, threshold_key(c))
        r.dropped_metrics = (r.dropped_metrics or []) + below
    if r.status == OK and prior is not None and r.metrics:
        r.metrics, r.retyped = prior.apply(r.metrics)
    return r


def _voted_row(name: str, comp: "Completion", c: "EngineConfig") -> RowResult:
    assert comp.samples is not None
    each = [result_from_text(name, s.text, s.finish_reason, comp.prompt_tokens, s.output_tokens, c.max_tokens)
            for s in comp.samples]
    answers = [Extraction.from_dict({"analysis": r.analysis, "metrics": r.metrics}) if r.status == OK else None
               for r in each]
    total_tokens = sum(s.output_tokens for s in comp.samples)
    raws = [s.text for s in comp.samples]
    v = vote(answers, c.vote_threshold)
    if v is None:  # every sample failed: the row fails with the first sample's reason
        first = each[0]
        reasons = ", ".join(sorted({r.reason or "?" for r in each}))
        first.detail = f"all {len(each)} sampled answers invalid ({reasons}); sample 1: {first.detail}"
        first.output_tokens = total_tokens
        first.samples = {"valid": 0, "total": len(each)}
        first.raw_samples = raws
        return first
    chosen = comp.samples[v.chosen]
    return RowResult(
        adapter=name, status=OK, analysis=v.analysis, metrics=v.metrics, raw=chosen.text,
        finish_reason=chosen.finish_reason, prompt_tokens=comp.prompt_tokens, output_tokens=total_tokens,
        samples={"valid": v.valid, "total": v.total}, raw_samples=raws,
    )
