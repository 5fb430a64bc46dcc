"""The five QA tasks: counts, balance, disjointness, determinism and the answer parser."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from train.data import qa
from train.data.qa import EMOTIONS, TASKS, build_qa_sets, parse_answer

SIZES = {"train": 280, "stage3": 56, "test_multi": 60, "test_esr": 21}


def _segments(prefix: str, per_emotion: int, with_intensity: bool, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    emotions = [e for e in EMOTIONS for _ in range(per_emotion)]
    intensity = rng.uniform(0, 1, len(emotions)).tolist() if with_intensity else [None] * len(emotions)
    return {"id": [f"{prefix}{i}" for i in range(len(emotions))], "emotion": emotions, "intensity": intensity}


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


def test_ess_answer_points_at_the_only_or_strongest_eeg_of_the_asked_emotion(segments):
    pool_emotion = dict(zip(segments[0]["id"], segments[0]["emotion"]))
    intensity = dict(zip(segments[0]["id"], segments[0]["intensity"]))
    sets = build_qa_sets(*segments, sizes={"train": 400, "stage3": 0, "test_multi": 0, "test_esr": 0}, seed=1)
    for sample in (s for s in sets["train"] if s["task"] == "ESS"):
        question = sample["messages"][1]["content"][-1]["text"]
        asked = next(e for e in EMOTIONS if qa.SUPERLATIVE[e] in question or qa.NOUN[e] in question)
        chosen = sample["segment_ids"][int(sample["answer"][-1]) - 1]
        assert pool_emotion[chosen] == asked
        for other in sample["segment_ids"]:
            if other != chosen and pool_emotion[other] == asked:
                assert intensity[chosen] > intensity[other]


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


def test_chain_of_thought_names_and_checks_each_eeg(sets, segments):
    counted = Counter()
    for sample in sets["train"]:
        if sample["task"] not in ("EPC", "ESS"):
            continue
        emotions, lines = _emotions_of(sample, segments), _final_text(sample).split("\n")
        sought = re.fullmatch(r"The question is about ([a-z ]+)\.", lines[0])[1]
        checks = lines[1 : 1 + len(emotions)]
        for number, (emotion, line) in enumerate(zip(emotions, checks), start=1):
            assert line.startswith(f"EEG {number} shows {qa.NOUN[emotion]}: ")
            noun = qa.NOUN[emotion]
            mark = re.search(rf"\. Seen {noun}, asked {sought}: EEG {number} (fits|fits less|does not fit)\.$", line)[1]
            assert (mark != "does not fit") == (noun == sought)
            counted[mark] += 1
        assert lines[-1] == f"Answer: {sample['answer']}"
        if sample["task"] == "ESS":
            fitting = [n for n, line in enumerate(checks, start=1) if line.endswith(" fits.")]
            assert [f"EEG {n}" for n in fitting] == [sample["answer"]]
    assert counted["fits"] and counted["does not fit"] and counted["fits less"]


def test_eim_reasoning_checks_the_eegs_in_turn_until_one_shows_what_the_scenario_calls_for(sets, segments):
    for sample in (s for s in sets["train"] if s["task"] == "EIM"):
        emotions, lines = _emotions_of(sample, segments), _final_text(sample).split("\n")
        question = sample["messages"][1]["content"][-1]["text"]
        pairs = []
        for letter, line in zip("ABC", lines[3:6]):
            scenario = re.search(rf"^{letter}\. (.+)$", question, re.MULTILINE)[1]
            need, checks, number = re.fullmatch(
                rf"{letter}\. {re.escape(scenario)} This calls for ([a-z ]+)\. (.+) So {letter}=EEG (\d)\.", line
            ).groups()
            expected = [
                f"EEG {n}: seen {qa.NOUN[e]}, asked {need}: {'yes' if n == int(number) else 'no'}."
                for n, e in enumerate(emotions[: int(number)], start=1)
            ]
            assert checks == " ".join(expected)
            assert qa.NOUN[emotions[int(number) - 1]] == need
            assert scenario in qa.EIM_SCENARIOS[emotions[int(number) - 1]]
            pairs.append(f"{letter}=EEG {number}")
        assert ", ".join(pairs) == sample["answer"] and lines[6] == f"Answer: {sample['answer']}"


def test_no_cot_keeps_only_the_answer_line(segments):
    sets = build_qa_sets(*segments, sizes=SIZES, seed=3, cot=False)
    for rows in sets.values():
        for sample in rows:
            assert _final_text(sample) == f"Answer: {sample['answer']}"


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
