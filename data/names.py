"""When two metric names mean the same metric: one rule for the engine's vote and evalkit's fuzzy matcher.

Sampled answers name the same metric in slightly different forms (`ROE` and `ＲＯＥ`, `毛利率` and
`综合毛利率`); counting them as different metrics would split their votes. The rule is deliberately
plain: the normalised names are equal, or one contains the other and the shorter has at least
`MIN_CONTAINED` characters (so a bare `率` never matches every ratio).
"""
from __future__ import annotations

import unicodedata

MIN_CONTAINED = 2


def normalise_name(name: str) -> str:
    """NFKC (full-width to half-width), case-folded, every whitespace removed: ＲＯＥ, roe and R O E agree."""
    return "".join(unicodedata.normalize("NFKC", name).casefold().split())


def names_equal(a: str, b: str) -> bool:
    """Equal after normalisation."""
    return normalise_name(a) == normalise_name(b)


def same_metric(a: str, b: str, min_contained: int = MIN_CONTAINED) -> bool:
    """Equal after normalisation, or one contains the other and the shorter has >= min_contained chars."""
    na, nb = normalise_name(a), normalise_name(b)
    if not na or not nb:
        return False
    if na == nb:
        return True
    short, long_ = (na, nb) if len(na) <= len(nb) else (nb, na)
    return len(short) >= min_contained and short in long_
