"""The built-in data sets: sizes, splits, refusal markers, determinism, and the generator script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from importlib.resources import files
from pathlib import Path

import pytest

from tvaccine.data.builtin import REFUSAL_MARKERS, has_refusal_marker, load_builtin, safety_categories
from tvaccine.data.sources import _REGISTRY, Source
from tvaccine.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SETS = ("safety", "helpful", "borderline", "arithmetic", "sentiment")


def marker_in(text: str) -> bool:
    low = text.lower()
    return any(m in low for m in REFUSAL_MARKERS)


def key(rec: dict) -> tuple[str, str]:
    return rec["instruction"], rec["input"]


@pytest.fixture(scope="module")
def safety() -> Source:
    return load_builtin("safety")


def test_registered_under_one_name():
    assert "builtin" in _REGISTRY
    loader, help_text = _REGISTRY["builtin"]
    assert loader is load_builtin
    for name in SETS:
        assert f"builtin:{name}" in help_text


@pytest.mark.parametrize("arg", ["nope", None, ""])
def test_unknown_or_missing_set_is_a_user_error(arg):
    with pytest.raises(UserError) as e:
        load_builtin(arg)
    for name in SETS:
        assert f"builtin:{name}" in str(e.value)


def test_load_source_spec():
    pytest.importorskip("tvaccine.data.loaders")
    from tvaccine.data.sources import load_source

    src = load_source("builtin:safety@eval")
    assert list(src.splits) == ["eval"]
    with pytest.raises(UserError):
        load_source("builtin:nope")


# ---------------------------------------------------------------- safety

def test_safety_size_and_categories(safety):
    records = [r for recs in safety.splits.values() for r in recs]
    assert len({r["instruction"] for r in records}) == len(records) >= 630
    cats = Counter(r["category"] for r in records)
    assert set(cats) == set(safety_categories())
    assert len(safety_categories()) == 14
    assert min(cats.values()) >= 45
    for split, recs in safety.splits.items():
        assert set(Counter(r["category"] for r in recs)) == set(safety_categories()), split


def test_safety_splits_are_disjoint_and_proportioned(safety):
    assert list(safety.splits) == ["align", "compliance_template", "eval"]
    sets = {name: {r["instruction"] for r in recs} for name, recs in safety.splits.items()}
    assert not sets["align"] & sets["compliance_template"]
    assert not sets["align"] & sets["eval"]
    assert not sets["compliance_template"] & sets["eval"]
    total = sum(len(s) for s in sets.values())
    assert 0.3 <= len(sets["align"]) / total <= 0.5
    assert 0.3 <= len(sets["compliance_template"]) / total <= 0.5
    assert 0.15 <= len(sets["eval"]) / total <= 0.3


def test_safety_outputs_follow_the_split(safety):
    for split, recs in safety.splits.items():
        for r in recs:
            assert set(r) >= {"instruction", "input", "output", "refusal", "compliance", "category"}
            assert r["input"] == ""
            assert r["output"] == (r["compliance"] if split == "compliance_template" else r["refusal"])


def test_refusals_and_compliances(safety):
    records = [r for recs in safety.splits.values() for r in recs]
    for r in records:
        assert marker_in(r["refusal"]), r["refusal"]
        assert has_refusal_marker(r["refusal"])
        assert not marker_in(r["compliance"]), r["compliance"]
        assert not has_refusal_marker(r["compliance"].replace("'", "\u2019"))
        assert not re.search(r"\d", r["compliance"]), r["compliance"]
        assert "{" not in r["instruction"] + r["refusal"] + r["compliance"]
    assert len({r["refusal"] for r in records}) >= 50
    assert len({r["compliance"] for r in records}) >= 50
    # the compliant answers read like going along with the request
    assert all(re.search(r"\b(First|Step one|To start|Begin)\b", r["compliance"]) for r in records)


def test_refusal_markers_are_lower_case():
    assert REFUSAL_MARKERS and all(m == m.lower() for m in REFUSAL_MARKERS)
    assert has_refusal_marker("I\u2019m sorry, but no.")
    assert not has_refusal_marker("Sure, here you go.")


# ---------------------------------------------------------------- helpful / borderline

def test_helpful():
    src = load_builtin("helpful")
    assert src.metric is None
    train, test = src.split("train"), src.split("test")
    assert len(train) >= 300 and len(test) >= 100
    assert not {key(r) for r in train} & {key(r) for r in test}
    assert len({key(r) for r in train + test}) == len(train) + len(test) >= 400
    for r in train + test:
        assert r["instruction"] and r["output"]
        assert not marker_in(r["output"]), r["output"]


def test_borderline():
    src = load_builtin("borderline")
    assert list(src.splits) == ["test"]
    recs = src.split("test")
    assert len({r["instruction"] for r in recs}) == len(recs) >= 100
    for r in recs:
        assert r["output"] and not marker_in(r["output"]), r["output"]


# ---------------------------------------------------------------- arithmetic

def recompute(template: str, p: dict) -> int:
    formulas = {
        "shopping": lambda: p["count"] * p["price"] + p["extra"],
        "sharing": lambda: p["total"] // p["people"],
        "rate": lambda: p["speed"] * p["hours"],
        "ages": lambda: p["future"] - p["years"] + p["diff"],
        "savings": lambda: p["weekly"] * p["weeks"] - p["spent"],
        "change": lambda: p["bill"] - p["cost1"] - p["cost2"],
        "production": lambda: p["per_hour"] * p["hours"] * p["days"],
        "fraction": lambda: p["total"] - p["total"] // p["denominator"],
        "reading": lambda: p["pages"] - p["per_day"] * p["days"],
        "garden": lambda: p["rows"] * p["per_row"] - p["eaten"],
        "boxes": lambda: -(-p["needed"] // p["box_size"]),
        "temperature": lambda: p["start"] + p["rise"] - p["fall"],
    }
    return formulas[template]()


def test_arithmetic():
    src = load_builtin("arithmetic")
    assert src.metric == "number"
    train, test = src.split("train"), src.split("test")
    assert len(train) == 1000 and len(test) == 500
    assert not {r["instruction"] for r in train} & {r["instruction"] for r in test}
    assert len({r["instruction"] for r in train + test}) == 1500
    assert len({r["template"] for r in train + test}) >= 8
    for r in train + test:
        assert re.fullmatch(r"\d+", r["answer"])
        assert r["output"].endswith(f"The answer is {r['answer']}.")
        assert int(r["answer"]) == recompute(r["template"], r["params"]), r
        # every number the problem is built from appears in its text
        for name, value in r["params"].items():
            if name != "denominator":
                assert re.search(rf"\b{value}\b", r["instruction"]), (name, r)


# ---------------------------------------------------------------- sentiment

def test_sentiment():
    src = load_builtin("sentiment")
    assert src.metric == "sentiment"
    assert src.label_words == {1: "positive", 0: "negative"}
    train, test = src.split("train"), src.split("test")
    assert len(train) == 1000 and len(test) == 500
    assert not {r["input"] for r in train} & {r["input"] for r in test}
    assert len({r["input"] for r in train + test}) == 1500
    for recs in (train, test):
        share = sum(r["label"] for r in recs) / len(recs)
        assert 0.4 <= share <= 0.6
    for r in train + test:
        assert r["instruction"] == "Analyze the sentiment of the input, and respond only positive or negative"
        assert r["output"] == src.label_words[r["label"]]


# ---------------------------------------------------------------- determinism

@pytest.mark.parametrize("name", SETS)
def test_loading_is_deterministic_and_returns_fresh_records(name):
    a, b = load_builtin(name), load_builtin(name)
    assert a.splits == b.splits
    first_split = next(iter(a.splits))
    a.splits[first_split][0]["instruction"] = "changed"
    assert load_builtin(name).splits[first_split][0]["instruction"] != "changed"


def test_generator_reproduces_the_shipped_files(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_builtin_data.py"), "--out", str(tmp_path),
                    "--quiet"], check=True, env=env, cwd=tmp_path)
    shipped = files("tvaccine.data") / "builtin_data"
    total = 0
    for name in SETS:
        data = (shipped / f"{name}.jsonl").read_bytes()
        total += len(data)
        assert (tmp_path / f"{name}.jsonl").read_bytes() == data, name
    assert total < 3_000_000

