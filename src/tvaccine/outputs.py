"""Output folders that hold a finished result or nothing, with one writer at a time.

A run works in ``<out>.partial`` and renames it to ``<out>`` when it is done, so a crash or Ctrl-C
never leaves something that looks finished. ``<out>.lock`` next to them holds the writer's pid under
an exclusive ``flock``: a second run writing the same ``--out`` is refused (two writers would delete
each other's work), and because the kernel drops the lock when its process dies, a lock file left by
a killed run is taken over instead of blocking forever.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

from tvaccine.errors import Interrupted, UserError
from tvaccine.results_io import write_json

CHECKPOINT_GLOB = "checkpoint-*"


def partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def check_output_path(out: Path) -> None:
    """Refuse, before any work, an output path that cannot become a folder this process writes."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder")
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot create the output {out}: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the output {out}: {ancestor} is not writable")


def last_checkpoint_step(folder: Path) -> int | None:
    steps = [int(p.name.rsplit("-", 1)[1]) for p in folder.glob(CHECKPOINT_GLOB) if p.name.rsplit("-", 1)[1].isdigit()]
    return max(steps) if steps else None


class OutputLock:
    """``<target>.lock``: held from ``acquire`` to ``release``; a second holder is refused with exit code 2."""

    def __init__(self, target: Path):
        self.target = target
        self.path = target.with_name(target.name + ".lock")
        self._fd: int | None = None
        self._made: list[Path] = []  # folders created for the lock file, removed again if left empty

    def acquire(self) -> None:
        self._made = _make_parents(self.path.parent)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise UserError(f"{self.target} is being written by another tvaccine run (pid {owner}); wait for "
                                "it to finish, or write elsewhere") from None
            try:
                same_file = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)  # the previous holder removed the file between our open and our lock: again
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still locked, so no one locks the unlinked file
        os.close(self._fd)
        self._fd = None

    def remove_made_folders(self) -> None:
        for folder in reversed(self._made):
            try:
                folder.rmdir()
            except OSError:
                return

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the ones created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    missing.reverse()
    for path in missing:
        path.mkdir()
    return missing


class OutputDir:
    """The work folder ``<out>.partial`` of one run, renamed to ``<out>`` when the ``with`` block ends
    without an error.

    On an error or Ctrl-C, a work folder with a checkpoint is kept for ``--resume``; one without is
    removed, with the lock and any folder made for it, so a refused run leaves nothing behind. With
    ``training_args``, the processes of a distributed run share it: rank 0 prepares it while the
    others wait, and only rank 0 writes the result.
    """

    def __init__(self, out: str | Path, overwrite: bool = False, resume: bool = False, spec: dict | None = None,
                 training_args=None):
        self.out = Path(out)
        self.path = partial_dir(self.out)
        self.overwrite, self.resume, self.spec, self.training_args = overwrite, resume, spec, training_args
        self.writer = training_args is None or training_args.process_index == 0
        self.resumed_from: int | None = None
        self.lock = OutputLock(self.out)

    def __enter__(self) -> OutputDir:
        if self.training_args is None:
            self._prepare()
        else:
            with self.training_args.main_process_first(local=False, desc="preparing the output directory"):
                if self.writer:
                    self._prepare()
                elif self.resume:
                    self.resumed_from = last_checkpoint_step(self.path)
        return self

    def _prepare(self) -> None:
        check_output_path(self.out)
        if self.out.is_dir() and any(self.out.iterdir()) and not self.overwrite:
            raise UserError(f"output directory {self.out} exists and is not empty; pass --overwrite to replace it")
        spec = json.loads(json.dumps(self.spec, default=str)) if self.spec is not None else None
        if self.resume:  # checked before the lock is taken: a refused resume leaves nothing behind
            if not self.path.is_dir() or last_checkpoint_step(self.path) is None:
                raise UserError(f"nothing to resume: {self.path} holds no checkpoint")
            saved = self.path / "spec.json"
            if spec is not None and (not saved.is_file() or json.loads(saved.read_text()) != spec):
                raise UserError(f"cannot resume {self.path}: it was started with a different configuration")
        self.lock.acquire()
        try:
            if self.resume:
                self.resumed_from = last_checkpoint_step(self.path)
                return
            if self.path.exists():
                shutil.rmtree(self.path)
            self.path.mkdir()
            if spec is not None:
                write_json(self.path / "spec.json", spec)
        except BaseException:
            self._abandon()
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.writer:
            return
        if exc_type is None:
            self._finish()
            return
        step = last_checkpoint_step(self.path) if self.path.is_dir() else None
        if step is None:
            shutil.rmtree(self.path, ignore_errors=True)
        self._abandon()
        if issubclass(exc_type, KeyboardInterrupt) and not isinstance(exc, Interrupted):
            raise Interrupted(self._interrupt_hint(step)) from exc

    def _interrupt_hint(self, step: int | None) -> str:
        if step is not None:
            return (f"the checkpoint of step {step} is kept in {self.path}: rerun the same command with --resume "
                    "to continue from it, or without it to start over")
        advice = ""
        if self.training_args is not None and self.training_args.save_strategy == "no":
            advice = " (a run started with --save-steps N keeps checkpoints to continue from)"
        return f"interrupted before the first checkpoint, nothing was kept: rerun the command to start over{advice}"

    def _finish(self) -> None:
        for checkpoint in self.path.glob(CHECKPOINT_GLOB):  # only needed to resume; the result is saved
            shutil.rmtree(checkpoint)
        if self.out.exists():
            shutil.rmtree(self.out)
        self.path.rename(self.out)
        self.lock.release()

    def _abandon(self) -> None:
        self.lock.release()
        self.lock.remove_made_folders()
