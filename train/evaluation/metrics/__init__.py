"""The `evaluate` metric modules E2LLM ships, loadable without the Hub.

`e2llm_ied`: Table 2 (balanced accuracy, Cohen's kappa, weighted F1, per-class accuracy).
`e2llm_choice`: Table 3 accuracy for EPC, ESS, EIM and ESR.
"""

from __future__ import annotations

from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("e2llm_ied", "e2llm_choice")


def load_metric(name: str) -> evaluate.EvaluationModule:
    """`evaluate.load` of one of this package's metric modules, by path (works offline)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; expected one of {', '.join(METRIC_NAMES)}")
    return evaluate.load(str(METRICS_DIR / name))
