"""The five chain-of-thought tasks of E2LLM and their question-answer sets.

Every sample is a chat (``messages``) whose user turn holds the EEG as ``{"type": "eeg"}``
items, one per 10 s segment, in the order of ``segment_ids``; the assistant turn first
describes each EEG, then concludes, and ends with a final line ``Answer: <canonical answer>``
that :func:`parse_answer` reads back. ``--no-cot`` keeps only that final line, and its
questions ask for the answer alone. Stored in a ``datasets`` table, an EEG item reads back as
``{"type": "eeg", "text": None}``.

The chain of thought is grounded in the EEG. Each EEG's description states its most salient
measured features (:mod:`train.data.features`: band power by scalp region and frontal alpha
asymmetry, z-scored against the person's own session), chosen and worded by
:mod:`train.data.claims` from that segment's own values, never from its label; two segments of
one emotion with different features are described differently. An emotional reading in the
paper's style follows ("This suggests sadness, a state often associated with feelings of loss
or disappointment."), then the comparison the task needs and the ``Answer:`` line::

    EEG 2: alpha is reduced over the occipital sites and there is more beta over both temporal
    regions; frontal alpha is higher on the right. This suggests sadness, a low, withdrawn mood.
    EEG 2 shows sadness and the question is about sadness, so it fits.

Each check writes the EEG's emotion and the one asked about side by side right before its
verdict, so the verdict compares neighbours rather than words a sentence apart (what a small
language model learns from a few thousand examples; README, Measured). EIM describes the
three EEGs first, each description closing with what it shows (``EEG 2 shows sadness.``), then
repeats each scenario, names the emotion it calls for and checks the EEGs not yet matched in
turn until one shows it, quoting those closing words in the words of the other tasks' checks
(``A. <scenario> This calls for sadness. EEG 1 shows fear and the scenario is about sadness, so it
does not fit. EEG 2 shows sadness and the scenario is about sadness, so it fits. So A=EEG 2.``):
the emotion a check needs follows the same words earlier in the answer, rather than a
description's end a paragraph away. The matching is one to one, so the last scenario takes
the EEG that is left (``C. <scenario> This calls for anger. EEG 3 is the one left. So C=EEG 3.``).

Tasks and their canonical answer strings (the ``answer`` column, and what
``parse_answer(task, generated_text)`` returns):

========  ================================================  ====================================
task      question                                          canonical answers
========  ================================================  ====================================
``IED``   which emotion does one EEG show                   ``happy`` ``surprise`` ``neutral``
                                                            ``disgust`` ``fear`` ``sad`` ``anger``
``EPC``   is the person of EEG 1 more, less or equally       ``more`` ``less`` ``equal``
          <emotion> than EEG 2 (random 33.33 %)
``ESS``   which of three EEGs shows an emotion most          ``EEG 1`` ``EEG 2`` ``EEG 3``
          strongly, or most weakly (random 33.33 %)
``EIM``   match three everyday scenarios A, B, C to three   ``A=EEG i, B=EEG j, C=EEG k`` with
          EEGs (six orders, random 16.67 %)                 (i, j, k) a permutation of 1, 2, 3
``ESR``   two turns: describe three EEGs, then pick the     ``EEG 1`` ``EEG 2`` ``EEG 3``
          one that fits a nuanced scenario (33.33 %)
========  ================================================  ====================================

EPC outcomes: "more" when only EEG 1 shows the asked emotion, or both do and EEG 1 more
intensely (where intensity is known); "less" the mirror image; "equal" when both EEGs show
the same emotion at comparable (or unknown) intensity. ESS asks, as the paper's ESS does, for
the EEG that shows an emotion most strongly or most weakly; the paper gives no proportion, so
half of the ESS samples ask for each (alternating, :data:`ESS_FORMS`). Strongest: the chosen
EEG alone shows the emotion, or (intensity known) shows it more intensely than the other one
that does. Weakest: the chosen EEG alone does not show the emotion (the other two do), or
(intensity known) all three show it and the chosen one clearly least intensely. ESR scenarios
come from a bank used by no other task, and ESR is never part of the training sets.

Sets (:func:`build_qa_sets`): ``train`` (IED/EPC/ESS/EIM in equal shares, the target emotion
cycling through the seven so emotions are balanced), ``stage3`` (the same mix, drawn
independently), ``test_ied`` (one IED sample per test segment), ``test_multi`` (EPC/ESS/EIM
in equal shares), ``test_esr``. Train sets draw only train segments, test sets only test
segments. Everything is deterministic for a seed.
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np

from train.data.claims import describe_claims, salient_claims
from train.data.features import FEATURE_NAMES

EMOTIONS = ("happy", "surprise", "neutral", "disgust", "fear", "sad", "anger")
TASKS = ("IED", "EPC", "ESS", "EIM", "ESR")
TRAIN_TASKS = ("IED", "EPC", "ESS", "EIM")
MULTI_TASKS = ("EPC", "ESS", "EIM")
EPC_ANSWERS = ("more", "less", "equal")
ESS_FORMS = ("strongest", "weakest")

SYSTEM_PROMPT = "You read EEG recordings and explain the emotions they show."

# Two intensities closer than this fraction of the observed intensity range count as equal.
INTENSITY_MARGIN = 0.15

NOUN = {
    "happy": "happiness", "surprise": "surprise", "neutral": "calm neutrality", "disgust": "disgust",
    "fear": "fear", "sad": "sadness", "anger": "anger",
}  # fmt: skip
ADJECTIVE = {
    "happy": "happy", "surprise": "surprised", "neutral": "neutral", "disgust": "disgusted",
    "fear": "fearful", "sad": "sad", "anger": "angry",
}  # fmt: skip
SUPERLATIVE = {
    "happy": "happiest", "surprise": "most surprised", "neutral": "most neutral", "disgust": "most disgusted",
    "fear": "most fearful", "sad": "saddest", "anger": "angriest",
}  # fmt: skip

LEAST = {
    "happy": "least happy", "surprise": "least surprised", "neutral": "least neutral", "disgust": "least disgusted",
    "fear": "least fearful", "sad": "least sad", "anger": "least angry",
}  # fmt: skip

# The emotional reading of each EEG, in the paper's style ("a state of depression, often
# associated with feelings of loss or disappointment"): what the emotion means for the person.
READINGS = {
    "happy": ("a state often associated with pleasure and warm engagement", "a pleasant, upbeat mood"),
    "surprise": ("a state of sudden orienting towards something unexpected", "a state of startled, alert attention"),
    "neutral": ("a calm state with little emotional engagement", "a relaxed, even mood"),
    "disgust": ("a state often associated with rejecting something offensive", "an aversive, recoiling mood"),
    "fear": ("a state often associated with a sense of threat and tense vigilance", "an anxious, wary mood"),
    "sad": ("a state often associated with feelings of loss or disappointment", "a low, withdrawn mood"),
    "anger": ("a state often associated with a sense of unfairness and a wish to confront", "a heated, hostile mood"),
}
READING_LEADS = ("This suggests", "The signals indicate", "This reads as")

IED_QUESTIONS = (
    "What emotion does this EEG show?",
    "Which emotion is the person feeling during this EEG recording?",
    "Describe the emotion of this EEG.",
    "Is this person happy, surprised, neutral, disgusted, fearful, sad or angry? Explain from the EEG.",
    "Read this EEG and tell me which emotion it reflects.",
)
EPC_QUESTIONS = (
    "Is the person in EEG 1 more, less or equally {adjective} compared with the person in EEG 2?",
    "Compared with EEG 2, does EEG 1 show more, less or the same {noun}?",
    "Relative to the second person, is the first person more {adjective}, less {adjective}, or equally {adjective}?",
    "Judge the {noun} in both EEGs: is EEG 1 more, less or equally {adjective} than EEG 2?",
)
ESS_QUESTIONS = {
    "strongest": (
        "Which of these three EEGs shows the {superlative} person?",
        "Which EEG shows the most {noun}?",
        "Among EEG 1, EEG 2 and EEG 3, which person is the {superlative}?",
        "Pick the EEG of the {superlative} of these three people.",
    ),
    "weakest": (
        "Which of these three EEGs shows the {least} person?",
        "Which EEG shows the least {noun}?",
        "Among EEG 1, EEG 2 and EEG 3, which person is the {least}?",
        "Pick the EEG of the {least} of these three people.",
    ),
}
EIM_QUESTIONS = (
    "Match each scenario to the EEG of the person living it:",
    "Three people were in these situations. Which EEG belongs to which situation?",
    "Assign each everyday scenario to one of the three EEGs:",
)
ESR_FIRST_QUESTIONS = (
    "Describe the emotional state each of these EEGs shows.",
    "What state of mind does each of these three EEGs suggest?",
)
ESR_SECOND_QUESTIONS = (
    "{scenario} Which of the three people is most likely in this situation? Explain why.",
    "Consider this situation: {scenario} Whose EEG fits it best, and why?",
)
# Without chain of thought (`cot=False`, the paper's ablation) no question asks for a
# description or reasons: these replace the ones that do, and every question ends with
# DIRECT_SUFFIX.
IED_DIRECT_QUESTIONS = (
    "What emotion does this EEG show?",
    "Which emotion is the person feeling during this EEG recording?",
    "Is this person happy, surprised, neutral, disgusted, fearful, sad or angry?",
    "Read this EEG and tell me which emotion it reflects.",
)
ESR_DIRECT_FIRST_QUESTIONS = ("Which emotion does each of these EEGs show?",)
ESR_DIRECT_SECOND_QUESTIONS = (
    "{scenario} Which of the three people is most likely in this situation?",
    "Consider this situation: {scenario} Whose EEG fits it best?",
)
DIRECT_SUFFIX = " Give only the answer."

# Everyday situations for EIM (training and testing).
EIM_SCENARIOS = {
    "happy": (
        "Opening a birthday present from a close friend.",
        "Hearing that a job application was accepted.",
        "Laughing with family over dinner.",
        "Scoring the winning goal in a weekend match.",
    ),
    "surprise": (
        "Finding an unexpected letter from an old classmate.",
        "A balloon bursting right behind them.",
        "Walking into a room and meeting a surprise party.",
        "Seeing snow fall in the middle of summer.",
    ),
    "neutral": (
        "Waiting for the kettle to boil.",
        "Reading a bus timetable.",
        "Sorting socks after laundry.",
        "Listening to a weather report for another city.",
    ),
    "disgust": (
        "Smelling milk that went sour a week ago.",
        "Finding a hair in their soup.",
        "Stepping barefoot on something slimy.",
        "Cleaning a blocked kitchen drain.",
    ),
    "fear": (
        "Hearing footsteps behind them on a dark street.",
        "Feeling the plane drop in heavy turbulence.",
        "Losing sight of their child in a crowd.",
        "A large dog running at them, barking.",
    ),
    "sad": (
        "Saying goodbye to a friend moving abroad.",
        "Looking at photos of a pet that died.",
        "Learning that a favourite shop has closed for good.",
        "Spending a holiday alone, far from home.",
    ),
    "anger": (
        "Someone cutting in front of them after a long queue.",
        "Being blamed for a colleague's mistake.",
        "A neighbour playing loud music at 3 a.m. again.",
        "Finding their bike vandalised.",
    ),
}

# Nuanced situations for ESR only, each with the reason it calls for its emotion.
ESR_SCENARIOS = {
    "happy": (
        ("After months of rehearsal, a shy student hears the audience rise in applause.",
         "hard-won recognition brings warm, outgoing joy"),
        ("A grandmother video-calls and sees her newborn grandchild for the first time.",
         "a longed-for connection brings tender delight"),
        ("A volunteer learns that the library they helped rebuild reopens today.",
         "seeing effort pay off brings buoyant satisfaction"),
    ),
    "surprise": (
        ("A commuter opens an ordinary-looking envelope and finds a refund they had forgotten.",
         "an unexpected turn triggers sudden orienting before any judgement"),
        ("Mid-lecture, the projector switches to a live feed of the speaker's twin.",
         "a violated expectation grabs attention at once"),
        ("A hiker turns a bend and meets a deer standing a metre away.",
         "an abrupt, unforeseen event jolts alertness"),
    ),
    "neutral": (
        ("An archivist spends the afternoon re-labelling folders with new catalogue numbers.",
         "routine work leaves the mind calm and unengaged"),
        ("A passenger watches identical fields pass by on a long train ride.",
         "unchanging input keeps arousal low and affect flat"),
        ("A clerk checks that forty invoices carry the right date.",
         "a repetitive task holds attention without feeling"),
    ),
    "disgust": (
        ("A chef discovers that a supplier relabelled spoiled meat as fresh.",
         "contamination and moral taint provoke rejection"),
        ("A visitor learns that the charming host mistreats his animals.",
         "a repugnant revelation makes them want to withdraw"),
        ("A tenant opens a cupboard and finds it full of mould and droppings.",
         "physical contamination calls for avoidance"),
    ),
    "fear": (
        ("A diver notices the air gauge far lower than expected, still deep underwater.",
         "an imminent threat with uncertain escape drives tense vigilance"),
        ("At night, a home-owner hears the back door handle being tried slowly.",
         "possible danger close by drives anxious withdrawal"),
        ("A patient waits alone for the results of an urgent scan.",
         "uncertain threat to oneself breeds apprehension"),
    ),
    "sad": (
        ("An old man folds his late wife's cardigan and puts it back in the drawer.",
         "quiet loss weighs the mood down"),
        ("A teenager learns that their best friend's family is moving across the world.",
         "an unavoidable separation brings low, withdrawn grief"),
        ("A gardener finds that frost killed the tree they planted with their father.",
         "losing a cherished bond leaves a subdued sorrow"),
    ),
    "anger": (
        ("A nurse finds that her carefully written report was presented by a colleague as his own.",
         "an unjust offence pushes towards confrontation"),
        ("A cyclist is nearly run off the road by a driver who then honks at them.",
         "a provocation invites approach and retaliation"),
        ("A tenant is told, for the third time, that the broken heating is their own fault.",
         "repeated unfair blame builds heated frustration"),
    ),
}

_ANSWER_LINE = re.compile(r"answer\s*[:：]\s*(.+)", re.IGNORECASE)
_EMOTION_WORDS = {
    **{e: e for e in EMOTIONS},
    "happiness": "happy", "joy": "happy", "surprised": "surprise", "calm": "neutral",
    "disgusted": "disgust", "fearful": "fear", "afraid": "fear", "sadness": "sad",
    "angry": "anger",
}  # fmt: skip
_EIM_PAIR = re.compile(r"\b([ABC])\s*(?:=|:|-|->|is)?\s*EEG\s*([123])\b", re.IGNORECASE)


def parse_answer(task: str, text: str) -> str | None:
    """The canonical answer in a generated reply, or None when it cannot be read.

    Reads the last ``Answer: ...`` line of ``text`` and normalises it for ``task`` (one of
    :data:`TASKS`) to the strings the module docstring lists, e.g. ``"Answer: Sadness."`` ->
    ``"sad"``, ``"Answer: eeg 2"`` -> ``"EEG 2"``.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    matches = _ANSWER_LINE.findall(text or "")
    if not matches:
        return None
    answer = matches[-1].strip()
    if task == "IED":
        for word in re.findall(r"[a-z]+", answer.lower()):
            if word in _EMOTION_WORDS:
                return _EMOTION_WORDS[word]
        return None
    if task == "EPC":
        for word in re.findall(r"[a-z]+", answer.lower()):
            if word in ("more", "less"):
                return word
            if word in ("equal", "equally", "same"):
                return "equal"
        return None
    if task in ("ESS", "ESR"):
        match = re.search(r"(?:EEG\s*)?\b([123])\b", answer, re.IGNORECASE)
        return f"EEG {match[1]}" if match else None
    pairs = dict((letter.upper(), digit) for letter, digit in _EIM_PAIR.findall(answer))
    if set(pairs) != {"A", "B", "C"} or len(set(pairs.values())) != 3:
        return None
    return eim_answer([int(pairs[letter]) for letter in "ABC"])


def eim_answer(eeg_numbers: list[int]) -> str:
    """The canonical EIM answer for the EEG numbers (1-based) matched to scenarios A, B, C."""
    return ", ".join(f"{letter}=EEG {number}" for letter, number in zip("ABC", eeg_numbers))


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


def _eeg_turn(count: int, question: str) -> dict:
    if count == 1:
        return {"role": "user", "content": [{"type": "eeg"}, _text("\n" + question)]}
    content = []
    for number in range(1, count + 1):
        content += [_text(f"EEG {number}: " if number == 1 else f"\nEEG {number}: "), {"type": "eeg"}]
    content.append(_text("\n" + question))
    return {"role": "user", "content": content}


def _reply(text: str) -> dict:
    return {"role": "assistant", "content": [_text(text)]}


class _Pool:
    """Segments of one split grouped by emotion, with their intensities and measured features."""

    def __init__(self, ids, emotions, intensities):
        self.ids = list(ids)
        self.emotions = list(emotions)
        self.scores: list[dict[str, float]] | None = None  # per segment, for the chain of thought
        self.intensity = np.array([np.nan if v is None else v for v in intensities], dtype=np.float64)
        self.by_emotion = {e: np.flatnonzero(np.array(self.emotions) == e) for e in EMOTIONS}
        self.available = tuple(e for e in EMOTIONS if len(self.by_emotion[e]))
        known = self.intensity[np.isfinite(self.intensity)]
        span = float(known.max() - known.min()) if len(known) else 0.0
        self.margin = INTENSITY_MARGIN * span if span > 0 else None

    def draw(self, rng, emotion):
        return int(rng.choice(self.by_emotion[emotion]))

    def draw_other(self, rng, excluded):
        return self.draw(rng, str(rng.choice([e for e in self.available if e not in excluded])))

    def stronger(self, first, second):
        """+1, -1 or 0: which segment shows its (shared) emotion more intensely, if known."""
        if self.margin is None or not np.isfinite(self.intensity[[first, second]]).all():
            return 0
        gap = self.intensity[first] - self.intensity[second]
        return 0 if abs(gap) < self.margin else int(np.sign(gap))


def _check(number: int, seen: str, what: str, asked: str, mark: str) -> str:
    """One check of an EEG against the emotion a question or scenario (`what`) is about, the two
    emotions side by side before the verdict (`mark`: fits, does not fit, ...)."""
    return f"EEG {number} shows {NOUN[seen]} and the {what} is about {NOUN[asked]}, so it {mark}."


class _Writer:
    """Renders samples of the five tasks; ``cot=False`` keeps only the answer line."""

    def __init__(self, pool: _Pool, rng, cot: bool):
        self.pool, self.rng, self.cot = pool, rng, cot

    def _question(self, templates, direct=None, after: str = "", **fields) -> str:
        """A question drawn from ``templates`` (``direct`` without chain of thought), filled with
        ``fields``, followed by ``after``; without chain of thought it asks for the answer alone."""
        text = str(self.rng.choice(templates if self.cot else direct or templates)).format(**fields) + after
        return text if self.cot else text + DIRECT_SUFFIX

    def _describe(self, indices) -> list[str]:
        """One description per EEG: its salient measured features, then the emotional reading."""
        if not self.cot:  # the answer keeps only its final line; no features are needed
            return [""] * len(indices)
        sentences = []
        for number, index in enumerate(indices, start=1):
            emotion = self.pool.emotions[index]
            features = describe_claims(salient_claims(self.pool.scores[index]), self.rng)
            label = "The EEG" if len(indices) == 1 else f"EEG {number}"
            lead, reading = self.rng.choice(READING_LEADS), self.rng.choice(READINGS[emotion])
            sentences.append(f"{label}: {features}. {lead} {NOUN[emotion]}, {reading}.")
        return sentences

    def _answer(self, reasoning: list[str], answer: str) -> str:
        return "\n".join([*reasoning, f"Answer: {answer}"]) if self.cot else f"Answer: {answer}"

    def _sample(self, task, turns, indices, answer):
        messages = [{"role": "system", "content": [_text(SYSTEM_PROMPT)]}, *turns]
        segment_ids = [self.pool.ids[i] for i in indices]
        return {"task": task, "messages": messages, "segment_ids": segment_ids, "answer": answer}

    def ied(self, index):
        emotion = self.pool.emotions[index]
        turns = [_eeg_turn(1, self._question(IED_QUESTIONS, IED_DIRECT_QUESTIONS)),
                 _reply(self._answer(self._describe([index]), emotion))]  # fmt: skip
        return self._sample("IED", turns, [index], emotion)

    def _epc_pair(self, emotion, outcome):
        pool, rng = self.pool, self.rng
        for _ in range(100):
            if outcome == "equal":
                shared = str(rng.choice(pool.available))
                first, second = pool.draw(rng, shared), pool.draw(rng, shared)
                if pool.stronger(first, second) == 0:
                    return first, second
                continue
            high = pool.draw(rng, emotion)
            if pool.margin and rng.random() < 0.25:
                low = pool.draw(rng, emotion)
                if pool.stronger(high, low) == 0:
                    continue
                if pool.stronger(high, low) < 0:
                    high, low = low, high
            else:
                low = pool.draw_other(rng, {emotion})
            return (high, low) if outcome == "more" else (low, high)
        raise ValueError(f"cannot draw an EPC '{outcome}' pair for {emotion!r} from this split")

    def _checked(self, indices, emotion, weaker=()) -> list[str]:
        """Each EEG's description followed by its check against ``emotion`` (those in ``weaker`` fit less)."""
        checks = []
        for number, (index, sentence) in enumerate(zip(indices, self._describe(indices)), start=1):
            seen = self.pool.emotions[index]
            if index in weaker:
                mark = "fits, but less strongly"
            else:
                mark = "fits" if seen == emotion else "does not fit"
            checks.append(f"{sentence} {_check(number, seen, 'question', emotion, mark)}")
        return checks

    def epc(self, emotion, outcome):
        first, second = self._epc_pair(emotion, outcome)
        emotions = self.pool.emotions
        weaker = ()
        if emotions[first] == emotion and emotions[second] == emotion:
            if outcome == "equal":
                verdict = f"Both fit to a similar degree, so the two are equally {ADJECTIVE[emotion]}."
            else:
                weaker = (second if outcome == "more" else first,)
                verdict = f"EEG {1 if outcome == 'more' else 2} fits more, so EEG 1 is {outcome} {ADJECTIVE[emotion]}."
        elif outcome == "equal":
            verdict = f"Neither fits, so neither is more {ADJECTIVE[emotion]}."
        else:
            verdict = f"Only EEG {1 if outcome == 'more' else 2} fits, so EEG 1 is {outcome} {ADJECTIVE[emotion]}."
        question = self._question(EPC_QUESTIONS, adjective=ADJECTIVE[emotion], noun=NOUN[emotion])
        checks = self._checked([first, second], emotion, weaker)
        reasoning = [f"The question is about {NOUN[emotion]}.", *checks, verdict]
        turns = [_eeg_turn(2, question), _reply(self._answer(reasoning, outcome))]
        return self._sample("EPC", turns, [first, second], outcome)

    def _ess_weakest(self, emotion):
        """(chosen, others, weaker): all three show ``emotion``, the chosen one clearly least
        intensely (when intensities allow), else the chosen one alone does not show it."""
        pool, rng = self.pool, self.rng
        if pool.margin and rng.random() < 0.25:
            chosen, first, second = (pool.draw(rng, emotion) for _ in range(3))
            if pool.stronger(first, chosen) > 0 and pool.stronger(second, chosen) > 0:
                return chosen, [first, second], (chosen,)
        return pool.draw_other(rng, {emotion}), [pool.draw(rng, emotion), pool.draw(rng, emotion)], ()

    def _ess_strongest(self, emotion):
        """(chosen, others, weaker): the chosen EEG alone shows ``emotion``, or (intensities known)
        more intensely than the one other EEG that shows it."""
        pool, rng = self.pool, self.rng
        chosen = pool.draw(rng, emotion)
        others, weaker = [], ()
        if pool.margin and rng.random() < 0.25:
            rival = pool.draw(rng, emotion)
            if pool.stronger(chosen, rival) != 0:
                chosen, rival = (chosen, rival) if pool.stronger(chosen, rival) > 0 else (rival, chosen)
                others.append(rival)
                weaker = (rival,)
        while len(others) < 2:
            others.append(pool.draw_other(rng, {emotion}))
        return chosen, others, weaker

    def ess(self, emotion, form: str = "strongest"):
        if form not in ESS_FORMS:
            raise ValueError(f"ESS form must be one of {ESS_FORMS}, got {form!r}")
        rng = self.rng
        chosen, others, weaker = (self._ess_strongest if form == "strongest" else self._ess_weakest)(emotion)
        position = int(rng.integers(3))
        indices = others[:position] + [chosen] + others[position:]
        question = self._question(ESS_QUESTIONS[form], superlative=SUPERLATIVE[emotion], least=LEAST[emotion],
                                  noun=NOUN[emotion])  # fmt: skip
        answer = f"EEG {position + 1}"
        if form == "strongest":
            reason = "alone fits" if not weaker else "fits most strongly"
            verdict = f"{answer} {reason}, so it shows the most {NOUN[emotion]}."
        else:
            reason = "alone does not fit" if not weaker else "fits least strongly"
            verdict = f"{answer} {reason}, so it shows the least {NOUN[emotion]}."
        reasoning = [f"The question is about {NOUN[emotion]}.", *self._checked(indices, emotion, weaker), verdict]
        turns = [_eeg_turn(3, question), _reply(self._answer(reasoning, answer))]
        return self._sample("ESS", turns, indices, answer)

    def _three_emotions(self, emotion):
        rest = [e for e in self.pool.available if e != emotion]
        return [emotion, *self.rng.choice(rest, size=2, replace=False).tolist()]

    def eim(self, emotion):
        pool, rng = self.pool, self.rng
        emotions = self._three_emotions(emotion)
        rng.shuffle(emotions)
        indices = [pool.draw(rng, e) for e in emotions]
        order = list(rng.permutation(3))
        scenarios = [rng.choice(EIM_SCENARIOS[emotions[i]]) for i in order]
        numbers = [int(i) + 1 for i in order]
        question = self._question(EIM_QUESTIONS, after="".join(f"\n{l}. {s}" for l, s in zip("ABC", scenarios)))
        # One person per scenario: each scenario checks only the EEGs not yet matched, in turn, and the
        # last scenario takes the EEG that is left.
        matches, left = [], [0, 1, 2]
        for letter, i, scenario in zip("ABC", order, scenarios):
            need = NOUN[emotions[i]]
            if len(left) == 1:
                checked = f"EEG {i + 1} is the one left."
            else:
                checked = " ".join(
                    _check(n + 1, emotions[n], "scenario", emotions[i], "fits" if n == i else "does not fit")
                    for n in left[: left.index(i) + 1]
                )
            left.remove(i)
            matches.append(f"{letter}. {scenario} This calls for {need}. {checked} So {letter}=EEG {i + 1}.")
        answer = eim_answer(numbers)
        # Each description ends by naming what its EEG shows, in the words the checks quote later.
        described = [
            f"{sentence} EEG {n} shows {NOUN[e]}." if self.cot else sentence
            for n, (sentence, e) in enumerate(zip(self._describe(indices), emotions), start=1)
        ]
        turns = [_eeg_turn(3, question), _reply(self._answer([*described, *matches], answer))]
        return self._sample("EIM", turns, indices, answer)

    def esr(self, emotion):
        pool, rng = self.pool, self.rng
        emotions = self._three_emotions(emotion)
        rng.shuffle(emotions)
        indices = [pool.draw(rng, e) for e in emotions]
        target = emotions.index(emotion) + 1
        scenario, reason = ESR_SCENARIOS[emotion][int(rng.integers(len(ESR_SCENARIOS[emotion])))]
        first_reply = " ".join(self._describe(indices)) if self.cot else " ".join(
            f"EEG {n}: {ADJECTIVE[e]}." for n, e in enumerate(emotions, start=1)
        )
        answer = f"EEG {target}"
        verdict = [f"The situation calls for {NOUN[emotion]} ({reason}), which EEG {target} shows."]
        first = self._question(ESR_FIRST_QUESTIONS, ESR_DIRECT_FIRST_QUESTIONS)
        second = self._question(ESR_SECOND_QUESTIONS, ESR_DIRECT_SECOND_QUESTIONS, scenario=scenario)
        turns = [
            _eeg_turn(3, first),
            _reply(first_reply),
            {"role": "user", "content": [_text(second)]},
            _reply(self._answer(verdict, answer)),
        ]
        return self._sample("ESR", turns, indices, answer)


def _mixed(writer: _Writer, count: int, tasks: tuple[str, ...], rng) -> list[dict]:
    """``count`` samples in equal task shares, target emotions cycling over the available ones."""
    pool = writer.pool
    samples = []
    for number in range(count):
        task, turn = tasks[number % len(tasks)], number // len(tasks)
        emotion = pool.available[turn % len(pool.available)]
        if task == "IED":
            samples.append(writer.ied(pool.draw(rng, emotion)))
        elif task == "EPC":
            samples.append(writer.epc(emotion, EPC_ANSWERS[(turn // len(pool.available)) % 3]))
        elif task == "ESS":
            samples.append(writer.ess(emotion, ESS_FORMS[(turn // len(pool.available)) % len(ESS_FORMS)]))
        elif task == "EIM":
            samples.append(writer.eim(emotion))
        else:
            samples.append(writer.esr(emotion))
    order = rng.permutation(len(samples))
    return [samples[i] for i in order]


def build_qa_sets(
    train_segments: dict,
    test_segments: dict,
    *,
    sizes: dict[str, int] | None = None,
    cot: bool = True,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """Build the QA sets from segment metadata.

    ``train_segments`` and ``test_segments`` are column mappings with ``id``, ``emotion``,
    ``intensity`` (None where unknown) and, for the chain of thought, the measured feature
    columns of :data:`train.data.features.FEATURE_NAMES` (z-scores). ``sizes`` overrides the paper's ``train`` 10,000,
    ``stage3`` 3,000, ``test_multi`` 500 and ``test_esr`` 167 (``test_ied`` is always one
    per test segment). Returns ``{split: [row, ...]}`` with rows ``id``, ``task``,
    ``messages``, ``segment_ids``, ``answer``.
    """
    sizes = {"train": 10_000, "stage3": 3_000, "test_multi": 500, "test_esr": 167, **(sizes or {})}
    pools = {}
    for name, columns in (("train", train_segments), ("test", test_segments)):
        pool = _Pool(columns["id"], columns["emotion"], columns["intensity"])
        if len(pool.available) < 3:
            raise ValueError(
                f"the {name} split has segments of {len(pool.available)} emotions {pool.available}; "
                "the multi-EEG tasks need at least 3"
            )
        if cot:
            missing = [feature for feature in FEATURE_NAMES if feature not in columns]
            if missing:
                raise ValueError(
                    f"the {name} segments lack the measured feature columns {missing[:3]}... ({len(missing)} in all) "
                    "that the chain of thought states; prepare the data with this version of `e2llm prepare`, "
                    "or build the sets with cot=False"
                )
            pool.scores = [
                {feature: math.nan if columns[feature][row] is None else float(columns[feature][row])
                 for feature in FEATURE_NAMES}
                for row in range(len(columns["id"]))
            ]  # fmt: skip
        pools[name] = pool
    streams = {name: np.random.default_rng([seed, index]) for index, name in enumerate(
        ("train", "stage3", "test_ied", "test_multi", "test_esr")
    )}
    sets = {}
    for name, pool_name, tasks in (
        ("train", "train", TRAIN_TASKS), ("stage3", "train", TRAIN_TASKS),
        ("test_multi", "test", MULTI_TASKS), ("test_esr", "test", ("ESR",)),
    ):
        rng = streams[name]
        sets[name] = _mixed(_Writer(pools[pool_name], rng, cot), sizes[name], tasks, rng)
    writer = _Writer(pools["test"], streams["test_ied"], cot)
    sets["test_ied"] = [writer.ied(index) for index in range(len(pools["test"].ids))]
    ordered = {}
    for name in ("train", "stage3", "test_ied", "test_multi", "test_esr"):
        ordered[name] = [{"id": f"{name}-{number:06d}", **sample} for number, sample in enumerate(sets[name])]
    return ordered


def qa_features():
    """The ``datasets.Features`` of a QA split."""
    from datasets import Features, List, Value

    item = {"type": Value("string"), "text": Value("string")}
    return Features(
        {
            "id": Value("string"),
            "task": Value("string"),
            "messages": List({"role": Value("string"), "content": List(item)}),
            "segment_ids": List(Value("string")),
            "answer": Value("string"),
        }
    )


def all_question_templates() -> dict[str, tuple[str, ...]]:
    """Every question template per task (for tests and documentation)."""
    return {
        "IED": IED_QUESTIONS + IED_DIRECT_QUESTIONS, "EPC": EPC_QUESTIONS,
        "ESS": ESS_QUESTIONS["strongest"] + ESS_QUESTIONS["weakest"], "EIM": EIM_QUESTIONS,
        "ESR": ESR_FIRST_QUESTIONS + ESR_SECOND_QUESTIONS + ESR_DIRECT_FIRST_QUESTIONS + ESR_DIRECT_SECOND_QUESTIONS,
    }  # fmt: skip


def all_canonical_answers(task: str) -> list[str]:
    """Every canonical answer string of ``task``."""
    if task == "IED":
        return list(EMOTIONS)
    if task == "EPC":
        return list(EPC_ANSWERS)
    if task in ("ESS", "ESR"):
        return ["EEG 1", "EEG 2", "EEG 3"]
    if task == "EIM":
        return [eim_answer(list(p)) for p in itertools.permutations((1, 2, 3))]
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
