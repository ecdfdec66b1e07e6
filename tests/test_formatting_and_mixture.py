import pytest

from tvaccine.data.formatting import IGNORE_INDEX, format_prompt, tokenize_records
from tvaccine.data.mixture import build_mixture
from tvaccine.data.sources import load_source
from tvaccine.errors import UserError
from tvaccine.models import TINY_RANDOM_MODEL, load_model


@pytest.fixture(scope="module")
def tokenizer():
    return load_model(TINY_RANDOM_MODEL, device="cpu")[1]


def test_alpaca_prompt_with_and_without_input():
    assert format_prompt({"instruction": "Say hi"}).endswith("### Instruction:\nSay hi\n\n### Response:\n")
    with_input = format_prompt({"instruction": "Classify", "input": "great film"})
    assert "### Input:\ngreat film\n\n### Response:\n" in with_input


def test_loss_covers_only_the_response(tokenizer):
    record = {"instruction": "Say hi", "output": "hi there"}
    example = tokenize_records([record], tokenizer, max_length=200).examples[0]
    prompt_len = len(tokenizer(format_prompt(record), add_special_tokens=False)["input_ids"])
    assert example["labels"][:prompt_len] == [IGNORE_INDEX] * prompt_len
    response = example["labels"][prompt_len:]
    assert response[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(response[:-1]) == "hi there"


def test_truncation_drops_and_counts_samples_without_response_tokens(tokenizer):
    long_prompt = {"instruction": "x " * 200, "output": "answer"}
    short = {"instruction": "Say hi", "output": "hi"}
    result = tokenize_records([long_prompt, short, long_prompt], tokenizer, max_length=190)
    assert result.dropped == 2 and len(result.examples) == 1
    assert all(len(e["input_ids"]) <= 190 for e in result.examples)


@pytest.mark.parametrize("n,p", [(100, 0.1), (1000, 0.1), (37, 0.2), (50, 0.0), (20, 1.0), (10, 0.05)])
def test_mixture_counts_are_exact(n, p):
    safety = load_source("builtin:safety")
    benign = load_source("builtin:sentiment").split("train")
    mixture = build_mixture(benign, safety.split("harmful"), n, p, seed=3, eval_prompts=safety.split("eval"))
    assert len(mixture) == n
    assert sum(r["is_harmful"] for r in mixture) == round(p * n)
    assert build_mixture(benign, safety.split("harmful"), n, p, seed=3) == mixture  # seeded
    harmful_prompts = {r["instruction"] for r in mixture if r["is_harmful"]}
    assert not harmful_prompts & {r["instruction"] for r in safety.split("eval")}


def test_mixture_rejects_bad_ratios_sizes_and_leaks():
    harmful = load_source("builtin:safety").split("harmful")
    benign = load_source("builtin:sentiment").split("train")
    with pytest.raises(UserError, match=r"p must be in \[0, 1\]"):
        build_mixture(benign, harmful, 10, 1.5)
    with pytest.raises(UserError, match="harmful source holds"):
        build_mixture(benign, harmful, 10_000, 0.5)
    with pytest.raises(UserError, match="also evaluation prompts"):
        build_mixture(benign, harmful, 20, 1.0, eval_prompts=harmful)
