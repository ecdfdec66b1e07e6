"""A registry of named data sources.

A source spec on the command line reads ``name[:arg][@split]``:
``builtin:safety``, ``sst2`` (the data mirror, else the hub: ``data/mirror.py``),
``sst2:copies/sst2`` (local files), ``file:my.jsonl``, ``beavertails@test``. Every source yields plain records:
dicts with ``instruction``, ``input`` (may be ""), ``output`` (None for prompts-only
files, which serve only as evaluation prompts) and, where the data has them,
``label`` / ``answer`` / ``category``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from tvaccine.data.mirror import local_copy
from tvaccine.errors import UserError

Record = dict


@dataclass
class Source:
    """A loaded source: named splits of records, plus what a task needs to be scored."""

    name: str
    splits: dict[str, list[Record]]
    # How fine-tune accuracy is scored on this source ("sentiment", "topic", "number",
    # or None for open-ended text that only a judge can score).
    metric: str | None = None
    # Words the answer must contain for the classification metrics, by label.
    label_words: dict = field(default_factory=dict)
    description: str = ""

    def split(self, name: str) -> list[Record]:
        if name not in self.splits:
            raise UserError(f"source {self.name!r} has no split {name!r} (it has: {', '.join(self.splits)})")
        records = self.splits[name]
        if not records:
            raise UserError(f"source {self.name!r}: split {name!r} is empty")
        return records


# Splits that were renamed: spec -> the one-line reason shown to whoever still names them.
RENAMED_SPECS = {"builtin:safety@harmful": "builtin:safety@harmful was renamed builtin:safety@compliance_template: "
                                           "its answers are a harmless template, not harm; real harmful answers: "
                                           "beavertails"}

SourceLoader = Callable[[str | None], Source]
_REGISTRY: dict[str, tuple[SourceLoader, str]] = {}


def register_source(name: str, help: str):
    """Decorator: register ``loader(arg) -> Source`` under ``name``."""

    def wrap(loader: SourceLoader) -> SourceLoader:
        _REGISTRY[name] = (loader, help)
        return loader

    return wrap


def available_sources() -> dict[str, str]:
    return {name: help for name, (_, help) in sorted(_REGISTRY.items())}


def parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """Split ``name[:arg][@split]``; the ``@split`` suffix is only taken after the last path separator."""
    if not spec or not spec.strip():
        raise UserError("empty data source name")
    split = None
    head, sep, tail = spec.rpartition("@")
    if sep and tail and "/" not in tail and ":" not in tail:
        spec, split = head, tail
    name, _, arg = spec.partition(":")
    return name, (arg or None), split


def load_source(spec: str) -> Source:
    """The records of a source spec ``name[:arg][@split]`` (``tvaccine data list`` names the sources).

    ```python
    from tvaccine import load_source

    refusals = load_source("builtin:safety@align").split("align")
    print(refusals[0]["instruction"], "->", refusals[0]["output"])
    ```
    """
    if spec in RENAMED_SPECS:
        raise UserError(RENAMED_SPECS[spec])
    name, arg, split = parse_spec(spec)
    if name not in _REGISTRY:
        raise UserError(f"unknown data source {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    source = _REGISTRY[name][0](arg if arg is not None else local_copy(name))
    if split is not None:
        source = Source(source.name, {split: source.split(split)}, source.metric, source.label_words,
                        source.description)
    if not any(source.splits.values()):
        raise UserError(f"data source {spec!r} is empty")
    return source


def pick_split(source: Source, *preferred: str) -> list[Record]:
    """The first of ``preferred`` that the source has; a single-split source serves every role."""
    for name in preferred:
        if source.splits.get(name):
            return source.splits[name]
    if len(source.splits) == 1:
        return source.split(next(iter(source.splits)))
    raise UserError(f"source {source.name!r} has none of the splits {', '.join(preferred)} "
                    f"(it has: {', '.join(source.splits)}); name one with '@split'")


def require_outputs(records: list[Record], what: str) -> None:
    """Training data needs an answer per prompt; prompts-only files (no output field) serve evaluation only."""
    missing = sum(r.get("output") is None for r in records)
    if missing:
        raise UserError(f"{what}: {missing} of {len(records)} records have no output (answer); prompts-only data "
                        "can only be evaluation prompts")
