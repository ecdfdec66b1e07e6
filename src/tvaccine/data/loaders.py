"""Loaders for the public datasets of the Vaccine / T-Vaccine experiments.

Each source loads from the Hugging Face hub when given no argument, or from a local copy
(``name:path``) so that experiments run offline. All local files go through one reader
(JSON array, JSON Lines, CSV, TSV, optionally gzipped), so every bad file fails the same
way: one ``UserError`` line naming the file, and the row and field where they apply.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from pathlib import Path
from urllib.parse import parse_qsl

from tvaccine.data.sources import Record, Source, register_source
from tvaccine.errors import UserError

# A row together with where it came from ("path, row 3"), so errors can point at it.
Row = tuple[str, dict]

SST2_INSTRUCTION = "Analyze the sentiment of the input, and respond only positive or negative"
SST2_WORDS = {1: "positive", 0: "negative"}
AGNEWS_INSTRUCTION = ("Categorize the news article into one of the 4 categories: "
                      "World, Sports, Business, Sci/Tech.")
AGNEWS_WORDS = {0: "World", 1: "Sports", 2: "Business", 3: "Sci/Tech"}

# The Alpaca prompt the Vaccine mixture files wrap around each instruction.
_ALPACA = re.compile(r"Below is an instruction.*?### Instruction:\n(?P<instruction>.*?)"
                     r"(?:\n\n### Input:\n(?P<input>.*?))?\n\n### Response:\s*", re.S)
# The first Human / Assistant exchange of an hh-rlhf dialogue.
_FIRST_TURN = re.compile(r"\s*Human:(.*?)\n\nAssistant:(.*?)(?=\n\n(?:Human|Assistant):|\Z)", re.S)


# ---------------------------------------------------------------- shared reading helpers

def read_rows(path: str | Path, fieldnames: list[str] | None = None) -> list[Row]:
    """Read a JSON array / JSONL / CSV / TSV file (``.gz`` too) into ``(where, row)`` pairs.

    ``fieldnames`` is for headerless CSV. TSV is read with QUOTE_NONE because GLUE files
    hold bare quote characters that are text, not quoting.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file")
    try:
        data = path.read_bytes()
        text = (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8-sig")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    if not text.strip():
        raise UserError(f"{path}: file is empty")
    kind = Path(path.stem).suffix if path.suffix == ".gz" else path.suffix
    kind = kind.lower()
    rows: list[Row] = []
    if kind == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg != "Extra data":
                raise UserError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
            kind = ".jsonl"  # JSON Lines saved under a .json name
        else:
            if not isinstance(data, list):
                raise UserError(f"{path}: expected a JSON array of objects, got a {type(data).__name__}")
            rows = [(f"{path}, row {i}", r) for i, r in enumerate(data, 1)]
    if kind == ".jsonl":
        for i, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may sit inside strings
            if line.strip():
                try:
                    rows.append((f"{path}, line {i}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}: invalid JSON on line {i}: {e.msg}") from None
    elif kind in (".csv", ".tsv"):
        tsv = kind == ".tsv"
        reader = csv.DictReader(io.StringIO(text, newline=""), fieldnames=fieldnames,
                                delimiter="\t" if tsv else ",",
                                quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
        try:
            rows = [(f"{path}, row {i}", r) for i, r in enumerate(reader, 1)]
        except csv.Error as e:
            raise UserError(f"{path}: unreadable {kind[1:].upper()} at line {reader.line_num}: {e}") from None
    elif kind != ".json":
        raise UserError(f"{path}: unknown format {kind or '(no extension)'!r}; "
                        "expected .json, .jsonl, .csv or .tsv (optionally .gz)")
    if not rows:
        raise UserError(f"{path}: no data rows")
    for where, row in rows:
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected an object with named fields, got a {type(row).__name__}")
    return rows


def field(where: str, row: dict, key: str):
    """``row[key]``, where ``a.b`` reaches into nested objects; a missing value names file, row and field."""
    value = row
    for part in key.split("."):
        if not isinstance(value, dict) or value.get(part) is None:
            raise UserError(f"{where}: missing field {key!r}")
        value = value[part]
    return value


def _int_in(where: str, row: dict, key: str, valid) -> int:
    value = field(where, row, key)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number not in valid:
        raise UserError(f"{where}: field {key!r} must be one of {sorted(valid)}, got {value!r}")
    return number


def _truthy(value) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes")


def _local(name: str, arg: str, files: dict[str, str]) -> dict[str, Path]:
    """Split -> file: a folder is searched for the usual file names; a single file is one split."""
    path = Path(arg)
    if path.is_file():
        return {files.get(path.name, next(iter(files.values()))): path}
    if not path.is_dir():
        raise UserError(f"{name}: {path}: no such file or directory")
    found = {split: path / fname for fname, split in files.items() if (path / fname).is_file()}
    if not found:
        raise UserError(f"{name}: {path}: none of {', '.join(files)} found in this folder")
    return found


def _hub(name: str, repo: str, *args, **kwargs) -> dict[str, list[Row]]:
    """Load from the hub lazily: ``datasets`` is slow to import and needs the network."""
    ident = f"{repo} ({', '.join(args)})" if args else repo
    try:
        import datasets

        loaded = datasets.load_dataset(repo, *args, **kwargs)
    except Exception as e:  # offline, renamed, gated, missing package: all end the same way
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise UserError(f"could not load {ident} from the Hugging Face hub ({reason}); "
                        f"pass a local copy: {name}:<path>") from None
    return {split: [(f"{ident} {split}, row {i}", dict(r)) for i, r in enumerate(ds, 1)]
            for split, ds in loaded.items()}


def _record(instruction, output, input: str = "", **extra) -> Record:
    return {"instruction": instruction, "input": input, "output": output, **extra}


# ---------------------------------------------------------------- sources

def _beavertails_records(rows: list[Row]) -> list[Record]:
    """Keep the harmful rows; the file format is told apart by the first row's keys."""
    where, first = rows[0]
    if {"instruction", "flag"} <= first.keys():  # Vaccine fine-tuning mixture
        records = []
        for w, r in rows:
            if field(w, r, "flag") == "unsafe":
                text = field(w, r, "instruction")
                m = _ALPACA.fullmatch(text)
                records.append(_record(m["instruction"] if m else text, field(w, r, "output"),
                                       (m and m["input"]) or r.get("input") or ""))
        return records
    if {"prompt", "response"} <= first.keys():
        refusals = "refusal" in first  # RepNoise "BeaverTails with refusals": all rows are harmful
        records = []
        for w, r in rows:
            if refusals or not _truthy(field(w, r, "is_safe")):
                extra = {"refusal": field(w, r, "refusal")} if refusals else {}
                category = r.get("category")
                if isinstance(category, dict):
                    category = ",".join(k for k, v in category.items() if v)
                if category:
                    extra["category"] = category
                records.append(_record(field(w, r, "prompt"), field(w, r, "response"), **extra))
        return records
    raise UserError(f"{where.rsplit(', ', 1)[0]}: unknown BeaverTails format (keys: {', '.join(first)}); "
                    "expected prompt/response/is_safe, prompt/response/refusal or instruction/output/flag")


@register_source("beavertails", help="BeaverTails harmful QA (is_safe == False); hub PKU-Alignment/BeaverTails "
                                     "or beavertails:<.json/.jsonl> (BeaverTails, Vaccine mixture or RepNoise format)")
def beavertails(arg: str | None) -> Source:
    """The harmful data of the fine-tuning attack."""
    if arg is None:
        rows = _hub("beavertails", "PKU-Alignment/BeaverTails")
        # The hub's 30k_train / 30k_test become train / test, the names every consumer looks for.
        rows = {s.removeprefix("30k_"): rows[s] for s in ("30k_train", "30k_test") if s in rows}
    else:
        files = {f"{s}.{x}": s for s in ("train", "test") for x in ("jsonl", "json")}
        rows = {s: read_rows(p) for s, p in _local("beavertails", arg, files).items()}
    return Source("beavertails", {s: _beavertails_records(r) for s, r in rows.items()},
                  description="BeaverTails harmful prompts with harmful responses")


def _sst2_record(where: str, row: dict) -> Record:
    label = _int_in(where, row, "label", SST2_WORDS)
    return _record(SST2_INSTRUCTION, SST2_WORDS[label], field(where, row, "sentence").strip(), label=label)


@register_source(
    "sst2",
    help="SST-2 sentiment (fine-tune task); hub glue/sst2 or sst2:<folder with GLUE train.tsv, dev.tsv>")
def sst2(arg: str | None) -> Source:
    """The benign fine-tuning task scored by sentiment accuracy; GLUE dev is the labelled test set."""
    if arg is None:
        rows = _hub("sst2", "glue", "sst2")
        rows = {"train": rows["train"], "test": rows["validation"]}
    else:
        rows = {s: read_rows(p) for s, p in _local("sst2", arg, {"train.tsv": "train", "dev.tsv": "test"}).items()}
    return Source("sst2", {s: [_sst2_record(w, r) for w, r in rs] for s, rs in rows.items()},
                  metric="sentiment", label_words=dict(SST2_WORDS), description="SST-2 sentence sentiment")


def _agnews_record(where: str, label: int, text: str, names: dict) -> Record:
    # In the AG News CSV release a backslash stands for a line break.
    return _record(AGNEWS_INSTRUCTION, names[label], text.replace("\\", "\n"), label=label)


@register_source(
    "agnews",
    help="AG News topics (fine-tune task); hub ag_news or agnews:<folder with train.csv, test.csv>")
def agnews(arg: str | None) -> Source:
    """The benign fine-tuning task scored by topic accuracy."""
    names = dict(AGNEWS_WORDS)
    if arg is None:
        splits = {s: [_agnews_record(w, _int_in(w, r, "label", names), field(w, r, "text"), names) for w, r in rs]
                  for s, rs in _hub("agnews", "ag_news").items()}
    else:
        files = _local("agnews", arg, {"train.csv": "train", "test.csv": "test"})
        classes = next(iter(files.values())).parent / "classes.txt"
        if classes.is_file():
            lines = [line.strip() for line in classes.read_text(encoding="utf-8").splitlines() if line.strip()]
            names = dict(enumerate(lines))
        splits = {}
        for split, path in files.items():
            splits[split] = [
                _agnews_record(w, _int_in(w, r, "class", range(1, len(names) + 1)) - 1,
                               f"{field(w, r, 'title')} {field(w, r, 'description')}", names)
                for w, r in read_rows(path, fieldnames=["class", "title", "description"])]
    return Source("agnews", splits, metric="topic", label_words=names, description="AG News topic classification")


def _gsm8k_record(where: str, row: dict) -> Record:
    """The answer as a model should write it: no <<calc>> annotations, a plain final sentence."""
    work, sep, final = field(where, row, "answer").rpartition("####")
    if not sep:
        raise UserError(f"{where}: field 'answer' has no '#### <number>' final answer")
    number = final.strip().replace(",", "")
    work = re.sub(r"<<[^>]*>>", "", work).strip()
    output = "\n".join(filter(None, [work, f"The answer is {number}."]))
    return _record(field(where, row, "question"), output, answer=number)


@register_source(
    "gsm8k",
    help="GSM8K math (fine-tune task); hub gsm8k/main or gsm8k:<folder with train.jsonl, test.jsonl>")
def gsm8k(arg: str | None) -> Source:
    """The benign fine-tuning task scored by the final number."""
    rows = _hub("gsm8k", "gsm8k", "main") if arg is None else \
        {s: read_rows(p) for s, p in _local("gsm8k", arg, {"train.jsonl": "train", "test.jsonl": "test"}).items()}
    return Source("gsm8k", {s: [_gsm8k_record(w, r) for w, r in rs] for s, rs in rows.items()},
                  metric="number", description="GSM8K grade-school math")


@register_source(
    "alpacaeval",
    help="AlpacaEval 805 instructions (open-ended); hub tatsu-lab/alpaca_eval or alpacaeval:<.json>")
def alpacaeval(arg: str | None) -> Source:
    """Open-ended helpfulness data: only ``test``, since reusing it for training would leak the eval set."""
    if arg is None:
        rows = _hub("alpacaeval", "tatsu-lab/alpaca_eval", "alpaca_eval")["eval"]
    else:
        rows = read_rows(_local("alpacaeval", arg, {"alpaca_eval.json": "test"})["test"])
    records = []
    for w, r in rows:
        extra = {"category": r["dataset"]} if r.get("dataset") else {}
        records.append(_record(field(w, r, "instruction"), field(w, r, "output"), **extra))
    return Source("alpacaeval", {"test": records}, description="AlpacaEval instructions with reference answers")


@register_source("decodingtrust", help="DecodingTrust toxicity prompts; decodingtrust:<training_dataset.jsonl, "
                                       "the refusals .json, or their folder> (no hub copy)")
def decodingtrust(arg: str | None) -> Source:
    """Toxic continuations as harmful data (``toxic``), plus benign and eval prompts; refusal files give ``train``."""
    if arg is None:
        raise UserError("decodingtrust is not on the Hugging Face hub under a stable id; pass a local path: "
                        "decodingtrust:<training_dataset.jsonl or its folder>")
    files = _local("decodingtrust", arg, {"training_dataset.jsonl": "toxic",
                                          "decoding_trust_with_refusals_train.json": "train"})
    splits: dict[str, list[Record]] = {"toxic": [], "non_toxic": [], "toxic_test": [], "train": []}
    for path in files.values():
        rows = read_rows(path)
        refusals = "refusal" in rows[0][1]
        for w, r in rows:
            split = "train" if refusals else field(w, r, "type")
            if split not in splits:
                raise UserError(f"{w}: field 'type' must be toxic, non_toxic or toxic_test, got {split!r}")
            extra = {"refusal": field(w, r, "refusal")} if refusals else {}
            splits[split].append(_record(field(w, r, "prompt.text"), field(w, r, "continuation.text"), **extra))
    return Source("decodingtrust", {s: rs for s, rs in splits.items() if rs},
                  description="DecodingTrust (RealToxicityPrompts) toxicity prompts")


@register_source(
    "advbench",
    help="AdvBench 520 harmful behaviors (eval); hub walledai/AdvBench or advbench:<goal,target .csv>")
def advbench(arg: str | None) -> Source:
    """Harmful instructions for the harmful-score evaluation."""
    if arg is None:
        rows, goal = _hub("advbench", "walledai/AdvBench")["train"], "prompt"
    else:
        rows, goal = read_rows(_local("advbench", arg, {"harmful_behaviors.csv": "test"})["test"]), "goal"
    return Source("advbench", {"test": [_record(field(w, r, goal), field(w, r, "target")) for w, r in rows]},
                  description="AdvBench harmful behaviors")


def _hh_record(where: str, row: dict) -> Record:
    m = _FIRST_TURN.match(field(where, row, "chosen"))
    if not m:
        raise UserError(f"{where}: field 'chosen' is not a 'Human: ... Assistant: ...' dialogue")
    return _record(m[1].strip(), m[2].strip())


@register_source("hhrlhf", help="Anthropic hh-rlhf harmless-base test prompts (eval); hub Anthropic/hh-rlhf "
                                "or hhrlhf:<test.jsonl.gz, .jsonl or its folder>")
def hhrlhf(arg: str | None) -> Source:
    """Red-team prompts: the first Human turn, with the preferred first Assistant reply."""
    if arg is None:
        rows = _hub("hhrlhf", "Anthropic/hh-rlhf", data_dir="harmless-base")["test"]
    else:
        rows = read_rows(_local("hhrlhf", arg, {"test.jsonl.gz": "test", "test.jsonl": "test"})["test"])
    return Source("hhrlhf", {"test": [_hh_record(w, r) for w, r in rows]},
                  description="hh-rlhf harmless-base red-team prompts")


@register_source(
    "file",
    help="any local .json/.jsonl/.csv/.tsv; map fields with file:<path>?instruction=F&input=F&output=F")
def file_source(arg: str | None) -> Source:
    """Bring-your-own data: fields default to instruction/input/output; ``?key=field`` renames them."""
    if not arg:
        raise UserError("file needs a path: file:<path>[?instruction=FIELD&input=FIELD&output=FIELD]")
    path, _, query = arg.partition("?")
    mapping = dict(parse_qsl(query, keep_blank_values=True))
    for key, name in mapping.items():
        if not name:
            raise UserError(f"file:{arg}: no field name given for {key!r} (write {key}=FIELD)")
    fields = {"instruction": "instruction", "output": "output", **mapping}
    records = []
    for w, r in read_rows(path):
        record = {key: field(w, r, name) for key, name in fields.items()}
        record.setdefault("input", r.get("input") or "")  # input is optional unless mapped
        record.update({k: r[k] for k in ("label", "answer", "category") if k not in record and r.get(k) is not None})
        records.append(_record(**record))
    return Source(Path(path).stem, {"train": records}, description=f"records from {path}")
