"""Self-distilled benign answers: the model's own, only those that ended, cached by what they depend on,
saved with their provenance next to the adapter."""

import json

import pytest

from tvaccine.alignment import AlignSpec, run_alignment
from tvaccine.data.self_distill import model_fingerprint, self_distilled
from tvaccine.evaluation import generation
from tvaccine.models import load_model

RECORDS = [{"instruction": f"Name a colour, please ({i}).", "input": ""} for i in range(6)]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random-llama")


def fake_generate(calls):
    """Answers that end on their own for even instructions and hit the token limit for odd ones."""
    def generate(model, tokenizer, records, template, max_new_tokens, batch_size, progress=None):
        calls.append(len(records))
        return [generation.Generation(f"answer {i}", hit_token_limit=i % 2 == 1, prompt_truncated=False)
                for i, _ in enumerate(records)]
    return generate


def test_keeps_only_answers_that_ended_and_reuses_the_cache(tiny, tmp_path, monkeypatch):
    model, tokenizer = tiny
    calls = []
    monkeypatch.setattr(generation, "generate", fake_generate(calls))
    kept, first = self_distilled(model, tokenizer, RECORDS, "auto", 20, "fp32", tmp_path, log=lambda *a: None)
    assert [r["output"] for r in kept] == ["answer 0", "answer 2", "answer 4"]
    assert (first["answered"], first["kept"], first["from_cache"]) == (6, 3, False)
    again, second = self_distilled(model, tokenizer, RECORDS, "auto", 20, "fp32", tmp_path, log=lambda *a: None)
    assert again == kept and second["from_cache"] and calls == [6]
    # Anything the answers depend on makes a new entry: the token limit, the precision, the instructions.
    for changed in ({"max_new_tokens": 30}, {"precision": "bf16"}, {"records": RECORDS[:5]}):
        args = {"records": RECORDS, "max_new_tokens": 20, "precision": "fp32", **changed}
        _, info = self_distilled(model, tokenizer, args["records"], "auto", args["max_new_tokens"],
                                 args["precision"], tmp_path, log=lambda *a: None)
        assert not info["from_cache"]
    assert calls == [6, 6, 6, 5]


def test_fingerprint_follows_the_weights(tiny):
    import torch

    model, _ = tiny
    before = model_fingerprint(model)
    assert model_fingerprint(model) == before
    with torch.no_grad():
        param = next(model.parameters())
        param.flatten()[0] += 1.0
        try:
            assert model_fingerprint(model) != before
        finally:
            param.flatten()[0] -= 1.0


def test_alignment_trains_on_the_models_own_answers_and_saves_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TVACCINE_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(generation, "generate", fake_generate(calls))
    spec = AlignSpec(model="tiny-random-llama", n_safety=4, n_benign=411, max_length=256,
                     train={"max_steps": 1, "per_device_train_batch_size": 4, "use_cpu": True, "disable_tqdm": True})
    summary = run_alignment(spec, tmp_path / "out", log=lambda *a: None)
    provenance = json.loads((tmp_path / "out" / "benign_answers.json").read_text())
    saved = [json.loads(line) for line in (tmp_path / "out" / "benign_answers.jsonl").read_text().splitlines()]
    assert provenance["answers"] == "self" and provenance["source"] == "builtin:helpful@train"
    assert provenance["kept"] == len(saved) == (provenance["answered"] + 1) // 2
    # n_benign above what ended: every kept answer is trained on (the log says so)
    assert summary["samples"] + summary["dropped_by_truncation"] == 4 + len(saved)
    assert all(r["output"].startswith("answer ") for r in saved)
    assert summary["benign_answers"]["model"] == provenance["model"]


def test_given_answers_are_the_sources(tmp_path, monkeypatch):
    monkeypatch.setattr(generation, "generate", lambda *a, **k: pytest.fail("no generation for given answers"))
    spec = AlignSpec(model="tiny-random-llama", n_safety=4, n_benign=4, max_length=256, benign_answers="given",
                     train={"max_steps": 1, "per_device_train_batch_size": 4, "use_cpu": True, "disable_tqdm": True})
    summary = run_alignment(spec, tmp_path / "out", log=lambda *a: None)
    assert summary["samples"] + summary["dropped_by_truncation"] == 8
    assert json.loads((tmp_path / "out" / "benign_answers.json").read_text())["answers"] == "given"
