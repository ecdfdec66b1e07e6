"""Result files: written atomically with the versions that produced them, read back with clear errors."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from pathlib import Path

from tvaccine.errors import UserError


def write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file and rename: a crash never leaves a half-written result."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def write_json(path: str | Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_jsonl(path: str | Path, rows) -> None:
    write_text(path, "".join(json.dumps(row, default=str) + "\n" for row in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    """The objects of a JSON Lines result file; a missing, empty or damaged file is one line naming
    the file (and the line), since results are read back by ``report`` and ``evaluate --rescore``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    rows = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: line {number} is not valid JSON ({e.msg}); the file is damaged") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}: line {number} holds a {type(row).__name__}, expected a JSON object")
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: the file is empty")
    return rows


def environment() -> dict:
    import peft
    import torch
    import transformers

    import tvaccine

    return {"tvaccine": tvaccine.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "git_commit": _git_commit()}


def _git_commit() -> str | None:
    """The checkout's commit, with ``+dirty`` when tracked files differ from it (a worktree's too);
    None outside a git checkout."""
    import subprocess

    root = str(Path(__file__).resolve().parents[2])
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")
