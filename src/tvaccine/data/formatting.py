"""Prompt templates and tokenization with the loss on response tokens only."""

from __future__ import annotations

from dataclasses import dataclass

from tvaccine.errors import UserError

IGNORE_INDEX = -100
TEMPLATES = ("alpaca", "chat")

# The Alpaca prompt format, used by the Vaccine / T-Vaccine papers for training and evaluation.
_ALPACA_HEAD = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
_ALPACA_HEAD_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                      "context. Write a response that appropriately completes the request.")


def format_prompt(record: dict, tokenizer=None, template: str = "alpaca") -> str:
    """The text the model sees before its answer."""
    instruction, extra = record["instruction"], record.get("input") or ""
    if template == "alpaca":
        if extra:
            return f"{_ALPACA_HEAD_INPUT}\n\n### Instruction:\n{instruction}\n\n### Input:\n{extra}\n\n### Response:\n"
        return f"{_ALPACA_HEAD}\n\n### Instruction:\n{instruction}\n\n### Response:\n"
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise UserError("--template chat needs a tokenizer with a chat template; use --template alpaca")
        content = f"{instruction}\n\n{extra}" if extra else instruction
        return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
    raise UserError(f"unknown template {template!r}; use one of {', '.join(TEMPLATES)}")


@dataclass
class Tokenized:
    examples: list[dict]
    dropped: int  # samples whose response would be truncated away entirely


def tokenize_records(records: list[dict], tokenizer, template: str = "alpaca", max_length: int = 200) -> Tokenized:
    """input_ids / attention_mask / labels per record; prompt tokens are masked with -100.

    Truncation cuts from the end; a sample left with no response token is dropped and counted,
    never kept silently with a zero loss.
    """
    examples, dropped = [], 0
    for record in records:
        prompt_ids = tokenizer(format_prompt(record, tokenizer, template), add_special_tokens=False)["input_ids"]
        if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
            prompt_ids = [tokenizer.bos_token_id] + prompt_ids
        answer_ids = tokenizer(record["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt_ids + answer_ids)[:max_length]
        labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_length]
        if all(label == IGNORE_INDEX for label in labels):
            dropped += 1
            continue
        examples.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return Tokenized(examples, dropped)
