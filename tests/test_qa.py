"""The five QA tasks: counts, balance, disjointness, determinism and the answer parser."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from train.data import qa
from train.data.claims import Claim, read_explanation, salient_claims
from train.data.features import FEATURE_NAMES
from train.data.qa import EMOTIONS, TASKS, build_qa_sets, parse_answer

SIZES = {"train": 280, "stage3": 56, "test_multi": 60, "test_esr": 21}


def _segments(prefix: str, per_emotion: int, with_intensity: bool, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    emotions = [e for e in EMOTIONS for _ in range(per_emotion)]
    intensity = rng.uniform(0, 1, len(emotions)).tolist() if with_intensity else [None] * len(emotions)
    scores = rng.normal(0, 1.2, (len(FEATURE_NAMES), len(emotions)))
    return {"id": [f"{prefix}{i}" for i in range(len(emotions))], "emotion": emotions, "intensity": intensity,
            **{name: column.tolist() for name, column in zip(FEATURE_NAMES, scores)}}


@pytest.fixture(scope="module")
def segments():
    return _segments("train-", 12, True), _segments("test-", 4, True, seed=1)


@pytest.fixture(scope="module")
def sets(segments):
    return build_qa_sets(*segments, sizes=SIZES, seed=3)


def _final_text(sample) -> str:
    return sample["messages"][-1]["content"][0]["text"]


def test_set_sizes_follow_the_request_and_test_ied_covers_every_test_segment(sets, segments):
    assert {name: len(rows) for name, rows in sets.items()} == {**SIZES, "test_ied": len(segments[1]["id"])}
    assert sorted(s["segment_ids"][0] for s in sets["test_ied"]) == sorted(segments[1]["id"])


def test_training_sets_mix_the_four_training_tasks_in_equal_shares(sets):
    for name in ("train", "stage3"):
        counts = Counter(s["task"] for s in sets[name])
        assert set(counts) == set(qa.TRAIN_TASKS)
        assert max(counts.values()) - min(counts.values()) <= 1


def test_test_multi_holds_epc_ess_eim_and_test_esr_only_esr(sets):
    assert Counter(s["task"] for s in sets["test_multi"]) == {"EPC": 20, "ESS": 20, "EIM": 20}
    assert {s["task"] for s in sets["test_esr"]} == {"ESR"}


def test_training_ied_samples_are_balanced_over_emotions(sets):
    counts = Counter(s["answer"] for s in sets["train"] if s["task"] == "IED")
    assert set(counts) == set(EMOTIONS)
    assert max(counts.values()) - min(counts.values()) <= 1


def test_choice_answers_are_balanced_so_chance_is_one_in_three(segments):
    big = build_qa_sets(*segments, sizes={"train": 2520, "stage3": 0, "test_multi": 0, "test_esr": 0}, seed=0)
    epc = Counter(s["answer"] for s in big["train"] if s["task"] == "EPC")
    ess = Counter(s["answer"] for s in big["train"] if s["task"] == "ESS")
    eim = Counter(s["answer"] for s in big["train"] if s["task"] == "EIM")
    assert set(epc) == set(qa.EPC_ANSWERS) and max(epc.values()) - min(epc.values()) <= 7
    assert set(ess) == {"EEG 1", "EEG 2", "EEG 3"} and min(ess.values()) > 0.25 * 630
    assert set(eim) == set(qa.all_canonical_answers("EIM")) and min(eim.values()) > 0.1 * 630


def test_train_sets_use_only_train_segments_and_test_sets_only_test_segments(sets, segments):
    train_ids, test_ids = set(segments[0]["id"]), set(segments[1]["id"])
    for name, rows in sets.items():
        used = {i for s in rows for i in s["segment_ids"]}
        assert used <= (train_ids if name in ("train", "stage3") else test_ids), name


def test_each_eeg_item_matches_one_segment_id_in_order(sets):
    for rows in sets.values():
        for sample in rows:
            items = [c for m in sample["messages"] for c in m["content"] if c["type"] == "eeg"]
            assert len(items) == len(sample["segment_ids"]) == {"IED": 1, "EPC": 2}.get(sample["task"], 3)


def test_messages_open_with_the_system_prompt_and_alternate_user_and_assistant(sets):
    for rows in sets.values():
        for sample in rows:
            roles = [m["role"] for m in sample["messages"]]
            turns = 2 if sample["task"] == "ESR" else 1
            assert roles == ["system"] + ["user", "assistant"] * turns


def test_the_gold_answer_is_what_parse_answer_reads_from_the_gold_reply(sets):
    for rows in sets.values():
        for sample in rows:
            assert parse_answer(sample["task"], _final_text(sample)) == sample["answer"]


def test_ied_answers_are_the_segment_emotion(sets, segments):
    emotion_of = dict(zip(segments[1]["id"], segments[1]["emotion"]))
    assert all(s["answer"] == emotion_of[s["segment_ids"][0]] for s in sets["test_ied"])


def _ess_form(sample) -> tuple[str, str]:
    """(form, asked emotion) of an ESS sample, from its question."""
    question = sample["messages"][1]["content"][-1]["text"]
    for emotion in EMOTIONS:
        if qa.LEAST[emotion] in question or f"least {qa.NOUN[emotion]}" in question:
            return "weakest", emotion
    return "strongest", next(e for e in EMOTIONS if qa.SUPERLATIVE[e] in question or qa.NOUN[e] in question)


def test_ess_answer_points_at_the_eeg_showing_the_asked_emotion_most_strongly_or_most_weakly(segments):
    emotion_of = dict(zip(segments[0]["id"], segments[0]["emotion"]))
    intensity = dict(zip(segments[0]["id"], segments[0]["intensity"]))
    sets = build_qa_sets(*segments, sizes={"train": 800, "stage3": 0, "test_multi": 0, "test_esr": 0}, seed=1)
    forms = Counter()
    for sample in (s for s in sets["train"] if s["task"] == "ESS"):
        form, asked = _ess_form(sample)
        forms[form] += 1
        chosen = sample["segment_ids"][int(sample["answer"][-1]) - 1]
        others = [other for other in sample["segment_ids"] if other != chosen]
        showing = [other for other in others if emotion_of[other] == asked]
        if form == "strongest":
            assert emotion_of[chosen] == asked
            assert all(intensity[chosen] > intensity[other] for other in showing)
        elif emotion_of[chosen] == asked:
            assert len(showing) == 2 and all(intensity[chosen] < intensity[other] for other in showing)
        else:
            assert len(showing) == 2
    # The paper gives no proportion of the two forms: half each (alternating every round of emotions).
    assert sum(forms.values()) == 200 and abs(forms["strongest"] - forms["weakest"]) <= len(EMOTIONS)


def test_ess_weakest_questions_and_answers_round_trip_through_parse_answer(segments):
    sets = build_qa_sets(*segments, sizes={"train": 400, "stage3": 0, "test_multi": 60, "test_esr": 0}, seed=5)
    weakest = [s for s in sets["train"] + sets["test_multi"] if s["task"] == "ESS" and _ess_form(s)[0] == "weakest"]
    assert len(weakest) >= 50
    assert {s["answer"] for s in weakest} == {"EEG 1", "EEG 2", "EEG 3"}
    for sample in weakest:
        form, asked = _ess_form(sample)
        reply = _final_text(sample)
        assert f"{sample['answer']} " in reply.split("\n")[-2] and f"the least {qa.NOUN[asked]}" in reply
        assert parse_answer("ESS", reply) == sample["answer"]


def test_epc_same_emotion_pairs_are_ordered_by_intensity(segments):
    emotion_of = dict(zip(segments[0]["id"], segments[0]["emotion"]))
    intensity = dict(zip(segments[0]["id"], segments[0]["intensity"]))
    sets = build_qa_sets(*segments, sizes={"train": 2000, "stage3": 0, "test_multi": 0, "test_esr": 0}, seed=2)
    compared = 0
    for sample in (s for s in sets["train"] if s["task"] == "EPC" and s["answer"] != "equal"):
        first, second = sample["segment_ids"]
        if emotion_of[first] == emotion_of[second]:
            compared += 1
            assert (intensity[first] > intensity[second]) == (sample["answer"] == "more")
    assert compared > 10


def test_without_intensity_same_emotion_pairs_are_equal(segments):
    plain = _segments("train-", 12, False), _segments("test-", 4, False)
    sets = build_qa_sets(*plain, sizes={"train": 400, "stage3": 0, "test_multi": 0, "test_esr": 0}, seed=0)
    emotion_of = dict(zip(plain[0]["id"], plain[0]["emotion"]))
    for sample in (s for s in sets["train"] if s["task"] == "EPC"):
        same = emotion_of[sample["segment_ids"][0]] == emotion_of[sample["segment_ids"][1]]
        assert same == (sample["answer"] == "equal")


def _emotions_of(sample, segments) -> list[str]:
    emotion = {}
    for columns in segments:
        emotion.update(zip(columns["id"], columns["emotion"]))
    return [emotion[i] for i in sample["segment_ids"]]


def _scores(segments) -> dict[str, dict[str, float]]:
    scores = {}
    for columns in segments:
        for row, segment_id in enumerate(columns["id"]):
            scores[segment_id] = {name: columns[name][row] for name in FEATURE_NAMES}
    return scores


def test_chain_of_thought_describes_reads_and_checks_each_eeg(sets, segments):
    counted = Counter()
    for sample in sets["train"]:
        if sample["task"] not in ("EPC", "ESS"):
            continue
        emotions, lines = _emotions_of(sample, segments), _final_text(sample).split("\n")
        sought = re.fullmatch(r"The question is about ([a-z ]+)\.", lines[0])[1]
        checks = lines[1 : 1 + len(emotions)]
        for number, (emotion, line) in enumerate(zip(emotions, checks), start=1):
            noun = qa.NOUN[emotion]
            assert line.startswith(f"EEG {number}: ")
            reading = re.search(rf"\. (?:{'|'.join(qa.READING_LEADS)}) {noun}, ([^.]+)\. ", line)[1]
            assert reading in qa.READINGS[emotion]
            mark = re.search(
                rf" EEG {number} shows {noun} and the question is about {sought}, so it "
                r"(fits|fits, but less strongly|does not fit)\.$", line
            )[1]
            assert (mark != "does not fit") == (noun == sought)
            counted[mark] += 1
        assert lines[-1] == f"Answer: {sample['answer']}"
    assert counted["fits"] and counted["does not fit"] and counted["fits, but less strongly"]


def test_each_description_states_the_salient_measured_features_of_its_own_segment(sets, segments):
    scores = _scores(segments)
    described = 0
    for rows in sets.values():
        for sample in rows:
            texts = [c["text"] for m in sample["messages"] if m["role"] == "assistant" for c in m["content"]]
            claims = read_explanation(" ".join(texts))
            for number, segment_id in enumerate(sample["segment_ids"], start=1):
                expected = salient_claims(scores[segment_id])
                assert sorted(claims.get(number, []), key=str) == sorted(expected, key=str)
                described += bool(expected)
    assert described > 500


def test_two_segments_of_one_emotion_with_different_features_are_described_differently():
    columns = _segments("s", 2, False)
    for name in FEATURE_NAMES:
        columns[name] = [0.0] * len(columns["id"])
    first, second = columns["id"].index("s0"), columns["id"].index("s1")  # both happy
    columns["power_alpha_occipital"][first] = -2.0
    columns["power_beta_frontal"][second] = 2.0
    ied = {s["segment_ids"][0]: _final_text(s) for s in build_qa_sets(columns, columns, sizes={
        "train": 0, "stage3": 0, "test_multi": 0, "test_esr": 0})["test_ied"]}  # fmt: skip
    assert read_explanation(ied["s0"]) == {1: [Claim("power_alpha_occipital", -1)]}
    assert read_explanation(ied["s1"]) == {1: [Claim("power_beta_frontal", 1)]}
    assert "happiness" in ied["s0"] and "happiness" in ied["s1"]


def test_chain_of_thought_needs_the_measured_features():
    plain = {key: values for key, values in _segments("a", 3, False).items() if key in ("id", "emotion", "intensity")}
    with pytest.raises(ValueError, match="measured feature columns"):
        build_qa_sets(plain, plain, sizes={"train": 4, "stage3": 0, "test_multi": 0, "test_esr": 0})
    assert build_qa_sets(plain, plain, sizes={"train": 4, "stage3": 0, "test_multi": 3, "test_esr": 0}, cot=False)


def test_eim_reasoning_names_each_eegs_emotion_then_checks_the_unmatched_ones_until_one_shows_what_the_scenario_calls_for(sets, segments):
    for sample in (s for s in sets["train"] if s["task"] == "EIM"):
        emotions, lines = _emotions_of(sample, segments), _final_text(sample).split("\n")
        question = sample["messages"][1]["content"][-1]["text"]
        for number, (line, emotion) in enumerate(zip(lines[:3], emotions), start=1):
            assert line.startswith(f"EEG {number}: ") and line.endswith(f" EEG {number} shows {qa.NOUN[emotion]}.")
        pairs, left = [], [1, 2, 3]
        for letter, line in zip("ABC", lines[3:6]):
            scenario = re.search(rf"^{letter}\. (.+)$", question, re.MULTILINE)[1]
            need, checks, number = re.fullmatch(
                rf"{letter}\. {re.escape(scenario)} This calls for ([a-z ]+)\. (.+) So {letter}=EEG (\d)\.", line
            ).groups()
            expected = [
                f"EEG {n} shows {qa.NOUN[emotions[n - 1]]} and the scenario is about {need}, so it "
                f"{'fits' if n == int(number) else 'does not fit'}."
                for n in left[: left.index(int(number)) + 1]
            ]
            assert checks == (" ".join(expected) if len(left) > 1 else f"EEG {number} is the one left.")
            left.remove(int(number))
            assert qa.NOUN[emotions[int(number) - 1]] == need
            assert scenario in qa.EIM_SCENARIOS[emotions[int(number) - 1]]
            pairs.append(f"{letter}=EEG {number}")
        assert ", ".join(pairs) == sample["answer"] and lines[6] == f"Answer: {sample['answer']}"


def test_no_cot_keeps_only_the_answer_line_and_asks_for_no_explanation(segments):
    sets = build_qa_sets(*segments, sizes=SIZES, seed=3, cot=False)
    for rows in sets.values():
        for sample in rows:
            assert _final_text(sample) == f"Answer: {sample['answer']}"
            questions = [c["text"] for m in sample["messages"] if m["role"] == "user" for c in m["content"]
                         if c["type"] == "text"]  # fmt: skip
            question = questions[-1] if sample["task"] != "ESR" else " ".join(questions)
            assert question.endswith(qa.DIRECT_SUFFIX)
            assert not re.search(r"explain|describe|why", question, re.IGNORECASE), question


def test_esr_scenarios_never_appear_in_training_text(segments):
    sets = build_qa_sets(*segments, sizes={**SIZES, "train": 700}, seed=0)
    training_text = " ".join(
        item["text"]
        for sample in sets["train"] + sets["stage3"]
        for message in sample["messages"]
        for item in message["content"]
        if item["type"] == "text"
    )
    scenarios = [text for bank in qa.ESR_SCENARIOS.values() for text, _ in bank]
    assert not any(text in training_text for text in scenarios)
    esr_text = " ".join(s["messages"][3]["content"][0]["text"] for s in sets["test_esr"])
    assert any(text in esr_text for text in scenarios)


def test_esr_second_turn_is_text_only_and_answer_names_the_scenario_emotion(sets, segments):
    emotion_of = dict(zip(segments[1]["id"], segments[1]["emotion"]))
    for sample in sets["test_esr"]:
        assert [c["type"] for c in sample["messages"][3]["content"]] == ["text"]
        scenario = sample["messages"][3]["content"][0]["text"]
        target = emotion_of[sample["segment_ids"][int(sample["answer"][-1]) - 1]]
        assert any(text in scenario for text, _ in qa.ESR_SCENARIOS[target])


def test_several_question_paraphrases_are_used_per_task(segments):
    sets = build_qa_sets(*segments, sizes={**SIZES, "train": 400}, seed=0)
    for task, templates in (("IED", qa.IED_QUESTIONS), ("EIM", qa.EIM_QUESTIONS)):
        questions = {
            s["messages"][1]["content"][-1]["text"].strip() for s in sets["train"] if s["task"] == task
        }
        used = {t for t in templates if any(q.startswith(t.split("{")[0].strip()) for q in questions)}
        assert len(used) == len(templates), task


def test_same_seed_gives_the_same_sets_and_another_seed_differs(segments, sets):
    assert build_qa_sets(*segments, sizes=SIZES, seed=3) == sets
    assert build_qa_sets(*segments, sizes=SIZES, seed=4)["train"] != sets["train"]


def test_a_split_with_fewer_than_three_emotions_is_refused():
    few = {"id": ["a", "b"], "emotion": ["happy", "sad"], "intensity": [None, None]}
    with pytest.raises(ValueError, match="at least 3"):
        build_qa_sets(few, _segments("t", 1, False), sizes=SIZES)


@pytest.mark.parametrize("task", TASKS)
def test_parse_answer_round_trips_every_canonical_answer(task):
    for answer in qa.all_canonical_answers(task):
        assert parse_answer(task, f"Some reasoning.\nAnswer: {answer}") == answer


@pytest.mark.parametrize(
    ("task", "text", "expected"),
    [
        ("IED", "Answer: Sadness.", "sad"),
        ("IED", "answer: the person is ANGRY", "anger"),
        ("EPC", "Answer: equally", "equal"),
        ("EPC", "Answer: Less.", "less"),
        ("ESS", "answer: eeg 2", "EEG 2"),
        ("ESR", "Answer: 3", "EEG 3"),
        ("EIM", "Answer: A is EEG 3, B: EEG 1, C=EEG 2", "A=EEG 3, B=EEG 1, C=EEG 2"),
        ("IED", "Answer: happy\nwait, Answer: fear", "fear"),
    ],
)
def test_parse_answer_normalises_loose_spellings(task, text, expected):
    assert parse_answer(task, text) == expected


@pytest.mark.parametrize(
    ("task", "text"),
    [
        ("IED", "The EEG looks sad."),
        ("IED", "Answer: unclear"),
        ("EPC", "Answer: maybe"),
        ("ESS", "Answer: EEG 4"),
        ("EIM", "Answer: A=EEG 1, B=EEG 1, C=EEG 2"),
        ("EIM", "Answer: A=EEG 1, B=EEG 2"),
    ],
)
def test_parse_answer_returns_none_when_unreadable(task, text):
    assert parse_answer(task, text) is None


def test_parse_answer_rejects_an_unknown_task():
    with pytest.raises(ValueError, match="unknown task 'XYZ'"):
        parse_answer("XYZ", "Answer: happy")


def test_qa_rows_fit_the_declared_features(sets):
    from datasets import Dataset

    table = Dataset.from_list(sets["test_esr"], features=qa.qa_features())
    assert table[0]["messages"][1]["content"][1] == {"type": "eeg", "text": None}
    assert table[0]["answer"] == sets["test_esr"][0]["answer"]
