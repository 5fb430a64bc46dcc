"""`e2llm demo` end to end at its smallest size: every step runs and leaves what it promises."""

import json

import pytest
from datasets import load_from_disk

from train import demo
from train.data.qa import EMOTIONS


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert demo.main(["--out", str(out), "--size", "smoke"]) == 0
    return out


def test_demo_writes_every_step_folder(demo_run):
    for name in ("data", "prepared", "stage1", "lm-warmup", "stage2", "stage3", "eval", "hub"):
        assert (demo_run / name).is_dir(), name
    assert "synthetic" in (demo_run / "data" / "README.txt").read_text().lower()
    assert (demo_run / "stage3" / "merged" / "config.json").is_file()
    # The warm-up measured its check verdicts on the held-out questions; the summary quotes them.
    checks = json.loads((demo_run / "lm-warmup" / "warmup_checks.json").read_text())
    assert checks["checks"] > 0
    summary = " ".join(demo._warmup_line(demo_run))
    assert f"gave {checks['accuracy']} % of their {checks['checks']} check verdicts right" in summary
    # ... and how often it began the scenarios its EIM answers restate (3 per EIM question) rightly.
    assert checks["restated"] == 3 * 2
    assert f"It began {checks['restated_accuracy']} % of the 6 scenarios EIM answers restate" in summary


def test_demo_evaluates_every_task_at_its_size(demo_run):
    results = json.loads((demo_run / "eval" / "results.json").read_text())
    predictions = [json.loads(line) for line in (demo_run / "eval" / "predictions.jsonl").read_text().splitlines()]
    qa = load_from_disk(str(demo_run / "prepared" / "qa"))
    expected = {"IED": min(6, len(qa["test_ied"])), "ESR": min(6, len(qa["test_esr"]))}
    assert sum(p["task"] == "IED" for p in predictions) == expected["IED"]
    assert sum(p["task"] == "ESR" for p in predictions) == expected["ESR"]
    assert {p["task"] for p in predictions} == {"IED", "EPC", "ESS", "EIM", "ESR"}
    assert (demo_run / "eval" / "tables.md").read_text().count("Random") >= 2
    assert (demo_run / "eval" / "confusion_matrix.png").stat().st_size > 0
    assert (demo_run / "eval" / "attribution.png").read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads((demo_run / "eval" / "attribution.json").read_text())["attribution"]) == 58
    assert all("faithfulness" in results[task] for task in ("IED", "EPC", "ESS", "EIM", "ESR"))


def test_demo_publishes_a_folder_with_code_weights_and_card(demo_run):
    files = {path.name for path in (demo_run / "hub").iterdir()}
    assert {"README.md", "config.json", "model.safetensors", "modeling_e2llm.py", "processing_e2llm.py"} <= files
    assert "model-index" in (demo_run / "hub" / "README.md").read_text()


def test_demo_explains_a_test_eeg_from_the_reloaded_folder(demo_run):
    explanation = json.loads((demo_run / "explanation.json").read_text())
    segments = load_from_disk(str(demo_run / "prepared" / "segments"))["test"]
    row = segments[segments["id"].index(explanation["segment"])]
    assert explanation["true_emotion"] == row["emotion"] in EMOTIONS
    assert isinstance(explanation["analysis"], str)
    assert isinstance(explanation["claims"], list)


def test_demo_marks_each_claim_of_its_explanation_true_or_false_against_the_segment(demo_run):
    import numpy as np

    from train.data.claims import Claim, describe_claims, salient_claims
    from train.data.features import FEATURE_NAMES
    from train.demo import _claim_lines, check_claims

    segment = load_from_disk(str(demo_run / "prepared" / "segments"))["test"][0]
    scores = {name: segment[name] for name in FEATURE_NAMES}
    claims = salient_claims(scores)
    strongest = max(FEATURE_NAMES[:30], key=lambda name: abs(scores[name]))
    claims = claims or [Claim(strongest, 1 if scores[strongest] > 0 else -1)]
    wrong = Claim(claims[0].feature, -claims[0].direction)
    text = f"The EEG: {describe_claims(claims, np.random.default_rng(0))}; {describe_claims([wrong], np.random.default_rng(1))}."
    judged = check_claims({"segment": segment["id"], "analysis": text + "\nAnswer: sad"}, demo_run / "prepared")
    stated = sorted((c.feature, c.direction, c.holds(scores)) for c in [*claims, wrong])
    assert sorted((c["feature"], c["direction"], c["true"]) for c in judged) == stated
    assert all(c.holds(scores) for c in claims) and not wrong.holds(scores)
    last = judged[-1]  # the wrong claim comes last in the text
    assert (last["feature"], last["direction"], last["true"]) == (wrong.feature, wrong.direction, False)
    assert last["z"] == round(scores[wrong.feature], 3)
    lines = _claim_lines(judged)
    assert lines[-1].startswith("    [false]") and len(lines) == len(judged)


def test_demo_run_again_continues_after_the_finished_steps(demo_run, capsys):
    assert demo.main(["--out", str(demo_run), "--size", "smoke"]) == 0
    printed = capsys.readouterr().out
    for step in ("data", "prepared", "stage1", "lm-warmup", "stage2", "stage3", "eval", "attribution", "hub"):
        assert f"{step}/ already done, skipped" in printed
    assert "$ e2llm" not in printed


def test_demo_stage1_autocasts_to_bfloat16_only_on_a_cpu_with_bfloat16_units(monkeypatch):
    import torch

    from train.demo import cpu_bf16_arguments
    from train.stages import stage1

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert cpu_bf16_arguments() == []
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    arguments = cpu_bf16_arguments()
    _, training_args = stage1.parse_arguments(["--data", "unused", "--output_dir", "unused", *arguments])
    assert training_args.bf16 and training_args.use_cpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cpu_bf16_arguments() == []  # a GPU takes the recipe as it is
