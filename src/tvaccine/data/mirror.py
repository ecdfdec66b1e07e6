"""A local mirror of the public datasets, so that presets name datasets rather than paths.

``TVACCINE_DATA`` points at a folder with one sub-folder per dataset (``beavertails/``, ``sst2/``, ...).
A sub-folder holds either the dataset's own files, in the layout ``name:<path>`` reads (a copy of the
papers' files), or a dump of the hub's rows that ``tvaccine data fetch NAME`` wrote while online
(``hub/<split>.jsonl`` and ``hub/source.json``). A source named without a path reads the mirror first
and the Hugging Face hub (through ``datasets`` and its cache) only when the mirror has no copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tvaccine.errors import UserError
from tvaccine.results_io import write_json, write_jsonl

MIRROR_ENV = "TVACCINE_DATA"

# source name -> (mirror folder, datasets.load_dataset arguments); decodingtrust has no hub copy.
HUB: dict[str, tuple[str, tuple, dict]] = {
    "beavertails": ("beavertails", ("PKU-Alignment/BeaverTails",), {}),
    "sst2": ("sst2", ("glue", "sst2"), {}),
    "agnews": ("ag_news", ("ag_news",), {}),
    "gsm8k": ("gsm8k", ("gsm8k", "main"), {}),
    "alpacaeval": ("alpaca_eval", ("tatsu-lab/alpaca_eval", "alpaca_eval"), {}),
    "advbench": ("advbench", ("walledai/AdvBench",), {}),
    "hhrlhf": ("hh_rlhf_harmless", ("Anthropic/hh-rlhf",), {"data_dir": "harmless-base"}),
    "decodingtrust": ("decoding_trust", (), {}),
}
# The hub splits a source reads (the rest of a dataset is not fetched): BeaverTails has 330k splits too.
HUB_SPLITS = {"beavertails": ("30k_train", "30k_test"), "hhrlhf": ("test",)}


def mirror_root() -> Path | None:
    root = os.environ.get(MIRROR_ENV)
    return Path(root).expanduser() if root else None


def _folder(name: str) -> Path | None:
    root = mirror_root()
    if root is None or name not in HUB:
        return None
    folder = root / HUB[name][0]
    return folder if folder.is_dir() else None


def local_copy(name: str) -> str | None:
    """The mirror's copy of ``name`` in the dataset's own file layout, as a ``name:<path>`` argument."""
    folder = _folder(name)
    return str(folder) if folder is not None and not (folder / "hub").is_dir() else None


def hub_rows(name: str) -> dict[str, list[tuple[str, dict]]]:
    """The hub's rows of ``name`` by hub split: from the mirror's dump, else from the hub itself."""
    folder = _folder(name)
    if folder is not None and (folder / "hub").is_dir():
        from tvaccine.data.files import read_rows

        return {path.stem: read_rows(path) for path in sorted((folder / "hub").glob("*.jsonl"))}
    _, args, kwargs = HUB[name]
    ident = f"{args[0]} ({', '.join(args[1:])})" if len(args) > 1 else args[0]
    try:
        import datasets

        keep = HUB_SPLITS.get(name)  # named, so the other splits (BeaverTails' 330k) are not downloaded
        loaded = datasets.load_dataset(*args, **kwargs, **({"split": list(keep)} if keep else {}))
        if keep:
            loaded = dict(zip(keep, loaded))
    except Exception as e:  # offline, renamed, gated, missing package: all end the same way
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:160]
        raise UserError(f"{name}: {ident} is not in the data mirror and the Hugging Face hub did not give it "
                        f"({reason}); run `tvaccine data fetch {name}` while online, or set {MIRROR_ENV} to a "
                        f"folder holding a copy in {HUB[name][0]}/, or pass one as {name}:<path>") from None
    return {split: [(f"{ident} {split}, row {i}", dict(r)) for i, r in enumerate(ds, 1)]
            for split, ds in loaded.items()}


def fetch(name: str, root: Path, log=print) -> Path:
    """Write the hub's rows of ``name`` into ``root/<folder>/hub/`` (complete or not at all)."""
    if name not in HUB:
        raise UserError(f"unknown dataset {name!r}; the hub datasets are {', '.join(n for n in HUB if HUB[n][1])}")
    if not HUB[name][1]:
        raise UserError(f"{name} is not on the Hugging Face hub; copy its files into {root / HUB[name][0]}/")
    target = root / HUB[name][0]
    if target.exists() and not (target / "hub").is_dir():
        raise UserError(f"{target} already holds a copy of {name} in its own layout; remove it to fetch the hub's")
    previous = os.environ.pop(MIRROR_ENV, None)  # read the hub, not the mirror being written
    try:
        rows = hub_rows(name)
    finally:
        if previous is not None:
            os.environ[MIRROR_ENV] = previous
    partial = target / "hub.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for split, split_rows in rows.items():
        write_jsonl(partial / f"{split}.jsonl", [row for _, row in split_rows])
    _, args, kwargs = HUB[name]
    import datasets

    write_json(partial / "source.json", {"dataset": args[0], "args": list(args[1:]), "kwargs": kwargs,
                                         "datasets": datasets.__version__,
                                         "rows": {split: len(r) for split, r in rows.items()}})
    shutil.rmtree(target / "hub", ignore_errors=True)
    partial.rename(target / "hub")
    log(f"{name}: {', '.join(f'{s} {len(r)}' for s, r in rows.items())} rows -> {target / 'hub'}")
    return target / "hub"
