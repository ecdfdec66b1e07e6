"""Prompt templates, and tokenization with the loss on the answer tokens only.

Training and generation build the prompt tokens with the same function (``prompt_ids``), so a
model is evaluated on exactly the prompt layout it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvaccine.data.sources import require_outputs
from tvaccine.errors import UserError

IGNORE_INDEX = -100
# "auto": the tokenizer's chat template when it has one (chat-tuned models), else Alpaca (base models).
TEMPLATES = ("auto", "alpaca", "chat")
# End-of-turn markers of the common chat formats (ChatML, Llama 3, Gemma, Phi-3). A chat model ends
# its answer with one of them, which is not always its tokenizer's eos token.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>")

# The Alpaca prompt format, used by the Vaccine / T-Vaccine papers for training and evaluation.
_ALPACA_HEAD = ("Below is an instruction that describes a task. "
                "Write a response that appropriately completes the request.")
_ALPACA_HEAD_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                      "context. Write a response that appropriately completes the request.")


def has_chat_template(tokenizer) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def resolve_template(tokenizer, name: str) -> str:
    """``alpaca`` or ``chat`` for this tokenizer: ``auto`` picks chat when the tokenizer has a chat template."""
    if name not in TEMPLATES:
        raise UserError(f"unknown template {name!r}; use one of {', '.join(TEMPLATES)}")
    if name == "auto":
        return "chat" if has_chat_template(tokenizer) else "alpaca"
    if name == "chat" and not has_chat_template(tokenizer):
        raise UserError("template chat needs a tokenizer with a chat template; use template alpaca or auto")
    return name


def _user_turn(record: dict) -> list[dict]:
    instruction, extra = record["instruction"], record.get("input") or ""
    return [{"role": "user", "content": f"{instruction}\n\n{extra}" if extra else instruction}]


def format_prompt(record: dict, tokenizer=None, template: str = "alpaca") -> str:
    """The text the model sees before its answer."""
    template = resolve_template(tokenizer, template)
    if template == "chat":
        return tokenizer.apply_chat_template(_user_turn(record), tokenize=False, add_generation_prompt=True)
    instruction, extra = record["instruction"], record.get("input") or ""
    if extra:
        return f"{_ALPACA_HEAD_INPUT}\n\n### Instruction:\n{instruction}\n\n### Input:\n{extra}\n\n### Response:\n"
    return f"{_ALPACA_HEAD}\n\n### Instruction:\n{instruction}\n\n### Response:\n"


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """Every token that ends an answer: eos (the tokenizer's and the model's generation config's)
    and the end-of-turn markers of :data:`END_OF_TURN_TOKENS` that this vocabulary holds."""
    ids = [tokenizer.eos_token_id]
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured]
    vocab = tokenizer.get_vocab()
    ids += [vocab[token] for token in END_OF_TURN_TOKENS if token in vocab]
    return sorted({i for i in ids if i is not None})


def max_token_chars(tokenizer) -> int:
    """The longest token's length in characters: text cut to n times this keeps at least n tokens,
    so a cut on characters (cheap) before tokenizing never removes what the token budget keeps."""
    return max(8, max(len(token) for token in tokenizer.get_vocab()))


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_ids(record: dict, tokenizer, template: str) -> list[int]:
    """The prompt's token ids. A chat template writes its own special tokens; Alpaca gets the bos
    token where the tokenizer adds one."""
    template = resolve_template(tokenizer, template)
    ids = _ids(tokenizer, format_prompt(record, tokenizer, template))
    if template == "alpaca" and tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
        ids = [tokenizer.bos_token_id] + ids
    return ids


def answer_ids(record: dict, tokenizer, template: str, stops: list[int]) -> list[int]:
    """The answer's token ids, ending the way the template ends an assistant turn (``stops``: the
    ids that end an answer; eos is appended when the template's ending holds none of them)."""
    template = resolve_template(tokenizer, template)
    if template == "alpaca":
        return _ids(tokenizer, record["output"]) + [tokenizer.eos_token_id]
    prompt = format_prompt(record, tokenizer, template)
    conversation = _user_turn(record) + [{"role": "assistant", "content": record["output"]}]
    full = tokenizer.apply_chat_template(conversation, tokenize=False)
    if not full.startswith(prompt):
        raise UserError("the tokenizer's chat template does not write the prompt as the start of the conversation, "
                        "so the answer cannot be told apart for the loss; use template alpaca")
    ids = _ids(tokenizer, full[len(prompt):])
    ends = [i for i, token in enumerate(ids) if token in stops]
    # What a template writes after the end-of-turn token (a line break) is never generated.
    return ids[:ends[-1] + 1] if ends else ids + [tokenizer.eos_token_id]


def _cut_tokens(tokenizer, text: str, drop: int) -> str:
    """``text`` without its last ``drop`` tokens (a broken multi-byte character at the end is removed)."""
    ids = _ids(tokenizer, text)
    return tokenizer.decode(ids[:max(len(ids) - drop, 0)]).rstrip("\ufffd")


def fit_prompt(record: dict, tokenizer, template: str, max_tokens: int | None,
               token_chars: int | None = None) -> tuple[list[int], bool]:
    """The prompt's token ids cut to at most ``max_tokens``, and whether anything was cut.

    The template stays whole, answer header included, since without it the model continues the
    text instead of answering; the user's text loses its end, the input before the instruction,
    since a request states what it asks for first. Text is first cut on characters, so a
    megabyte-long prompt is never tokenized whole (``token_chars``: ``max_token_chars(tokenizer)``,
    passed in by callers that fit many prompts, since it reads the whole vocabulary).
    """
    if max_tokens is None:
        return prompt_ids(record, tokenizer, template), False
    limit = max_tokens * (token_chars or max_token_chars(tokenizer))
    instruction, extra = record["instruction"], record.get("input") or ""
    cut = len(instruction) > limit or len(extra) > limit
    instruction, extra = instruction[:limit], extra[:limit]
    ids = prompt_ids({"instruction": instruction, "input": extra}, tokenizer, template)
    if len(ids) <= max_tokens:
        return ids, cut
    bare = len(prompt_ids({"instruction": "", "input": ""}, tokenizer, template))
    if bare >= max_tokens:
        raise UserError(f"the prompt template alone takes {bare} tokens, more than the {max_tokens} left for the "
                        "prompt in the model's context; lower max_new_tokens")
    for _ in range(16):  # re-tokenizing a cut text can add a token at the cut; a few rounds settle it
        excess = len(ids) - max_tokens
        if excess <= 0:
            return ids, True
        from_input = min(excess, len(_ids(tokenizer, extra)))
        extra = _cut_tokens(tokenizer, extra, from_input)
        if excess > from_input:
            instruction = _cut_tokens(tokenizer, instruction, excess - from_input)
        ids = prompt_ids({"instruction": instruction, "input": extra}, tokenizer, template)
    return prompt_ids({"instruction": "", "input": ""}, tokenizer, template), True


@dataclass
class Tokenized:
    examples: list[dict]
    dropped: int  # samples whose response would be truncated away entirely


def tokenize_records(records: list[dict], tokenizer, template: str = "alpaca", max_length: int = 200) -> Tokenized:
    """input_ids / attention_mask / labels per record; prompt tokens are masked with IGNORE_INDEX.

    Truncation cuts from the end; a sample left with no response token is dropped and counted,
    never kept silently with a zero loss.
    """
    require_outputs(records, "training data")
    template = resolve_template(tokenizer, template)
    stops = stop_token_ids(tokenizer)
    limit = max_length * max_token_chars(tokenizer)  # a cheap cut first: no need to tokenize what is cut anyway
    examples, dropped = [], 0
    for record in records:
        record = {**record, "instruction": record["instruction"][:limit], "input": (record.get("input") or "")[:limit],
                  "output": record["output"][:limit]}
        prompt = prompt_ids(record, tokenizer, template)
        answer = answer_ids(record, tokenizer, template, stops)
        ids = (prompt + answer)[:max_length]
        labels = ([IGNORE_INDEX] * len(prompt) + answer)[:max_length]
        if all(label == IGNORE_INDEX for label in labels):
            dropped += 1
            continue
        examples.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return Tokenized(examples, dropped)
