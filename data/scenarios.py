"""The benchmark's six test scenarios: one list for the builders, the scorer's tables and the experiment report.

A test case (`"type": "test"`) names one of these in its `scenario` field; the hidden benchmark the product
is judged on (issue 7) and the team's generalisation benchmark (issue 16) use the same six. The order is
the one every table prints them in. They are not the seed's training types A-D (data.validate's
SEED_COUNT_RULES): a training row's `type` is where it came from, a test case's `scenario` what it tests.
"""
from __future__ import annotations

SCENARIOS: tuple[str, ...] = (
    "single_metric",
    "multi_metric",
    "boundary_many_numbers_one_core",
    "financial_vs_business_classification",
    "empty_output_background",
    "mixed_financial_business",
)

# Column-width names for tables (the experiment report's "pass by scenario").
SHORT: dict[str, str] = dict(zip(SCENARIOS, ("single", "multi", "boundary", "classif.", "empty", "mixed")))


def scenario_order(name: str) -> tuple[int, str]:
    """Sort key: the six in SCENARIOS' order, any other name after them by name."""
    return (SCENARIOS.index(name) if name in SCENARIOS else len(SCENARIOS), name)
