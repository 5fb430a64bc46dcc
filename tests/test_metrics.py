"""The shipped `evaluate` metric modules against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    recall_score,
)

from train.evaluation.metrics import METRICS_DIR, load_metric


@pytest.fixture(scope="module")
def ied_metric():
    return load_metric("e2llm_ied")


@pytest.fixture(scope="module")
def choice_metric():
    return load_metric("e2llm_choice")


@pytest.fixture(scope="module")
def labels_with_invalid():
    """300 samples over 7 emotions, about 60 % right, 10 % unreadable (-1)."""
    rng = np.random.default_rng(0)
    references = rng.integers(0, 7, size=300)
    predictions = np.where(rng.random(300) < 0.6, references, rng.integers(0, 7, size=300))
    predictions[rng.random(300) < 0.1] = -1
    return predictions, references


# sklearn warns that -1 never occurs in y_true: that is what an unreadable answer is.
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_ied_balanced_accuracy_matches_sklearn(ied_metric, labels_with_invalid):
    predictions, references = labels_with_invalid
    result = ied_metric.compute(predictions=predictions, references=references)
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(references, predictions))


def test_ied_cohen_kappa_matches_sklearn(ied_metric, labels_with_invalid):
    predictions, references = labels_with_invalid
    result = ied_metric.compute(predictions=predictions, references=references)
    assert result["cohen_kappa"] == pytest.approx(cohen_kappa_score(references, predictions))


def test_ied_weighted_f1_matches_sklearn_over_the_emotion_labels(ied_metric, labels_with_invalid):
    predictions, references = labels_with_invalid
    result = ied_metric.compute(predictions=predictions, references=references)
    expected = f1_score(references, predictions, labels=list(range(7)), average="weighted")
    assert result["weighted_f1"] == pytest.approx(expected)


def test_ied_per_class_accuracy_is_sklearn_recall(ied_metric, labels_with_invalid):
    predictions, references = labels_with_invalid
    result = ied_metric.compute(predictions=predictions, references=references)
    expected = recall_score(references, predictions, labels=list(range(7)), average=None)
    np.testing.assert_allclose(result["per_class_accuracy"], expected)


def test_ied_confusion_matrix_has_an_unreadable_column(ied_metric, labels_with_invalid):
    predictions, references = labels_with_invalid
    result = ied_metric.compute(predictions=predictions, references=references)
    full = confusion_matrix(references, predictions, labels=[0, 1, 2, 3, 4, 5, 6, -1])
    np.testing.assert_array_equal(result["confusion_matrix"], full[:7])


def test_ied_unreadable_answers_are_wrong_and_lower_the_valid_rate(ied_metric):
    result = ied_metric.compute(predictions=[0, -1, -1, 3], references=[0, 1, 2, 3])
    assert result["accuracy"] == 0.5
    assert result["valid_rate"] == 0.5
    assert result["per_class_accuracy"][1] == 0.0
    assert result["per_class_accuracy"][2] == 0.0


def test_ied_class_absent_from_references_is_nan_and_left_out_of_balanced_accuracy(ied_metric):
    result = ied_metric.compute(predictions=[0, 0, 1], references=[0, 1, 1], num_labels=3)
    assert np.isnan(result["per_class_accuracy"][2])
    assert result["balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)


def test_ied_perfect_predictions_give_kappa_one(ied_metric):
    result = ied_metric.compute(predictions=[0, 1, 2, 3, 4, 5, 6], references=[0, 1, 2, 3, 4, 5, 6])
    assert result["cohen_kappa"] == 1.0
    assert result["weighted_f1"] == 1.0


def test_ied_rejects_a_prediction_outside_the_labels(ied_metric):
    with pytest.raises(ValueError, match=r"predictions must be labels 0..6 or -1"):
        ied_metric.compute(predictions=[7], references=[0])


def test_ied_rejects_an_unreadable_reference(ied_metric):
    with pytest.raises(ValueError, match=r"references must be labels 0..6"):
        ied_metric.compute(predictions=[0], references=[-1])


def test_choice_accuracy_counts_unreadable_answers_as_wrong(choice_metric):
    result = choice_metric.compute(
        predictions=["EEG 1", "", "EEG 3", "EEG 2"], references=["EEG 1", "EEG 2", "EEG 1", "EEG 2"]
    )
    assert result == {"accuracy": 0.5, "valid_rate": 0.75}


def test_choice_accuracy_matches_sklearn(choice_metric):
    rng = np.random.default_rng(1)
    options = np.array(["EEG 1", "EEG 2", "EEG 3"])
    references = options[rng.integers(0, 3, size=200)]
    predictions = options[rng.integers(0, 3, size=200)]
    result = choice_metric.compute(predictions=list(predictions), references=list(references))
    assert result["accuracy"] == pytest.approx(accuracy_score(references, predictions))


def test_metric_modules_load_by_path_from_their_folders():
    import evaluate

    metric = evaluate.load(str(METRICS_DIR / "e2llm_ied"))
    assert metric.name == "e2llm_ied"


def test_load_metric_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="unknown metric 'accuracy'"):
        load_metric("accuracy")
