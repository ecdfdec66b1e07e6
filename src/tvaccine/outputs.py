"""Output folders that hold a finished result or nothing, with one writer at a time.

A run works in ``<out>.partial`` and renames it to ``<out>`` when it is done, so a crash or Ctrl-C
never leaves something that looks finished. ``<out>.lock`` next to them holds the writer's pid under
an exclusive ``flock``: a second run writing the same ``--out`` is refused (two writers would delete
each other's work), and because the kernel drops the lock when its process dies, a lock file left by
a killed run is taken over instead of blocking forever.

Nothing tvaccine did not write is ever deleted. Every output folder carries the marker ``.tvaccine``
(its version and kind); ``--overwrite`` replaces only a folder that carries it (or, for folders
written before the marker existed, the files those versions always wrote), and never the current
folder or a parent of it, the home folder, a filesystem root or a git working tree. A ``<out>.partial``
or ``<out>.lock`` that tvaccine did not write is refused, not removed.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sys
from pathlib import Path

from tvaccine.errors import Interrupted, UserError
from tvaccine.results_io import write_json

CHECKPOINT_GLOB = "checkpoint-*"
MARKER = ".tvaccine"
RESULTS_KIND = "results"  # the marker's kind in a `tvaccine run` results folder; any other output: "output"


def partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def write_marker(folder: Path, kind: str = "output") -> None:
    from tvaccine import __version__

    write_json(folder / MARKER, {"tvaccine": __version__, "kind": kind})


def _json_object(path: Path) -> dict | None:
    if path.is_symlink() or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def output_kind(folder: Path) -> str | None:
    """The kind of a folder tvaccine wrote (``results``, ``output``, or ``partial`` for an old work
    folder), or None for any other folder, which is never replaced."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return None
    marker = _json_object(folder / MARKER)
    if marker is not None and "tvaccine" in marker:
        return str(marker.get("kind") or "output")
    # Written before the marker existed: recognised by files that those versions always wrote.
    environment = _json_object(folder / "environment.json")  # align, attack and run: with the version
    if environment is not None and "tvaccine" in environment:
        return RESULTS_KIND if (folder / "run_config.yaml").is_file() else "output"
    if _json_object(folder / "scores.json") is not None and _json_object(folder / "eval_spec.json") is not None:
        return "output"  # evaluate
    norms = _json_object(folder / "layer_norms.json")
    if norms is not None and "norms" in norms:
        return "output"  # layers
    if _json_object(folder / "spec.json") is not None and last_checkpoint_step(folder) is not None:
        return "partial"  # an interrupted align or attack kept for --resume
    return None


def _is_empty_folder(folder: Path) -> bool:
    return folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir())


def check_replaceable(folder: Path, overwrite: bool, what: str = "output directory", flag: str = "--out",
                      kind: str | None = None, reuse: bool = False) -> bool:
    """Whether ``folder`` holds a tvaccine output to replace (True) or nothing to replace (False).
    Refuses a non-empty folder that tvaccine did not write (of ``kind``, when given), and one of its
    own without ``overwrite`` unless ``reuse`` keeps it; checked before any work, so a refused run
    changes nothing."""
    if not folder.exists() or _is_empty_folder(folder):
        return False
    found = output_kind(folder)
    if found is None or found == "partial" or (kind is not None and found != kind):
        described = "a tvaccine results folder" if kind == RESULTS_KIND else "a tvaccine output"
        raise UserError(f"{what} {folder} exists and is not empty, and is not {described} (no {MARKER} "
                        f"marker): choose another {flag}; --overwrite replaces only tvaccine's own folders")
    if not overwrite:
        if reuse:
            return False
        raise UserError(f"{what} {folder} exists and is not empty; pass --overwrite to replace it")
    check_removable(folder)
    return True


def check_removable(folder: Path) -> None:
    """Refuse, before any work, a folder this process could not delete entirely: a failed delete at
    the end would leave the finished result stranded in its work folder."""
    def unreadable(error: OSError) -> None:
        raise UserError(f"cannot replace {folder}: {error.filename} cannot be read ({error.strerror})")

    for parent in [folder.parent, *(Path(p) for p, _, _ in os.walk(folder, onerror=unreadable))]:
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UserError(f"cannot replace {folder}: {parent} is not writable")


def _refuse_special(out: Path, what: str) -> None:
    """The folders that are never an output, whatever they hold: a symbolic link (its target would be
    replaced by a rename), the current folder or a parent of it, the home folder, a filesystem root,
    a git working tree."""
    if out.is_symlink():
        raise UserError(f"{what} {out} is a symbolic link (to {os.readlink(out)}): give the folder itself or "
                        "a new name")
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        here = "the current folder" if resolved == cwd else "a parent of the current folder"
        raise UserError(f"{what} {str(out)!r} is {here}: name a new folder for it, e.g. runs/x")
    if out.name in ("", ".", ".."):
        raise UserError(f"{what} {str(out)!r} does not name a folder: name a new one, e.g. runs/x")
    if resolved == Path.home().resolve():
        raise UserError(f"{what} {out} is the home folder: name a new folder for it, e.g. runs/x")
    if resolved == Path(resolved.anchor):
        raise UserError(f"{what} {out} is a filesystem root: name a new folder for it, e.g. runs/x")
    if (resolved / ".git").exists():
        raise UserError(f"{what} {out} is a git working tree: name a new folder for it, e.g. runs/x")
    walked = Path(out.anchor or ".")
    for part in out.parts[1:] if out.anchor else out.parts:
        if part == ".." and not walked.exists():
            raise UserError(f"{what} {out}: {walked} does not exist, so '..' after it leads nowhere; write the "
                            "path without '..'")
        walked = walked / part


def check_output_path(out: Path, what: str = "output") -> None:
    """Refuse, before any work, an output path that cannot become a folder this process writes."""
    out = Path(out)
    _refuse_special(out, what)
    if out.exists() and not out.is_dir():
        raise UserError(f"{what} {out} exists and is not a folder")
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot create the {what} {out}: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the {what} {out}: {ancestor} is not writable")
    for sibling in (partial_dir(out), out.with_name(out.name + ".lock")):
        if sibling.is_symlink():
            raise UserError(f"{sibling} is a symbolic link that tvaccine did not make: move it away")


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
        _check_lock_file(self.path)
        self._made = _make_parents(self.path.parent)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
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


def _check_lock_file(path: Path) -> None:
    """A lock file holds a pid or nothing; any other file of that name is the user's, and is kept."""
    if not path.is_symlink() and not path.exists():
        return
    content = None
    if path.is_file() and not path.is_symlink():
        try:
            with open(path, "rb") as handle:
                content = handle.read(65)
        except OSError:
            pass
    if content is None or not re.fullmatch(rb"\d{0,20}\n?", content):
        raise UserError(f"{path} exists and is not a tvaccine lock file: move it away, or write elsewhere")


def _silence_open_progress_bars() -> None:
    """A run stopped by an error or Ctrl-C leaves the Trainer's bar open, and tqdm would print it once
    more when the process exits, after the error line (and after pytest's summary)."""
    bars = getattr(getattr(sys.modules.get("tqdm.std"), "tqdm", None), "_instances", None)
    for bar in list(bars or []):
        bar.disable = True  # close() then writes nothing
        bars.discard(bar)  # nor does the bar hold a line that later bars would be placed below


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
        check_output_path(self.out)  # before any name is derived from it ('.' has none)
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
        check_replaceable(self.out, self.overwrite)
        if (self.path.exists() or self.path.is_symlink()) and not _is_empty_folder(self.path):
            if output_kind(self.path) is None:
                raise UserError(f"{self.path} exists and tvaccine did not write it (no {MARKER} marker): move it "
                                "away, or write elsewhere")
            if not self.resume:
                check_removable(self.path)
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
            write_marker(self.path)
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
        _silence_open_progress_bars()
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
        try:
            if self.out.is_symlink() or (not _is_empty_folder(self.out) and self.out.exists()
                                         and output_kind(self.out) is None):
                raise UserError(f"{self.out} was filled by something else during the run and is kept; the "
                                f"finished result is in {self.path}")
            if self.out.exists():
                shutil.rmtree(self.out)
            self.path.rename(self.out)
        except OSError as exc:
            raise UserError(f"could not replace {self.out} ({exc.strerror or exc}); the finished result is in "
                            f"{self.path}") from None
        finally:
            self.lock.release()

    def _abandon(self) -> None:
        self.lock.release()
        self.lock.remove_made_folders()
