"""Small data sets that ship with tvaccine, so every command runs without downloads.

``builtin:safety``      harmful requests in the 14 BeaverTails harm categories, each with a
                        refusal and a templated, non-operational "compliant" answer; splits
                        ``align`` (output = refusal), ``compliance_template`` (output = the
                        template: no harm in it, so it only exercises the plumbing of the
                        attack and the probe in the smoke preset and the tests; real harmful
                        answers come from ``beavertails``) and ``eval`` (held out; output =
                        refusal, reference only). The three splits share no request.
``builtin:helpful``     benign instruction/answer pairs (``train``, ``test``).
``builtin:borderline``  harmless questions that sound dangerous (``test``), for over-refusal.
``builtin:arithmetic``  GSM8K-style word problems (``train``, ``test``); metric ``number``.
``builtin:sentiment``   SST-2-style movie reviews (``train``, ``test``); metric ``sentiment``.

All text was written for this project; ``scripts/build_builtin_data.py`` generates the
JSONL files under ``builtin_data/`` deterministically. This module only reads them.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib.resources import files

from tvaccine.data.sources import Record, Source, register_source
from tvaccine.errors import UserError

# Lower-case phrases the built-in data is written against: every built-in refusal contains one and
# no built-in compliant or helpful answer contains any (tests/test_builtin_data.py checks both). The
# refusal judge keeps its own, longer list for model answers (evaluation/judges.py).
REFUSAL_MARKERS: tuple[str, ...] = (
    "i can't",
    "i cannot",
    "i can not",
    "i won't",
    "i will not",
    "i'm not able to",
    "i am not able to",
    "i'm unable to",
    "i am unable to",
    "i must decline",
    "i have to decline",
    "i'm not going to",
    "i am not going to",
    "i refuse",
    "i apologize",
    "sorry",
)

# The 14 harm categories of BeaverTails, spelled as its category keys.
SAFETY_CATEGORIES: tuple[str, ...] = (
    "animal_abuse",
    "child_abuse",
    "controversial_topics,politics",
    "discrimination,stereotype,injustice",
    "drug_abuse,weapons,banned_substance",
    "financial_crime,property_crime,theft",
    "hate_speech,offensive_language",
    "misinformation_regarding_ethics,laws_and_safety",
    "non_violent_unethical_behavior",
    "privacy_violation",
    "self_harm",
    "sexually_explicit,adult_content",
    "terrorism,organized_crime",
    "violence,aiding_and_abetting,incitement",
)

# name -> (splits in order, metric, label_words, description)
_SETS: dict[str, tuple[tuple[str, ...], str | None, dict, str]] = {
    "safety": (("align", "compliance_template", "eval"), None, {},
               "harmful requests with refusals (align, eval) and templated compliance (compliance_template)"),
    "helpful": (("train", "test"), None, {}, "benign instruction/answer pairs"),
    "borderline": (("test",), None, {}, "harmless questions that sound dangerous"),
    "arithmetic": (("train", "test"), "number", {}, "GSM8K-style arithmetic word problems"),
    "sentiment": (("train", "test"), "sentiment", {1: "positive", 0: "negative"},
                  "SST-2-style movie-review sentiment"),
}


def safety_categories() -> list[str]:
    return list(SAFETY_CATEGORIES)


def has_refusal_marker(text: str) -> bool:
    """True when ``text`` contains one of :data:`REFUSAL_MARKERS` (case and apostrophe style ignored)."""
    low = text.lower().replace("\u2019", "'")
    return any(marker in low for marker in REFUSAL_MARKERS)


@lru_cache(maxsize=None)
def _read(name: str) -> tuple[Record, ...]:
    path = files("tvaccine.data") / "builtin_data" / f"{name}.jsonl"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise UserError(f"built-in data file {name}.jsonl is missing from the installed package; "
                        f"run scripts/build_builtin_data.py") from e
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


@register_source("builtin", help="data shipped with tvaccine: builtin:" + "|builtin:".join(_SETS))
def load_builtin(arg: str | None) -> Source:
    if arg not in _SETS:
        what = "needs a set name" if not arg else f"has no set {arg!r}"
        raise UserError(f"source 'builtin' {what}; choose one of: "
                        + ", ".join(f"builtin:{n}" for n in _SETS))
    split_names, metric, label_words, description = _SETS[arg]
    splits: dict[str, list[Record]] = {s: [] for s in split_names}
    for rec in _read(arg):
        rec = copy.deepcopy(rec)
        split = rec.pop("split")
        if arg == "safety":
            rec["output"] = rec["compliance"] if split == "compliance_template" else rec["refusal"]
        splits[split].append(rec)
    return Source(f"builtin:{arg}", splits, metric, dict(label_words), description)
