"""Where a run's wall time goes: named phases, each timed exclusively of the phases nested in it.

``with timed("attack sft"):`` around a stage and ``with timed("model load"):`` inside it give the entries
``attack sft`` (what the stage did itself) and ``attack sft / model load``. Because nested time is
taken out of the enclosing phase, the entries add up to the time spent inside the outermost phases,
and ``timing.json`` can show every second of a run once.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

_totals: dict[str, float] = defaultdict(float)
_counts: dict[str, int] = defaultdict(int)
_stack: list[list] = []  # [name, start of the current uninterrupted stretch]


@contextmanager
def timed(name: str):
    now = time.perf_counter()
    if _stack:
        _add(_key(), now - _stack[-1][1])
    _stack.append([name, now])
    key = _key()
    _counts[key] += 1
    try:
        yield
    finally:
        now = time.perf_counter()
        _add(key, now - _stack[-1][1])
        _stack.pop()
        if _stack:
            _stack[-1][1] = now


def _key() -> str:
    return " / ".join(name for name, _ in _stack)


def _add(key: str, seconds: float) -> None:
    _totals[key] += seconds


def add_phase(name: str, seconds: float) -> None:
    """Time measured elsewhere (a child process's own breakdown), nested under the current phase and
    taken out of it."""
    key = " / ".join([*(n for n, _ in _stack), name])
    _totals[key] += seconds
    _counts[key] += 1
    if _stack:
        _totals[_key()] -= seconds


def reset() -> None:
    _totals.clear()
    _counts.clear()


def snapshot() -> dict[str, dict]:
    """phase -> {"s": seconds, "count": times entered}, in the order the phases were first entered; the
    open phases are brought up to now first."""
    if _stack:
        now = time.perf_counter()
        _add(_key(), now - _stack[-1][1])
        _stack[-1][1] = now
    return {key: {"s": seconds, "count": _counts[key]} for key, seconds in _totals.items()}


def breakdown(wall_s: float, since: dict | None = None) -> dict:
    """The content of ``timing.json``: the wall time, every phase (the time added after the snapshot
    ``since``, when given), and what no phase accounts for."""
    phases = snapshot()
    if since:
        phases = {key: {"s": p["s"] - since.get(key, {}).get("s", 0.0),
                        "count": p["count"] - since.get(key, {}).get("count", 0)} for key, p in phases.items()}
        phases = {key: p for key, p in phases.items() if p["count"] or abs(p["s"]) > 1e-9}
    accounted = sum(p["s"] for p in phases.values())
    return {"wall_s": wall_s, "phases": phases, "accounted_s": accounted, "unaccounted_s": wall_s - accounted}
