"""Feature claims: how an explanation states an EEG's measured features, and how they are read back.

The chain of thought (:mod:`train.data.qa`) describes each EEG by its most salient measured
features (:mod:`train.data.features`, z-scores against the person's own session), in words
this module writes and reads, so that ``e2llm evaluate`` can check every claim a model makes
against the segment it describes.

A claim is a feature and a direction: ``("power_alpha_occipital", -1)`` is "alpha is reduced
over occipital sites", ``("asymmetry_alpha_frontal", +1)`` "frontal alpha is higher on the
right". Claims are made about band power by region and frontal alpha asymmetry.

- Salient (what the reference explanations state): at most :data:`MAX_CLAIMS` features with
  ``|z| >= SALIENT_Z``, the largest first; an EEG with none says that nothing stands out.
- True (what the evaluation scores): the feature's z-score lies at least :data:`TRUE_Z` in the
  claimed direction (half a standard deviation of that person's session). A claim about a
  feature the segment does not have (NaN) is false.

Phrasings, several of each, all read back exactly by :func:`read_claims`::

    beta is raised over the frontal and central regions      alpha is reduced over occipital sites
    the left temporal region shows more gamma                 there is less theta over parietal sites
    frontal alpha is higher on the right                      the left frontal sites carry more alpha than the right

Regions are named ``frontal``, ``central``, ``left temporal``, ``right temporal`` (``both
temporal`` for the two), ``parietal`` and ``occipital``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from train.data.features import ASYMMETRY, BANDS, POWER_FEATURES, REGIONS

SALIENT_Z = 1.0
TRUE_Z = 0.5
MAX_CLAIMS = 3
CLAIMABLE = (*POWER_FEATURES, ASYMMETRY)
NOTHING_STANDS_OUT = (
    "no band stands out from this person's session average",
    "its band powers stay close to this person's session average",
)

_REGION_WORDS = {region: region.replace("_", " ") for region in REGIONS}
_UP = ("raised", "elevated", "stronger")
_DOWN = ("reduced", "lowered", "weaker")
_NOUNS = ("sites", "regions", "region", "areas")
_ADJECTIVE = r"(?:both temporal|left temporal|right temporal|frontal|central|parietal|occipital)"
_REGION_LIST = rf"(?:the )?(?P<regions>{_ADJECTIVE}(?:(?:, | and ){_ADJECTIVE})*) (?:{'|'.join(_NOUNS)})"
_BAND = rf"(?P<band>{'|'.join(BANDS)})"
_PATTERNS = (
    re.compile(rf"\b{_BAND} is (?P<direction>{'|'.join(_UP + _DOWN)}) over {_REGION_LIST}", re.IGNORECASE),
    re.compile(rf"\b{_REGION_LIST} shows? (?P<direction>more|less) {_BAND}\b", re.IGNORECASE),
    re.compile(rf"\bthere is (?P<direction>more|less) {_BAND} over {_REGION_LIST}", re.IGNORECASE),
)
_ASYMMETRY_PATTERNS = (
    re.compile(r"\bfrontal alpha is higher on the (?P<side>right|left)\b", re.IGNORECASE),
    re.compile(r"\bthe (?P<side>right|left) frontal sites carry more alpha than the (?:right|left)\b", re.IGNORECASE),
    re.compile(r"\balpha is stronger over the (?P<side>right|left) than the (?:right|left) frontal sites\b", re.IGNORECASE),
)
_EEG_MARK = re.compile(r"\b(?:The EEG|EEG (?P<number>\d+))\s*:")


@dataclass(frozen=True)
class Claim:
    """One stated feature: ``feature`` (a :data:`CLAIMABLE` name) and ``direction`` (+1 raised, -1 reduced)."""

    feature: str
    direction: int

    def holds(self, scores: Mapping[str, float]) -> bool:
        """Whether the segment's z-scores ``scores`` bear the claim out (see the module docstring)."""
        value = scores.get(self.feature)
        if value is None or math.isnan(value):
            return False
        return value * self.direction >= TRUE_Z


def salient_claims(scores: Mapping[str, float]) -> list[Claim]:
    """The claims a reference explanation makes about a segment with z-scores ``scores``."""
    ranked = sorted(
        (name for name in CLAIMABLE if scores.get(name) is not None and not math.isnan(scores[name])),
        key=lambda name: -abs(scores[name]),
    )
    return [Claim(name, 1 if scores[name] > 0 else -1) for name in ranked[:MAX_CLAIMS] if abs(scores[name]) >= SALIENT_Z]


def _split(feature: str) -> tuple[str, str]:
    _, band, region = feature.split("_", 2)
    return band, region


def _regions_phrase(regions: list[str], rng) -> str:
    words = [_REGION_WORDS[r] for r in REGIONS if r in regions]
    if "left temporal" in words and "right temporal" in words:
        words = [w for w in words if not w.endswith("temporal")] + ["both temporal"]
    listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    plural = len(words) > 1 or words[0] == "both temporal"
    noun = str(rng.choice(("regions", "areas"))) if plural else str(rng.choice(("region", "sites")))
    if noun == "sites" and words[0].endswith("temporal"):
        noun = "region"
    return f"{listed} {noun}" if listed.startswith("both") else f"the {listed} {noun}"


def describe_claims(claims: list[Claim], rng) -> str:
    """The claims in words (no final full stop), in one of several phrasings drawn with ``rng``."""
    if not claims:
        return str(rng.choice(NOTHING_STANDS_OUT))
    groups: dict[tuple[str, int], list[str]] = {}
    asymmetry = None
    for claim in claims:
        if claim.feature == ASYMMETRY:
            asymmetry = claim
            continue
        band, region = _split(claim.feature)
        groups.setdefault((band, claim.direction), []).append(region)
    clauses = []
    for (band, direction), regions in groups.items():
        where = _regions_phrase(regions, rng)
        style = int(rng.integers(3))
        if style == 0:
            clauses.append(f"{band} is {rng.choice(_UP if direction > 0 else _DOWN)} over {where}")
        elif style == 1:
            verb = "show" if where.endswith(("regions", "areas", "sites")) else "shows"
            clauses.append(f"{where} {verb} {'more' if direction > 0 else 'less'} {band}")
        else:
            clauses.append(f"there is {'more' if direction > 0 else 'less'} {band} over {where}")
    text = " and ".join(clauses) if len(clauses) <= 2 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    if asymmetry is not None:
        high, low = ("right", "left") if asymmetry.direction > 0 else ("left", "right")
        side = (
            f"frontal alpha is higher on the {high}",
            f"the {high} frontal sites carry more alpha than the {low}",
            f"alpha is stronger over the {high} than the {low} frontal sites",
        )[int(rng.integers(3))]
        text = f"{text}; {side}" if text else side
    return text


def _regions_of(listed: str) -> list[str]:
    regions = []
    for word in re.split(r", | and ", listed.lower()):
        if word == "both temporal":
            regions += ["left_temporal", "right_temporal"]
        else:
            regions.append(word.replace(" ", "_"))
    return regions


def read_claims(text: str) -> list[Claim]:
    """Every feature claim in ``text``, in the order written (a claim written twice counts twice)."""
    found: list[tuple[int, Claim]] = []
    for pattern in _PATTERNS:
        for match in pattern.finditer(text or ""):
            word = match["direction"].lower()
            direction = 1 if word in _UP or word == "more" else -1
            band = match["band"].lower()
            for offset, region in enumerate(_regions_of(match["regions"])):
                found.append((match.start() + offset, Claim(f"power_{band}_{region}", direction)))
    for pattern in _ASYMMETRY_PATTERNS:
        for match in pattern.finditer(text or ""):
            found.append((match.start(), Claim(ASYMMETRY, 1 if match["side"].lower() == "right" else -1)))
    return [claim for _, claim in sorted(found, key=lambda item: item[0])]


def read_explanation(text: str) -> dict[int, list[Claim]]:
    """The claims of each EEG an answer describes: ``{EEG number: [claims]}``.

    Each EEG's description opens with ``EEG n:`` (``The EEG:`` for a single one, number 1);
    claims before any such mark belong to EEG 1.
    """
    marks = list(_EEG_MARK.finditer(text or ""))
    spans = [(1, 0, marks[0].start() if marks else len(text or ""))]
    for index, mark in enumerate(marks):
        end = marks[index + 1].start() if index + 1 < len(marks) else len(text)
        spans.append((int(mark["number"] or 1), mark.end(), end))
    claims: dict[int, list[Claim]] = {}
    for number, start, end in spans:
        found = read_claims(text[start:end])
        if found:
            claims.setdefault(number, []).extend(found)
    return claims


def claim_words(claims: list[Claim]) -> list[str]:
    """The claims as short words (``alpha occipital reduced``), for the demo's EEG spans written in words."""
    words = []
    for claim in claims:
        if claim.feature == ASYMMETRY:
            words += ["alpha", "right" if claim.direction > 0 else "left", "higher"]
        else:
            band, region = _split(claim.feature)
            words += [band, *_REGION_WORDS[region].split(), "raised" if claim.direction > 0 else "reduced"]
    return words
