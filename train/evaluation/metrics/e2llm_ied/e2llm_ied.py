"""E2LLM's emotion-identification (IED) metrics as an `evaluate` module.

Loads offline by path: `evaluate.load("train/evaluation/metrics/e2llm_ied")` (or
`train.evaluation.metrics.load_metric("e2llm_ied")`), since `evaluate.load("accuracy")` needs the Hub.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
The metrics of Table 2 of "E²-LLM: Bridging Neural Signals and Interpretable Affective
Analysis": balanced accuracy (the mean of the per-class accuracies), Cohen's kappa, weighted
F1 and the accuracy of each class (its recall), over emotion labels 0..num_labels-1.

An answer the parser could not read is passed as -1: it counts as wrong for its true class,
is never mapped to a class, and lowers `valid_rate`. Kappa treats it as a category of its
own, so it can agree with no reference.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted label per sample, -1 for an unreadable answer.
    references (list of int): true label per sample, 0..num_labels-1.
    num_labels (int): number of classes (default 7, SEED-VII's emotions).
Returns:
    accuracy, balanced_accuracy, cohen_kappa, weighted_f1, valid_rate: floats in [0, 1]
        (kappa in [-1, 1]); balanced_accuracy averages over the classes present in references.
    per_class_accuracy: list of num_labels floats, NaN for a class absent from references.
    confusion_matrix: num_labels rows (true class) x num_labels + 1 columns (predicted
        class, then unreadable), counts.
Examples:
    >>> metric = evaluate.load("train/evaluation/metrics/e2llm_ied")
    >>> metric.compute(predictions=[0, 1, -1], references=[0, 1, 1], num_labels=2)["accuracy"]
    0.6666666666666666
"""

_CITATION = """\
@article{ma2026e2llm,
  title={E$^2$-LLM: Bridging Neural Signals and Interpretable Affective Analysis},
  author={Ma and Lin and Xie and others},
  year={2026}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class E2llmIed(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references, num_labels: int = 7):
        predicted = np.asarray(predictions, dtype=np.int64)
        true = np.asarray(references, dtype=np.int64)
        if true.size == 0:
            raise ValueError("e2llm_ied needs at least one prediction, got none")
        if true.min() < 0 or true.max() >= num_labels:
            raise ValueError(
                f"references must be labels 0..{num_labels - 1}, got values from {true.min()} to {true.max()}"
            )
        if predicted.min() < -1 or predicted.max() >= num_labels:
            raise ValueError(
                f"predictions must be labels 0..{num_labels - 1} or -1 for an unreadable answer, "
                f"got values from {predicted.min()} to {predicted.max()}"
            )

        # Column num_labels collects the unreadable answers (-1).
        columns = np.where(predicted < 0, num_labels, predicted)
        confusion = np.zeros((num_labels, num_labels + 1), dtype=np.int64)
        np.add.at(confusion, (true, columns), 1)
        total = confusion.sum()
        correct = np.diag(confusion[:, :num_labels]).astype(np.float64)
        support = confusion.sum(axis=1).astype(np.float64)
        predicted_count = confusion.sum(axis=0)[:num_labels].astype(np.float64)

        with np.errstate(divide="ignore", invalid="ignore"):
            recall = np.where(support > 0, correct / support, np.nan)
            precision = np.where(predicted_count > 0, correct / predicted_count, 0.0)
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        f1 = np.nan_to_num(f1)

        observed = correct.sum() / total
        expected = float(np.dot(support, confusion.sum(axis=0)[:num_labels]) / total**2)
        kappa = 1.0 if expected == 1.0 else (observed - expected) / (1.0 - expected)

        return {
            "accuracy": float(observed),
            "balanced_accuracy": float(np.nanmean(recall)),
            "cohen_kappa": float(kappa),
            "weighted_f1": float(np.dot(f1, support) / total),
            "per_class_accuracy": [float(value) for value in recall],
            "valid_rate": float((predicted >= 0).mean()),
            "confusion_matrix": confusion.tolist(),
        }
