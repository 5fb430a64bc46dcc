"""The model card: metadata that round-trips through ModelCard.load, and the sections a reader needs."""

from __future__ import annotations

import pytest
from huggingface_hub import ModelCard

from train.evaluation.evaluate import score_predictions
from train.evaluation.publish import card_template_path, render_card
from train.data.qa import EMOTIONS


@pytest.fixture(scope="module")
def config():
    from modeling_e2llm import E2LLMConfig, EEGPTConfig

    from train.stages.tiny import tiny_qwen3_config

    return E2LLMConfig(eeg_config=EEGPTConfig.from_preset("tiny"), text_config=tiny_qwen3_config())


@pytest.fixture(scope="module")
def results():
    rows = [{"task": "IED", "gold": e, "predicted": e if e != "fear" else None} for e in EMOTIONS]
    rows += [{"task": "EPC", "gold": "more", "predicted": "more"}, {"task": "ESS", "gold": "EEG 1", "predicted": None}]
    rows += [{"task": "EIM", "gold": "A=EEG 1, B=EEG 2, C=EEG 3", "predicted": "A=EEG 1, B=EEG 2, C=EEG 3"}]
    rows += [{"task": "ESR", "gold": "EEG 2", "predicted": "EEG 2"}]
    results = score_predictions(rows, EMOTIONS)
    results["IED"]["faithfulness"] = {
        "explanations": 7, "claims_per_explanation": 2.0, "claim_precision": 81.25, "all_true": 57.14,
        "baseline_claim_precision": 52.5, "baseline_all_true": 14.29, "gap": 28.75,
    }  # fmt: skip
    return {"name": "run", **results}


@pytest.fixture(scope="module")
def card(config, results, tmp_path_factory):
    rendered = render_card(
        config, model_name="E2LLM-Qwen3-8B", repo_id="my-org/e2llm-qwen3-8b", base_model="Qwen/Qwen3-8B",
        results=results, dataset_name="SEED-VII", num_parameters=8_200_000_000,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("card") / "README.md"
    rendered.save(path)
    return ModelCard.load(path)


def test_card_metadata_round_trips_base_model_and_library(card):
    assert card.data.base_model == "Qwen/Qwen3-8B"
    assert card.data.library_name == "transformers"
    assert card.data.license == "apache-2.0"
    assert card.data.model_name == "E2LLM-Qwen3-8B"
    assert "eeg" in card.data.tags


def test_card_model_index_holds_every_figure_of_the_run(card, results):
    figures = {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert figures == {
        ("IED", "balanced_accuracy"): round(results["IED"]["balanced_accuracy"], 2),
        ("IED", "cohen_kappa"): round(results["IED"]["cohen_kappa"], 2),
        ("IED", "f1"): round(results["IED"]["weighted_f1"], 2),
        ("EPC", "accuracy"): 100.0,
        ("ESS", "accuracy"): 0.0,
        ("EIM", "accuracy"): 100.0,
        ("ESR", "accuracy"): 100.0,
        ("IED", "claim_precision"): 81.25,
        ("IED", "all_true"): 57.14,
        ("IED", "baseline_claim_precision"): 52.5,
    }
    assert {r.dataset_name for r in card.data.eval_results} == {"SEED-VII"}
    assert {r.dataset_split for r in card.data.eval_results} == {"test_ied", "test_multi", "test_esr"}
    assert {r.task_name for r in card.data.eval_results if r.dataset_config == "EIM"} == {
        "EEG emotion instance matching (EIM)"
    }


def test_card_shows_the_run_tables_beside_the_papers_best_figures(card, results):
    assert f"| E2LLM-Qwen3-8B | 100.00 | 100.00 | 100.00 | 100.00 | 0.00 | 100.00 | 100.00 | {results['IED']['balanced_accuracy']:.2f} |" in card.text
    assert "| E2LLM-Qwen3-8B | 100.00 | 0.00 | 100.00 | 100.00 | 75.00 |" in card.text
    assert "balanced accuracy 61.73\n(Qwen3-8B), Cohen's kappa 55.14\n(Qwen3-14B), ESR accuracy 53.89 (Qwen3-14B)" in card.text
    assert "IED 14.29, EPC 33.33, ESS 33.33, EIM 16.67 and ESR 33.33" in card.text


@pytest.mark.parametrize(
    "section",
    ["## Architecture", "## Training", "## Data", "## Evaluation", "## How to use", "## Intended use",
     "## Limitations", "## Ethical considerations", "## Citation"],
)  # fmt: skip
def test_card_has_the_section(card, section):
    assert section in card.text


def test_card_usage_loads_the_repository_with_remote_code(card):
    assert 'AutoModel.from_pretrained("my-org/e2llm-qwen3-8b", trust_remote_code=True)' in card.text
    assert 'AutoProcessor.from_pretrained("my-org/e2llm-qwen3-8b", trust_remote_code=True)' in card.text


def test_card_says_what_the_faithfulness_score_means_and_does_not_prove(card):
    text = card.text.replace("\n", " ")
    assert "| IED | 7 | 2.00 | 81.25 | 57.14 | 52.50 | 14.29 | 28.75 |" in card.text
    for phrase in ("same-emotion baseline", "claim precision", "What it does not prove", "attribution maps"):
        assert phrase in text, phrase


def test_card_states_limitations_and_forbidden_uses(card):
    text = card.text
    for phrase in ("20 subjects", "one dataset", "varies strongly between subjects", "No person has validated",
                   "informed consent", "surveillance", "workplace", "clinical, hiring"):  # fmt: skip
        assert phrase in text.replace("\n", " "), phrase


def test_card_describes_the_architecture_from_the_config(card):
    assert "embed_dim 64, depth 2, 4 heads" in card.text
    assert "| Language model | Qwen/Qwen3-8B | hidden 64, 2 layers |" in card.text
    assert "Parameters: 8,200.0M." in card.text


def test_card_without_results_has_no_model_index_and_says_how_to_add_them(config, tmp_path):
    rendered = render_card(config, model_name="m", repo_id="o/m", base_model=None, results=None, dataset_name="SEED-VII")
    rendered.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.eval_results is None
    assert loaded.data.base_model is None
    assert "publish with `--results EVAL/results.json`" in loaded.text


def test_card_template_is_the_one_in_model_cards():
    assert card_template_path().parent.name == "model_cards"
    assert card_template_path().read_text().startswith("---\n{{ card_data }}\n---")


def test_card_states_the_split_and_its_leakage(config, results, tmp_path):
    split = {"name": "paper", "description": "the paper's", "train_segments": 24444, "test_segments": 2761,
             "test_subjects": 20, "subjects_shared": 20, "test_clips": 1600, "clips_shared": 1598, "test_videos": 80,
             "videos_shared": 80, "test_segments_in_shared_clips": 99.93}  # fmt: skip
    rendered = render_card(
        config, model_name="m", repo_id="o/m", base_model=None, results={**results, "split": split}, dataset_name="SEED-VII",
    )  # fmt: skip
    text = rendered.text
    assert "- Evaluated on the `paper` split: 20 of 20 test\n  subjects and 1598 of 1600 test clips" in text
    assert "(99.9 % of the test segments come from a clip trained on).\n  These figures overstate" in text
    assert "Split: paper (the paper's). Shared with training: 20 of 20 test subjects" in text
    assert "`e2llm prepare --split cross-subject`) is the leak-free protocol" in text
