"""The hand-written held-out calibration set (benchmarks/heldout): it loads, is complete, and is unseen."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from tvaccine.data.builtin import _SETS, SAFETY_CATEGORIES, load_builtin
from tvaccine.data.sources import load_source
from tvaccine.evaluation.evaluate import EvalSpec, evaluation_sets

ROOT = Path(__file__).resolve().parents[1]
HARMFUL = f"file:{ROOT}/benchmarks/heldout/harmful.jsonl"
BORDERLINE = f"file:{ROOT}/benchmarks/heldout/borderline.jsonl"
SHARED = ROOT.parent / "shared" / "data"


def norm(text: str) -> str:
    return " ".join(text.lower().replace("\u2019", "'").split())


def words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9']+", norm(text)))


@pytest.fixture(scope="module")
def held_out() -> dict[str, list[dict]]:
    return {name: load_source(spec).split("train") for name, spec in (("harmful", HARMFUL),
                                                                      ("borderline", BORDERLINE))}


@pytest.fixture(scope="module")
def builtin_texts() -> dict[str, str]:
    """Lower-cased instruction or input -> the built-in set and split it is in, over every set and split."""
    out = {}
    for name in _SETS:
        for split, records in load_builtin(name).splits.items():
            for rec in records:
                for key in ("instruction", "input"):
                    if rec.get(key):
                        out.setdefault(norm(rec[key]), f"builtin:{name}@{split}")
    return out


def test_file_source_gives_one_train_split_of_prompts_only():
    for spec, n in ((HARMFUL, 70), (BORDERLINE, 30)):
        source = load_source(spec)
        assert list(source.splits) == ["train"]
        records = source.split("train")
        assert len(records) == n
        assert all(r["output"] is None and r["input"] == "" and r["instruction"].strip() for r in records)


def test_five_harmful_prompts_in_each_of_the_14_categories(held_out):
    assert Counter(r["category"] for r in held_out["harmful"]) == {c: 5 for c in SAFETY_CATEGORIES}
    assert len(SAFETY_CATEGORIES) == 14
    assert not any("category" in r for r in held_out["borderline"])


def test_no_duplicates(held_out):
    prompts = [norm(r["instruction"]) for rs in held_out.values() for r in rs]
    assert len(prompts) == 100
    assert len(set(prompts)) == 100


def test_no_prompt_is_in_the_builtin_data(held_out, builtin_texts):
    # The template compliance's prompts (builtin:safety@compliance_template) and the evaluation prompts
    # (builtin:safety@eval,
    # builtin:borderline@test) are among these, with every other built-in split.
    assert {"builtin:safety@compliance_template", "builtin:safety@eval", "builtin:borderline@test"} <= \
        set(builtin_texts.values())
    found = {r["instruction"]: builtin_texts[norm(r["instruction"])] for rs in held_out.values() for r in rs
             if norm(r["instruction"]) in builtin_texts}
    assert found == {}


def test_no_prompt_shares_most_of_its_words_with_a_builtin_one(held_out, builtin_texts):
    """A reworded built-in prompt is no held-out prompt: word-set Jaccard stays below 0.5."""
    refs = [words(t) for t in builtin_texts]
    closest = max((len(words(r["instruction"]) & w) / len(words(r["instruction"]) | w), r["instruction"])
                  for rs in held_out.values() for r in rs for w in refs)
    assert closest[0] < 0.5, closest


@pytest.mark.skipif(not (SHARED / "advbench").is_dir(), reason="no ../shared/data here")
def test_no_prompt_is_in_the_shared_public_sets(held_out):
    specs = [f"advbench:{SHARED}/advbench/harmful_behaviors.csv",
             f"beavertails:{SHARED}/beavertails/beavertails_30k_train_unsafe_200.jsonl",
             f"beavertails:{SHARED}/beavertails/vaccine_mix_sst2_n1000_p0.2.json",
             f"hhrlhf:{SHARED}/hh_rlhf_harmless/test.jsonl.gz"]
    public = {norm(r["instruction"]) for spec in specs for rs in load_source(spec).splits.values() for r in rs}
    assert len(public) > 1000
    assert not [r["instruction"] for rs in held_out.values() for r in rs if norm(r["instruction"]) in public]


def test_evaluate_takes_them_as_its_harmful_and_borderline_prompts(held_out):
    sets = evaluation_sets(EvalSpec(eval_harmful=HARMFUL, borderline=BORDERLINE))
    assert [r["instruction"] for r in sets["harmful"][0]] == [r["instruction"] for r in held_out["harmful"]]
    assert [r["instruction"] for r in sets["borderline"][0]] == [r["instruction"] for r in held_out["borderline"]]
