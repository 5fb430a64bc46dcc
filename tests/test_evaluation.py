"""`e2llm evaluate`: scoring of parsed and unreadable answers, the paper's tables, generation over the test sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from train.evaluation import evaluate as evaluation
from train.data.qa import EMOTIONS

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A prepared folder as `e2llm prepare` writes it: one test segment per emotion, small QA sets."""
    from datasets import Dataset, DatasetDict

    from train.data.features import FEATURE_NAMES
    from train.data.prepare import segment_features
    from train.data.qa import build_qa_sets, qa_features

    rng = np.random.default_rng(0)
    splits = {}
    for split, repeats in (("train", 2), ("test", 1)):
        emotions = [e for e in EMOTIONS for _ in range(repeats)]
        splits[split] = {
            "id": [f"{split}_{i:03d}" for i in range(len(emotions))],
            "eeg": rng.normal(0, 0.02, size=(len(emotions), 58, 2560)).astype(np.float32),
            "subject": [1] * len(emotions), "session": [1] * len(emotions), "video": list(range(1, len(emotions) + 1)),
            "segment": [0] * len(emotions), "emotion": emotions, "label": [EMOTIONS.index(e) for e in emotions],
            "intensity": list(rng.uniform(0, 1, len(emotions))),
            **{name: list(rng.normal(0, 1.2, len(emotions))) for name in FEATURE_NAMES},
        }  # fmt: skip
    folder = tmp_path_factory.mktemp("prepared")
    DatasetDict({k: Dataset.from_dict(v, features=segment_features()) for k, v in splits.items()}).save_to_disk(
        str(folder / "segments")
    )
    sets = build_qa_sets(
        *(({k: v for k, v in splits[s].items() if k != "eeg"}) for s in ("train", "test")),
        sizes={"train": 4, "stage3": 2, "test_multi": 6, "test_esr": 2},
    )
    DatasetDict({k: Dataset.from_list(v, features=qa_features()) for k, v in sets.items()}).save_to_disk(
        str(folder / "qa")
    )
    (folder / "prepare.json").write_text(
        json.dumps({"dataset": "seed-vii", "root": str(folder / "absent"), "split": "paper"})
    )
    return folder


@pytest.fixture(scope="module")
def model_and_processor(make_tiny_e2llm):
    return make_tiny_e2llm()


@pytest.fixture(scope="module")
def model_folder(model_and_processor, tmp_path_factory):
    model, processor = model_and_processor
    folder = tmp_path_factory.mktemp("stage3") / "merged"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def store(prepared):
    from datasets import load_from_disk

    from train.data.segments import SegmentStore

    return SegmentStore(load_from_disk(str(prepared / "segments"))["test"])


@pytest.fixture(scope="module")
def qa(prepared):
    from datasets import load_from_disk

    return load_from_disk(str(prepared / "qa"))


@pytest.fixture(scope="module")
def evaluated(model_folder, prepared, tmp_path_factory):
    """`e2llm evaluate` on one sample per task."""
    out = tmp_path_factory.mktemp("eval") / "run"
    code = evaluation.main(
        ["--model", str(model_folder), "--data", str(prepared), "--out", str(out), "--limit", "1",
         "--max-new-tokens", "3", "--batch-size", "2", "--name", "tiny"]
    )  # fmt: skip
    assert code == 0
    return out


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------- scoring


@pytest.mark.parametrize(
    ("task", "text"),
    [
        ("IED", "The EEG shows strong frontal alpha asymmetry, so the person is happy."),
        ("IED", "Answer:"),
        ("IED", "Answer: I cannot tell."),
        ("IED", ""),
        ("EPC", "Answer: EEG 1"),
        ("ESS", "Answer: EEG 4"),
        ("EIM", "Answer: A=EEG 1, B=EEG 1, C=EEG 2"),
        ("ESR", "EEG 2 fits best."),
    ],
)
def test_an_unreadable_answer_is_predicted_as_none(task, text):
    sample = {"id": "x", "task": task, "answer": "happy" if task == "IED" else "EEG 1"}
    assert evaluation.prediction_row(sample, [text])["predicted"] is None


def test_unreadable_answers_count_as_wrong_and_lower_the_valid_rate():
    rows = [
        {"task": "IED", "gold": "happy", "predicted": "happy"},
        {"task": "IED", "gold": "happy", "predicted": None},
        {"task": "IED", "gold": "sad", "predicted": "sad"},
        {"task": "IED", "gold": "sad", "predicted": None},
    ]
    ied = evaluation.score_predictions(rows, EMOTIONS)["IED"]
    assert ied["accuracy"] == 50.0
    assert ied["balanced_accuracy"] == 50.0
    assert ied["valid_rate"] == 50.0
    assert ied["per_class_accuracy"]["happy"] == 50.0
    assert ied["per_class_accuracy"]["fear"] is None
    assert [row[-1] for row in ied["confusion_matrix"]] == [1, 0, 0, 0, 0, 1, 0]


def test_an_unreadable_answer_is_never_mapped_to_a_class():
    rows = [{"task": "IED", "gold": "happy", "predicted": None}] * 3
    ied = evaluation.score_predictions(rows, EMOTIONS)["IED"]
    assert np.asarray(ied["confusion_matrix"])[:, :7].sum() == 0


def test_choice_tasks_are_scored_in_percent_with_their_random_baselines():
    rows = [
        {"task": "EPC", "gold": "more", "predicted": "more"},
        {"task": "EPC", "gold": "less", "predicted": None},
        {"task": "EIM", "gold": "A=EEG 1, B=EEG 2, C=EEG 3", "predicted": "A=EEG 1, B=EEG 2, C=EEG 3"},
        {"task": "ESR", "gold": "EEG 3", "predicted": "EEG 1"},
    ]
    results = evaluation.score_predictions(rows, EMOTIONS)
    assert results["EPC"] == {"n": 2, "accuracy": 50.0, "valid_rate": 50.0, "random_baseline": 100 / 3}
    assert results["EIM"]["random_baseline"] == pytest.approx(16.67, abs=0.005)
    assert results["ESR"]["accuracy"] == 0.0
    assert results["average"] == pytest.approx((50 + 100 + 0) / 3)
    assert "ESS" not in results


def test_scoring_rejects_an_unknown_task():
    with pytest.raises(ValueError, match="unknown task 'XYZ'"):
        evaluation.score_predictions([{"task": "XYZ", "gold": "a", "predicted": "a"}], EMOTIONS)


# ----------------------------------------------------------------------------- tables and files


@pytest.fixture(scope="module")
def full_results():
    rows = [{"task": "IED", "gold": e, "predicted": e if i % 2 else None} for i, e in enumerate(EMOTIONS * 2)]
    rows += [{"task": t, "gold": "EEG 1", "predicted": "EEG 1"} for t in ("ESS", "ESR")]
    rows += [{"task": "EPC", "gold": "more", "predicted": "less"}, {"task": "EIM", "gold": "x", "predicted": "x"}]
    return evaluation.score_predictions(rows, EMOTIONS)


def test_table_2_lists_per_class_accuracy_then_the_summary_metrics(full_results):
    table = evaluation.format_tables(full_results, "E2LLM-8B", EMOTIONS)
    assert (
        "| Model | Happy | Surprise | Neutral | Disgust | Fear | Sad | Anger | Balanced acc. | Kappa | Weighted F1 "
        "| Valid answers |" in table
    )
    ied = full_results["IED"]
    row = f"| E2LLM-8B | {' | '.join(['50.00'] * 7)} | 50.00 | {ied['cohen_kappa']:.2f} | {ied['weighted_f1']:.2f} | 50.00 |"
    assert row in table
    assert f"| Random | {' | '.join(['14.29'] * 7)} | 14.29 | 0.00 | – | – |" in table


def test_table_3_lists_the_choice_tasks_their_average_and_chance(full_results):
    table = evaluation.format_tables(full_results, "E2LLM-8B", EMOTIONS)
    assert "| Model | EPC | ESS | EIM | ESR | Average |" in table
    assert "| E2LLM-8B | 0.00 | 100.00 | 100.00 | 100.00 | 75.00 |" in table
    assert "| Random | 33.33 | 33.33 | 16.67 | 33.33 | 29.17 |" in table


def test_compare_puts_runs_side_by_side_in_table_4(full_results, tmp_path):
    for name in ("full", "no-stage1"):
        evaluation.write_report(tmp_path / name, full_results, name, EMOTIONS, {})
    assert evaluation.main(["--compare", str(tmp_path / "full"), str(tmp_path / "no-stage1"), "--out", str(tmp_path)]) == 0
    table = (tmp_path / "comparison.md").read_text()
    assert "| Variant | Balanced acc. | Kappa | Weighted F1 | EPC | ESS | EIM | ESR | Average |" in table
    kappa, f1 = full_results["IED"]["cohen_kappa"], full_results["IED"]["weighted_f1"]
    for name in ("full", "no-stage1"):
        assert f"| {name} | 50.00 | {kappa:.2f} | {f1:.2f} | 0.00 | 100.00 | 100.00 | 100.00 | 75.00 |" in table


def test_compare_names_a_folder_without_results(tmp_path):
    with pytest.raises(ValueError, match="holds no results.json"):
        evaluation.compare([tmp_path], tmp_path)


def test_confusion_matrix_is_written_as_png(full_results, tmp_path):
    evaluation.plot_confusion_matrix(full_results["IED"], EMOTIONS, tmp_path / "cm.png")
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reading_predictions_drops_a_line_cut_short(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"id": "a", "task": "IED"}\n{"id": "b", "ta')
    assert evaluation.read_predictions(path) == [{"id": "a", "task": "IED"}]


# ----------------------------------------------------------------------------- faithfulness

SCORES = {
    "a": {"power_alpha_occipital": -1.5, "power_beta_frontal": 0.2, "asymmetry_alpha_frontal": 1.0},
    "b": {"power_alpha_occipital": 0.8, "power_beta_frontal": 1.4, "asymmetry_alpha_frontal": -0.1},
    "c": {"power_alpha_occipital": -0.9, "power_beta_frontal": -1.0, "asymmetry_alpha_frontal": 0.7},
}


def test_each_claim_is_read_back_and_checked_against_the_described_eeg():
    row = {"task": "EPC", "segment_ids": ["a", "b"], "text": (
        "The question is about fear.\nEEG 1: alpha is reduced over the occipital sites; frontal alpha is higher on "
        "the right. This suggests fear.\nEEG 2: there is less alpha over the occipital region and the frontal sites "
        "show more beta. This suggests anger. There is less alpha over the occipital sites.\nEEG 3: beta is raised "
        "over the frontal region.\nAnswer: more")}
    judged = evaluation.judge_claims(row, SCORES)
    assert [(c["eeg"], c["feature"], c["direction"], c["true"]) for c in judged] == [
        (1, "power_alpha_occipital", -1, True),
        (1, "asymmetry_alpha_frontal", 1, True),
        (2, "power_alpha_occipital", -1, False),  # b's occipital alpha is raised
        (2, "power_beta_frontal", 1, True),  # EEG 2's repeated occipital claim is scored once
        (3, "power_beta_frontal", 1, False),  # there is no EEG 3
    ]
    assert judged[0]["segment"] == "a" and judged[0]["z"] == -1.5 and judged[4]["segment"] is None


def _judged_ied_row(segment, text):
    """An IED prediction row about `segment` whose explanation is `text`, its claims judged against SCORES."""
    r = {"task": "IED", "segment_ids": [segment], "text": text}
    return {**r, "claims": evaluation.judge_claims(r, SCORES)}


def test_faithfulness_sets_the_models_claims_beside_those_copied_from_the_same_emotion():
    row = _judged_ied_row
    rows = [
        row("a", "The EEG: alpha is reduced over the occipital sites. Answer: sad"),
        row("b", "The EEG: beta is raised over the frontal sites. Answer: sad"),
        row("c", "The EEG: there is less beta over the frontal region and frontal alpha is higher on the right."),
    ]
    emotion_of = {"a": "sad", "b": "sad", "c": "fear"}
    figures = evaluation.score_faithfulness(rows, SCORES, emotion_of)["IED"]
    assert figures["claims_per_explanation"] == pytest.approx(4 / 3)
    assert figures["claim_precision"] == 100.0 and figures["all_true"] == 100.0
    # a gets b's claim (beta raised: a's is 0.2, false), b gets a's (alpha reduced: b's is raised,
    # false); c has no other fear EEG and no baseline.
    assert figures["baseline_eegs"] == 2
    assert figures["baseline_claim_precision"] == 0.0 and figures["baseline_all_true"] == 0.0
    assert figures["gap"] == 100.0
    assert "typical_claim_precision" not in figures  # no training segments given


def test_the_typical_features_baseline_states_what_the_emotion_shows_on_average():
    training = {
        "t1": {"power_alpha_occipital": -2.0, "power_beta_frontal": 0.5, "asymmetry_alpha_frontal": 0.4},
        "t2": {"power_alpha_occipital": -1.0, "power_beta_frontal": -0.1, "asymmetry_alpha_frontal": 1.0},
        "t3": {"power_alpha_occipital": 0.3, "power_beta_frontal": 1.5, "asymmetry_alpha_frontal": -0.2},
    }
    typical = evaluation.typical_claims(training, {"t1": "sad", "t2": "sad", "t3": "fear"})
    from train.data.claims import Claim

    # sad: occipital alpha -1.5, asymmetry +0.7, frontal beta +0.2 on average; fear: t3's own.
    assert typical["sad"][:3] == [Claim("power_alpha_occipital", -1), Claim("asymmetry_alpha_frontal", 1),
                                  Claim("power_beta_frontal", 1)]  # fmt: skip
    assert typical["fear"][0] == Claim("power_beta_frontal", 1)

    row = _judged_ied_row
    rows = [
        # a (sad) states 2 claims, both true; the typical 2 of sad: occipital alpha reduced (a: -1.5,
        # true), frontal alpha higher on the right (a: 1.0, true).
        row("a", "The EEG: alpha is reduced over the occipital sites; frontal alpha is higher on the right."),
        # b (sad) states 1 true claim; the typical 1 of sad, occipital alpha reduced, is false for b (+0.8).
        row("b", "The EEG: beta is raised over the frontal sites. Answer: sad"),
        # c (fear) states the same claim twice (scored once, false: c's frontal beta is -1.0); fear's typical:
        # frontal beta raised, false too.
        row("c", "The EEG: beta is raised over the frontal region and there is more beta over the frontal sites."),
    ]
    figures = evaluation.score_faithfulness(rows, SCORES, {"a": "sad", "b": "sad", "c": "fear"}, typical)["IED"]
    assert figures["claim_precision"] == pytest.approx(300 / 4)
    assert figures["typical_claim_precision"] == pytest.approx(200 / 4)
    assert figures["typical_all_true"] == pytest.approx(100 / 3)
    assert figures["typical_gap"] == pytest.approx(25.0)


# ----------------------------------------------------------------------------- generation


def test_evaluate_writes_one_prediction_per_sample_and_task(evaluated):
    rows = _rows(evaluated / "predictions.jsonl")
    assert sorted(row["task"] for row in rows) == sorted(["IED", "EPC", "ESS", "EIM", "ESR"])
    for row in rows:
        assert set(row) >= {"id", "task", "gold", "predicted", "text"}
        assert isinstance(row["text"], str)
    assert "first_turn" in next(row for row in rows if row["task"] == "ESR")


def test_evaluate_results_agree_with_its_predictions(evaluated):
    rows = _rows(evaluated / "predictions.jsonl")
    results = json.loads((evaluated / "results.json").read_text())
    assert results["name"] == "tiny"
    assert results["units"] == "percent"
    assert results["dataset"] == "SEED-VII"
    for row in rows:
        figures = results[row["task"]]
        assert figures["n"] == 1
        assert figures["valid_rate"] == (0.0 if row["predicted"] is None else 100.0)
        assert figures["accuracy"] == (100.0 if row["predicted"] == row["gold"] else 0.0)


def test_evaluate_names_the_split_and_what_its_test_set_shares_with_training(evaluated):
    split = json.loads((evaluated / "results.json").read_text())["split"]
    # The fixture's 7 test segments come from subject 1's videos 1-7, which also have training segments.
    assert split == {
        "name": "paper", "description": "the paper's: test segments drawn at random over all 10 s segments, stratified "
        "by emotion", "train_segments": 14, "test_segments": 7, "test_subjects": 1, "subjects_shared": 1,
        "test_clips": 7, "clips_shared": 7, "test_videos": 7, "videos_shared": 7, "test_segments_in_shared_clips": 100.0,
    }  # fmt: skip
    tables = (evaluated / "tables.md").read_text()
    assert "Split: paper (the paper's: test segments drawn at random" in tables
    assert "1 of 1 test subjects, 7 of 7 test clips" in tables and "100.0 % of the test segments" in tables
    assert "`--split cross-subject` gives the leak-free protocol" in tables


def test_table_4_names_each_runs_split_and_its_leak(evaluated, tmp_path):
    table = evaluation.compare([evaluated], tmp_path)
    assert "| Average | Split (test segments from trained clips) |" in table
    assert "| paper (100.0 %) |" in table


def test_every_prediction_carries_its_judged_claims_and_results_their_faithfulness(evaluated):
    rows = _rows(evaluated / "predictions.jsonl")
    results = json.loads((evaluated / "results.json").read_text())
    for row in rows:
        assert isinstance(row["claims"], list) and row["segment_ids"]
        assert set(results[row["task"]]["faithfulness"]) >= {
            "claims_per_explanation", "claim_precision", "all_true", "baseline_claim_precision", "baseline_all_true", "gap"
        }  # fmt: skip
        assert results[row["task"]]["faithfulness"]["claims_per_explanation"] == len(row["claims"])
    assert "Faithfulness of the explanations" in (evaluated / "tables.md").read_text()


def test_evaluate_writes_tables_and_the_confusion_matrix(evaluated):
    assert "Table 2: emotion identification (IED)" in (evaluated / "tables.md").read_text()
    assert "Table 3: multi-EEG reasoning" in (evaluated / "tables.md").read_text()
    assert (evaluated / "confusion_matrix.png").stat().st_size > 0


def test_evaluate_resumes_without_generating_again(evaluated, model_folder, prepared, monkeypatch):
    before = (evaluated / "predictions.jsonl").read_text()
    monkeypatch.setattr(evaluation, "answer_batch", lambda *a, **k: pytest.fail("generated again"))
    args = ["--model", str(model_folder), "--data", str(prepared), "--out", str(evaluated), "--limit", "1",
            "--max-new-tokens", "3", "--name", "tiny"]  # fmt: skip
    assert evaluation.main(args) == 0
    assert (evaluated / "predictions.jsonl").read_text() == before


def test_evaluate_refuses_to_resume_with_another_answer_length(evaluated, model_folder, prepared):
    args = ["--model", str(model_folder), "--data", str(prepared), "--out", str(evaluated), "--max-new-tokens", "5"]
    with pytest.raises(ValueError, match="predictions made with other max_new_tokens"):
        evaluation.main(args)


def test_esr_second_turn_follows_the_models_own_first_answer(model_and_processor, store, qa, monkeypatch):
    model, processor = model_and_processor
    sample = qa["test_esr"][0]
    prompts = []
    render = processor.apply_chat_template

    def recording(messages, **kwargs):
        prompts.append(list(messages))
        return render(messages, **kwargs)

    monkeypatch.setattr(processor, "apply_chat_template", recording)
    turns = evaluation.answer_batch(model, processor, store, [sample], max_new_tokens=3)[0]
    assert len(turns) == 2
    first, second = prompts
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[2]["content"] == [{"type": "text", "text": turns[0]}]
    assert second[3] == sample["messages"][3]
    assert first == sample["messages"][:2]


def test_left_padded_batches_generate_what_each_sample_generates_alone(model_and_processor, store, qa):
    model, processor = model_and_processor
    processor.tokenizer.padding_side = "left"
    samples = [qa["test_ied"][0], qa["test_multi"][0]]  # one and two or three EEGs: different lengths
    together = evaluation.answer_batch(model, processor, store, samples, max_new_tokens=4)
    alone = [evaluation.answer_batch(model, processor, store, [s], max_new_tokens=4)[0] for s in samples]
    assert together == alone


def test_evaluate_scores_a_stage_1_classifier_on_the_test_segments(prepared, tmp_path):
    from modeling_e2llm import EEGPTConfig, EEGPTForEmotionClassification

    torch.manual_seed(0)
    config = EEGPTConfig.from_preset("tiny", num_labels=7, id2label=dict(enumerate(EMOTIONS)))
    EEGPTForEmotionClassification(config).save_pretrained(tmp_path / "stage1")
    assert evaluation.main(["--model", str(tmp_path / "stage1"), "--data", str(prepared), "--out", str(tmp_path / "e")]) == 0
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    assert results["settings"]["kind"] == "stage-1 classifier"
    assert results["IED"]["n"] == 7
    assert results["IED"]["valid_rate"] == 100.0
    rows = _rows(tmp_path / "e" / "predictions.jsonl")
    assert {row["gold"] for row in rows} == set(EMOTIONS)
    assert all(row["predicted"] in EMOTIONS for row in rows)
    assert set(results) >= {"IED"} and "EPC" not in results


def test_evaluate_names_a_folder_that_is_not_prepared(model_folder, tmp_path):
    with pytest.raises(ValueError, match="has no segments/; expected a folder written by `e2llm prepare`"):
        evaluation.main(["--model", str(model_folder), "--data", str(tmp_path), "--out", str(tmp_path / "e")])


def test_dataset_name_tells_synthetic_data_from_seed_vii(tmp_path):
    from train.data.synthesize import README

    root = tmp_path / "root"
    root.mkdir()
    (root / "README.txt").write_text(README)
    (tmp_path / "prepare.json").write_text(json.dumps({"dataset": "seed-vii", "root": str(root)}))
    assert evaluation.dataset_name(tmp_path) == "synthetic SEED-VII-layout data (e2llm synthesize)"
    (root / "README.txt").unlink()
    assert evaluation.dataset_name(tmp_path) == "SEED-VII"
