"""Fine-tune accuracy (FA) per task, scored the way the Vaccine / T-Vaccine papers score it."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """The last number in an answer (GSM8K convention), without thousands separators."""
    numbers = _NUMBER.findall(text or "")
    if not numbers:
        return None
    value = numbers[-1].replace(",", "").rstrip(".")
    return value[:-2] if value.endswith(".0") else value


def is_correct(metric: str, record: dict, answer: str, label_words: dict) -> bool:
    """sentiment / topic: the label word appears in the answer (case-insensitive, and for sentiment
    the opposite word must not appear too); number: the final number equals the answer."""
    if metric == "number":
        return final_number(answer) == final_number(str(record["answer"]))
    words = {int(k): v.lower() for k, v in label_words.items()}
    text = (answer or "").lower()
    target = words[int(record["label"])]
    if target not in text:
        return False
    # An answer that names every class is not a prediction.
    return not any(word in text for label, word in words.items() if label != int(record["label"])
                   and word not in target)


def accuracy(metric: str | None, records: list[dict], answers: list[str], label_words: dict) -> float | None:
    """Percent correct, or None for open-ended tasks (scored only by a configured judge; never invented)."""
    if metric is None or not records:
        return None
    correct = sum(is_correct(metric, r, a, label_words) for r, a in zip(records, answers))
    return 100.0 * correct / len(records)
