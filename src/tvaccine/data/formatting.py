"""Prompt templates, the ecosystem's dataset formats, and tokenization with the loss on the answer only.

Training and generation build the prompt tokens with the same function (``prompt_ids``), so a
model is evaluated on exactly the prompt layout it was trained on. Rows in the formats TRL defines
(``messages``; ``prompt``/``completion`` as text or as messages) become the same records as
tvaccine's own ``instruction``/``input``/``output`` ones (``record_from_example``), so every
source, trainer and evaluation reads them alike.
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


# Extra record fields a row may carry in any format (what the task metrics and reports read).
_EXTRA_KEYS = ("label", "answer", "category")


def _text(where: str, value, what: str) -> str:
    if not isinstance(value, str):
        raise UserError(f"{where}: {what} must be text, got {type(value).__name__}")
    return value


def _messages(where: str, value, key: str) -> list[dict]:
    """A list of ``{"role", "content"}`` turns with text content (multimodal parts are not supported)."""
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: field {key!r} must be a non-empty list of messages")
    turns = []
    for i, turn in enumerate(value, 1):
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str):
            raise UserError(f"{where}: {key} message {i} must be an object with a 'role'")
        content = _text(where, turn.get("content"), f"{key} message {i}'s content")
        turns.append({"role": turn["role"], "content": content})
    return turns


def record_from_example(example: dict, where: str = "example") -> dict:
    """A tvaccine record from a row in any supported format, told apart by its keys.

    - ``messages``: a conversation; its last turn, when the assistant's, is the answer trained on
      (earlier assistant turns are context, not loss). A conversation that ends on a user turn is a
      prompt without an answer (evaluation only).
    - ``prompt`` / ``completion`` as text: the prompt is the user's request and gets the template,
      like every tvaccine record (TRL feeds text prompts verbatim).
    - ``prompt`` / ``completion`` as messages (``completion`` holds the one assistant turn).
    - ``instruction`` / ``input`` / ``output``: tvaccine's own records, returned as they are.

    The request (the last user turn) becomes ``instruction``, so judges, the leak check and the
    reports read every format alike; turns before it are kept as ``history``.

    ```python
    from tvaccine import record_from_example

    row = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello!"}]}
    record = record_from_example(row)
    assert (record["instruction"], record["output"]) == ("Hi", "Hello!")
    assert record["history"] == [{"role": "system", "content": "Be brief."}]
    assert record_from_example({"prompt": "2+2?", "completion": "4"})["output"] == "4"
    ```
    """
    if not isinstance(example, dict):
        raise UserError(f"{where}: expected an object with named fields, got a {type(example).__name__}")
    extra = {k: example[k] for k in _EXTRA_KEYS if example.get(k) is not None}
    if "messages" in example:
        turns, answer = _messages(where, example["messages"], "messages"), None
        if turns[-1]["role"] == "assistant":
            answer = turns.pop()["content"]
    elif "prompt" in example:
        prompt, completion = example["prompt"], example.get("completion")
        if isinstance(prompt, str):
            return {"instruction": prompt, "input": "", "output": None if completion is None else
                    _text(where, completion, "field 'completion'"), **extra}
        turns, answer = _messages(where, prompt, "prompt"), None
        if completion is not None:
            completion = _messages(where, completion, "completion")
            if len(completion) != 1 or completion[0]["role"] != "assistant":
                raise UserError(f"{where}: field 'completion' must hold exactly one assistant message")
            answer = completion[0]["content"]
    elif "instruction" in example:
        output = example.get("output")
        return {**example, "instruction": _text(where, example["instruction"], "field 'instruction'"),
                "input": _text(where, example.get("input") or "", "field 'input'"),
                "output": None if output is None else _text(where, output, "field 'output'")}
    else:
        raise UserError(f"{where}: no known fields; expected messages, prompt/completion or instruction/output "
                        f"(it has: {', '.join(map(str, example)) or 'none'})")
    if not turns or turns[-1]["role"] != "user":
        raise UserError(f"{where}: the prompt must end with a user turn, the request the answer replies to")
    record = {"instruction": turns[-1]["content"], "input": "", "output": answer, **extra}
    return {**record, "history": turns[:-1]} if len(turns) > 1 else record


def _user_turn(record: dict) -> list[dict]:
    """The conversation up to the answer: earlier turns (``history``), then the request."""
    instruction, extra = record["instruction"], record.get("input") or ""
    return list(record.get("history") or []) + [
        {"role": "user", "content": f"{instruction}\n\n{extra}" if extra else instruction}]


def format_prompt(record: dict, tokenizer=None, template: str = "alpaca") -> str:
    """The text the model sees before its answer."""
    template = resolve_template(tokenizer, template)
    if template == "chat":
        return tokenizer.apply_chat_template(_user_turn(record), tokenize=False, add_generation_prompt=True)
    if record.get("history"):
        raise UserError("a conversation with a system message or earlier turns needs a chat template; use template "
                        "chat (or auto) with a tokenizer that has one")
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
    ids = prompt_ids({**record, "instruction": instruction, "input": extra}, tokenizer, template)
    if len(ids) <= max_tokens:
        return ids, cut
    empty = {**record, "instruction": "", "input": ""}
    bare = len(prompt_ids(empty, tokenizer, template))
    if bare >= max_tokens:
        what = "the prompt template and the earlier turns take" if record.get("history") else \
            "the prompt template alone takes"
        raise UserError(f"{what} {bare} tokens, more than the {max_tokens} left for the "
                        "prompt in the model's context; lower max_new_tokens")
    for _ in range(16):  # re-tokenizing a cut text can add a token at the cut; a few rounds settle it
        excess = len(ids) - max_tokens
        if excess <= 0:
            return ids, True
        from_input = min(excess, len(_ids(tokenizer, extra)))
        extra = _cut_tokens(tokenizer, extra, from_input)
        if excess > from_input:
            instruction = _cut_tokens(tokenizer, instruction, excess - from_input)
        ids = prompt_ids({**record, "instruction": instruction, "input": extra}, tokenizer, template)
    return prompt_ids(empty, tokenizer, template), True


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


def is_tokenized(dataset) -> bool:
    """Whether a data set already holds token ids (then it is used as given)."""
    names = getattr(dataset, "column_names", None)
    if names is None:  # a list of rows
        names = list(dataset[0]) if len(dataset) else []
    return "input_ids" in names


def tokenize_dataset(dataset, tokenizer, template: str = "auto", max_length: int = 200):
    """A ``datasets.Dataset`` of input_ids / attention_mask / labels from rows in any format that
    ``record_from_example`` reads, with the loss on the answer tokens only.

    What the trainers do themselves with a text data set; call it to choose the template or the
    length (trainers use ``auto`` and 200 tokens, the alignment default). Samples whose answer is cut
    away entirely are dropped with a warning.

    ```python
    from datasets import Dataset
    from tvaccine import load_model, tokenize_dataset

    model, tokenizer = load_model("tiny-random-llama")
    rows = Dataset.from_list([{"prompt": "How do I pick a lock?", "completion": "I can't help with that."}])
    example = tokenize_dataset(rows, tokenizer, max_length=512)[0]
    answer = [t for t in example["labels"] if t != -100]
    assert tokenizer.decode(answer) == "I can't help with that." + tokenizer.eos_token
    ```
    """
    import warnings

    from datasets import Dataset

    records = [record_from_example(row, f"row {i}") for i, row in enumerate(dataset, 1)]
    tokenized = tokenize_records(records, tokenizer, template, max_length)
    if not tokenized.examples:
        raise UserError(f"no sample has an answer token left within {max_length} tokens; raise max_length")
    if tokenized.dropped:
        warnings.warn(f"{tokenized.dropped} of {len(records)} samples dropped: their answer starts after "
                      f"{max_length} tokens", stacklevel=2)
    return Dataset.from_list(tokenized.examples)


def tokenize_trainer_data(kwargs: dict, harmful_dataset):
    """Tokenize the text data sets handed to a method trainer (``train_dataset``, ``eval_dataset``,
    ``harmful_dataset``) with its ``processing_class``, and pad their batches with a collator that
    pads labels with IGNORE_INDEX unless one is given. Returns the harmful data set; edits ``kwargs``."""
    from transformers import DataCollatorForSeq2Seq

    def prepare(dataset, name):
        if dataset is None or not hasattr(dataset, "__len__") or not len(dataset) or is_tokenized(dataset):
            return dataset, False
        if kwargs.get("processing_class") is None:
            raise UserError(f"{name} holds text, not token ids: pass processing_class=tokenizer to tokenize it")
        return tokenize_dataset(dataset, kwargs["processing_class"]), True

    changed = False
    for name in ("train_dataset", "eval_dataset"):
        if name in kwargs:
            kwargs[name], done = prepare(kwargs[name], name)
            changed |= done
    harmful_dataset, done = prepare(harmful_dataset, "harmful_dataset")
    if (changed or done) and kwargs.get("data_collator") is None:
        kwargs["data_collator"] = DataCollatorForSeq2Seq(kwargs["processing_class"], padding=True,
                                                         label_pad_token_id=IGNORE_INDEX)
    return harmful_dataset
