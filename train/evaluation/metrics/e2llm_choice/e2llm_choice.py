"""E2LLM's accuracy for the choice tasks (EPC, ESS, EIM, ESR) as an `evaluate` module.

Loads offline by path: `evaluate.load("train/evaluation/metrics/e2llm_choice")` (or
`train.evaluation.metrics.load_metric("e2llm_choice")`).
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Accuracy for the multi-EEG tasks of "E²-LLM: Bridging Neural Signals and Interpretable
Affective Analysis" (Table 3): EPC (pairwise comparison), ESS (superlative selection), EIM
(instance matching) and ESR (scenario reasoning). Answers are compared as canonical strings,
as `train.data.qa.parse_answer` returns them. An unreadable answer ("") counts as wrong and lowers
`valid_rate`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the parsed answer per sample, "" when unreadable.
    references (list of str): the gold answer per sample.
Returns:
    accuracy, valid_rate: floats in [0, 1].
Examples:
    >>> metric = evaluate.load("train/evaluation/metrics/e2llm_choice")
    >>> metric.compute(predictions=["EEG 1", ""], references=["EEG 1", "EEG 2"])
    {'accuracy': 0.5, 'valid_rate': 0.5}
"""

_CITATION = """\
@article{ma2026e2llm,
  title={E$^2$-LLM: Bridging Neural Signals and Interpretable Affective Analysis},
  author={Ma and Lin and Xie and others},
  year={2026}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class E2llmChoice(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        if not references:
            raise ValueError("e2llm_choice needs at least one prediction, got none")
        if any(not reference for reference in references):
            raise ValueError("every reference must be a non-empty answer string")
        valid = np.array([bool(prediction) for prediction in predictions])
        correct = np.array([bool(p) and p == r for p, r in zip(predictions, references)])
        return {"accuracy": float(correct.mean()), "valid_rate": float(valid.mean())}
