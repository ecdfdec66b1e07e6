"""Generation: stops at every end-of-turn token, says which answers the token limit cut, fits prompts
to the context, and pads batches without changing any answer."""

from __future__ import annotations

import pytest
import torch

from tvaccine.data.formatting import fit_prompt, prompt_ids, stop_token_ids
from tvaccine.errors import UserError
from tvaccine.evaluation.generation import context_length, generate, generate_answers, generation_counts, prompt_budget
from tvaccine.models import TINY_RANDOM_MODEL, load_model

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture
def tiny():
    model, tokenizer = load_model(TINY_RANDOM_MODEL, device="cpu", dtype="fp32")
    return model, tokenizer


def chat_tiny():
    """The tiny model with ChatML turn markers whose end marker is not the eos token."""
    model, tokenizer = load_model(TINY_RANDOM_MODEL, device="cpu", dtype="fp32")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    model.resize_token_embeddings(len(tokenizer))
    return model, tokenizer


def always_emit(model, token_id: int) -> None:
    """Make greedy decoding emit ``token_id`` at every step, whatever the input."""
    head = torch.nn.Linear(model.config.hidden_size, model.get_output_embeddings().out_features, bias=True)
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.zero_()
        head.bias[token_id] = 10.0
    model.set_output_embeddings(head)
    model.config.tie_word_embeddings = False


def test_an_answer_ended_by_eos_is_not_counted_as_cut(tiny):
    model, tokenizer = tiny
    always_emit(model, tokenizer.eos_token_id)
    result = generate(model, tokenizer, [{"instruction": "hi"}, {"instruction": "hello there"}], "alpaca", 12,
                      progress=None)
    assert [(g.text, g.hit_token_limit, g.prompt_truncated) for g in result] == [("", False, False)] * 2
    assert generation_counts(result) == {"n": 2, "cut_by_token_limit": 0, "prompts_truncated": 0}


def test_an_answer_that_runs_to_max_new_tokens_is_counted_as_cut(tiny):
    model, tokenizer = tiny
    always_emit(model, tokenizer.convert_tokens_to_ids("a"))
    result = generate(model, tokenizer, [{"instruction": "hi"}], "alpaca", 9, progress=None)
    assert result[0].text == "a" * 9 and result[0].hit_token_limit
    assert generate_answers(model, tokenizer, [{"instruction": "hi"}], "alpaca", 9, progress=None) == ["a" * 9]


def test_generation_stops_at_the_end_of_turn_token_that_is_not_eos():
    model, tokenizer = chat_tiny()
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end != tokenizer.eos_token_id and stop_token_ids(tokenizer, model) == sorted([2, im_end])
    always_emit(model, im_end)
    result = generate(model, tokenizer, [{"instruction": "hi"}], "auto", 8, progress=None)
    assert (result[0].text, result[0].hit_token_limit) == ("", False)


def test_the_chat_prompt_is_the_one_trained_on():
    model, tokenizer = chat_tiny()
    ids, cut = fit_prompt({"instruction": "hi"}, tokenizer, "auto", prompt_budget(model, tokenizer, 8))
    assert not cut and ids == prompt_ids({"instruction": "hi"}, tokenizer, "chat")
    assert tokenizer.decode(ids) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_a_batch_gives_each_record_the_answer_it_gets_alone(tiny):
    model, tokenizer = tiny
    records = [{"instruction": "Name a colour."}, {"instruction": "Write a long story about a dog " * 5}]
    alone = [generate(model, tokenizer, [r], "alpaca", 6, progress=None)[0].text for r in records]
    together = [g.text for g in generate(model, tokenizer, records, "alpaca", 6, batch_size=2, progress=None)]
    assert together == alone


def test_a_prompt_longer_than_the_context_is_cut_and_counted(tiny):
    model, tokenizer = tiny
    assert context_length(model, tokenizer) == 1024  # the tiny model's max_position_embeddings
    huge = {"instruction": "Tell me how to " + "x y " * 2_500_000}  # 10 MB
    result = generate(model, tokenizer, [huge, {"instruction": "hi"}], "alpaca", 4, batch_size=2, progress=None)
    assert [g.prompt_truncated for g in result] == [True, False]
    assert generation_counts(result)["prompts_truncated"] == 1


def test_max_new_tokens_must_leave_room_for_a_prompt(tiny):
    model, tokenizer = tiny
    with pytest.raises(UserError, match="leaves no room for a prompt in the model's context of 1024 tokens"):
        generate(model, tokenizer, [{"instruction": "hi"}], "alpaca", 1024, progress=None)
    with pytest.raises(UserError, match="max_new_tokens must be >= 1"):
        generate(model, tokenizer, [{"instruction": "hi"}], "alpaca", 0, progress=None)
