import pytest

from tvaccine.data.formatting import (
    IGNORE_INDEX,
    fit_prompt,
    format_prompt,
    max_token_chars,
    prompt_ids,
    resolve_template,
    stop_token_ids,
    tokenize_records,
)
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
    mixture = build_mixture(benign, safety.split("compliance_template"), n, p, seed=3,
                            eval_prompts=safety.split("eval"))
    assert len(mixture) == n
    assert sum(r["is_harmful"] for r in mixture) == round(p * n)
    assert build_mixture(benign, safety.split("compliance_template"), n, p, seed=3) == mixture  # seeded
    harmful_prompts = {r["instruction"] for r in mixture if r["is_harmful"]}
    assert not harmful_prompts & {r["instruction"] for r in safety.split("eval")}


def test_mixture_rejects_bad_ratios_sizes_and_leaks():
    harmful = load_source("builtin:safety").split("compliance_template")
    benign = load_source("builtin:sentiment").split("train")
    with pytest.raises(UserError, match=r"p must be in \[0, 1\]"):
        build_mixture(benign, harmful, 10, 1.5)
    with pytest.raises(UserError, match="harmful source holds"):
        build_mixture(benign, harmful, 10_000, 0.5)
    with pytest.raises(UserError, match="also evaluation prompts"):
        build_mixture(benign, harmful, 20, 1.0, eval_prompts=harmful)


# ---------------------------------------------------------------- templates: auto, chat, truncation

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture
def chat_tokenizer():
    tokenizer = load_model(TINY_RANDOM_MODEL, device="cpu")[1]
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    return tokenizer


def test_auto_means_chat_only_for_a_tokenizer_with_a_chat_template(tokenizer, chat_tokenizer):
    assert resolve_template(tokenizer, "auto") == "alpaca"
    assert resolve_template(chat_tokenizer, "auto") == "chat"
    assert resolve_template(chat_tokenizer, "alpaca") == "alpaca"
    with pytest.raises(UserError, match="needs a tokenizer with a chat template"):
        resolve_template(tokenizer, "chat")
    with pytest.raises(UserError, match="unknown template 'vicuna'"):
        resolve_template(tokenizer, "vicuna")


def test_chat_training_masks_the_prompt_and_ends_at_the_end_of_turn(chat_tokenizer):
    record = {"instruction": "Classify", "input": "great film", "output": "positive"}
    example = tokenize_records([record], chat_tokenizer, template="auto", max_length=200).examples[0]
    prompt = prompt_ids(record, chat_tokenizer, "chat")
    expected = "<|im_start|>user\nClassify\n\ngreat film<|im_end|>\n<|im_start|>assistant\n"
    assert chat_tokenizer.decode(prompt) == expected
    assert example["input_ids"][:len(prompt)] == prompt
    assert example["labels"][:len(prompt)] == [IGNORE_INDEX] * len(prompt)
    answer = example["labels"][len(prompt):]
    assert chat_tokenizer.decode(answer) == "positive<|im_end|>"  # the line break after it is never generated
    assert answer[-1] in stop_token_ids(chat_tokenizer) and answer[-1] != chat_tokenizer.eos_token_id


def test_fit_prompt_keeps_the_template_and_the_start_of_the_request(tokenizer):
    record = {"instruction": "Explain photosynthesis. " + "More detail please. " * 100, "input": "context " * 100}
    ids, cut = fit_prompt(record, tokenizer, "alpaca", 300)
    text = tokenizer.decode(ids)
    assert cut and len(ids) <= 300
    assert text.endswith("\n\n### Response:\n")  # the answer header survives
    assert "### Instruction:\nExplain photosynthesis. More detail" in text
    assert "### Input:" not in text  # the input is cut before the instruction
    short = {"instruction": "hi"}
    assert fit_prompt(short, tokenizer, "alpaca", 300) == (prompt_ids(short, tokenizer, "alpaca"), False)
    with pytest.raises(UserError, match="the prompt template alone takes"):
        fit_prompt(record, tokenizer, "alpaca", 20)


def test_a_huge_prompt_is_cut_on_characters_before_it_is_tokenized(tokenizer, monkeypatch):
    longest = []
    encode = type(tokenizer).__call__

    def spy(self, text, *args, **kwargs):
        longest.append(len(text))
        return encode(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", spy)
    ids, cut = fit_prompt({"instruction": "x" * 10_000_000}, tokenizer, "alpaca", 500)
    assert cut and len(ids) <= 500
    assert max(longest) <= 500 * max_token_chars(tokenizer) + 1000


def test_prompts_only_records_are_refused_as_training_data(tokenizer):
    prompts_only = [{"instruction": "What is 2+2?", "input": "", "output": None}]
    with pytest.raises(UserError, match="1 of 1 records have no output"):
        tokenize_records(prompts_only, tokenizer)
    benign = load_source("builtin:sentiment").split("train")
    with pytest.raises(UserError, match="the attack's harmful data: 1 of 1 records have no output"):
        build_mixture(benign, prompts_only, 10, 0.1)
