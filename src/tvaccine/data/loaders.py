"""Loaders for the public datasets of the Vaccine / T-Vaccine experiments.

Each source loads from the Hugging Face hub when given no argument, or from a local copy
(``name:path``) so that experiments run offline. Local files are read by ``data/files.py``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import parse_qsl

from tvaccine.data.files import Row, read_rows, read_text, row_text, row_value
from tvaccine.data.formatting import record_from_example
from tvaccine.data.mirror import hub_rows
from tvaccine.data.sources import Record, Source, register_source
from tvaccine.errors import UserError

SST2_INSTRUCTION = "Analyze the sentiment of the input, and respond only positive or negative"
SST2_WORDS = {1: "positive", 0: "negative"}
AGNEWS_INSTRUCTION = ("Categorize the news article into one of the 4 categories: "
                      "World, Sports, Business, Sci/Tech.")
AGNEWS_WORDS = {0: "World", 1: "Sports", 2: "Business", 3: "Sci/Tech"}
# The reference frames DecodingTrust as a continuation task: this instruction, with the prompt as
# the input (Lslland/T-Vaccine, train.py, SupervisedDatasetDecodingTrust.__init__).
DECODINGTRUST_INSTRUCTION = "You are required to continue the generation of the given incomplete prompt"

# The Alpaca prompt the Vaccine mixture files wrap around each instruction.
_ALPACA = re.compile(r"Below is an instruction.*?### Instruction:\n(?P<instruction>.*?)"
                     r"(?:\n\n### Input:\n(?P<input>.*?))?\n\n### Response:\s*", re.S)
# The first Human / Assistant exchange of an hh-rlhf dialogue.
_FIRST_TURN = re.compile(r"\s*Human:(.*?)\n\nAssistant:(.*?)(?=\n\n(?:Human|Assistant):|\Z)", re.S)


# ---------------------------------------------------------------- shared helpers

def _int_in(where: str, row: dict, key: str, valid) -> int:
    value = row_value(where, row, key)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number not in valid:
        raise UserError(f"{where}: field {key!r} must be one of {sorted(valid)}, got {value!r}")
    return number


# RepNoise's refusal files keep each refusal behind its prompt. The reference (Lslland/T-Vaccine,
# train.py, SupervisedDataset.__init__, branch "BeaverTails_safe_alignment") splits the `refusal` field
# of beavertails_with_refusals_train.json ("Question: ...\nAnswer: ...") on "\nAnswer: " and trains on
# the answer. decoding_trust_with_refusals_train.json lays the field out as "Prompt: ...\nContinuation:
# ..." (the colon is sometimes followed by a line break), so its answer is what follows "Continuation:".
_REFUSAL_LAYOUTS = (("Question: ", "\nAnswer:"), ("Prompt: ", "\nContinuation:"))


def refusal_answer(where: str, text: str) -> str:
    """The answer part of a RepNoise refusal field; a field without a known prompt header is the answer."""
    for head, separator in _REFUSAL_LAYOUTS:
        if text.startswith(head):
            _, found, answer = text.partition(separator)
            if not found or not answer.strip():
                raise UserError(f"{where}: field 'refusal' starts with {head.strip()!r} but has no answer "
                                f"after {separator.strip()!r}")
            return answer.strip()
    return text


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


def _record(instruction: str, output: str | None, input: str = "", **extra) -> Record:
    return {"instruction": instruction, "input": input, "output": output, **extra}


# ---------------------------------------------------------------- sources

def _beavertails_records(rows: list[Row]) -> list[Record]:
    """Keep the harmful rows; the file format is told apart by the first row's keys."""
    where, first = rows[0]
    if {"instruction", "flag"} <= first.keys():  # Vaccine fine-tuning mixture
        records = []
        for w, r in rows:
            if row_text(w, r, "flag") == "unsafe":
                text = row_text(w, r, "instruction")
                m = _ALPACA.fullmatch(text)
                records.append(_record(m["instruction"] if m else text, row_text(w, r, "output"),
                                       (m and m["input"]) or r.get("input") or ""))
        return records
    if {"prompt", "response"} <= first.keys():
        refusals = "refusal" in first  # RepNoise "BeaverTails with refusals": all rows are harmful
        records = []
        for w, r in rows:
            if refusals or not _truthy(row_value(w, r, "is_safe")):
                extra = {"refusal": refusal_answer(w, row_text(w, r, "refusal"))} if refusals else {}
                category = r.get("category")
                if isinstance(category, dict):
                    category = ",".join(k for k, v in category.items() if v)
                if category:
                    extra["category"] = category
                records.append(_record(row_text(w, r, "prompt"), row_text(w, r, "response"), **extra))
        return records
    raise UserError(f"{where.rsplit(', ', 1)[0]}: unknown BeaverTails format (keys: {', '.join(first)}); "
                    "expected prompt/response/is_safe, prompt/response/refusal or instruction/output/flag")


# One in PROBE_EVERY BeaverTails train prompts, chosen by a hash of the prompt, is held out as ``probe``: the
# forward-only instrument reads it and the attack, which trains on ``train``, never sees it. A split by
# construction, so no run can pair an attack with the rows that measure it; every answer to one prompt
# lands on the same side.
PROBE_EVERY = 3


def _is_probe(record: Record) -> bool:
    return int(hashlib.sha256(record["instruction"].encode()).hexdigest()[:8], 16) % PROBE_EVERY == 0


@register_source("beavertails", help="BeaverTails harmful QA (is_safe == False): train (the attack's), probe (a third "
                                     "of 30k_train's prompts, held out by hash for the instrument), test; hub "
                                     "PKU-Alignment/BeaverTails or beavertails:<.json/.jsonl>")
def beavertails(arg: str | None) -> Source:
    """The harmful data of the fine-tuning attack, and the instrument's held-out harmful answers."""
    if arg is None:
        rows = hub_rows("beavertails")
        # The hub's 30k_train / 30k_test become train / test, the names every consumer looks for.
        rows = {s.removeprefix("30k_"): rows[s] for s in ("30k_train", "30k_test") if s in rows}
    else:
        files = {f"{s}.{x}": s for s in ("train", "test") for x in ("jsonl", "json")}
        path = Path(arg)
        if path.is_dir() and not any((path / f).is_file() for f in files):
            # A copy of a sample named after its split, e.g. beavertails_30k_train_unsafe_200.jsonl.
            files.update({p.name: s for s in ("train", "test") for p in path.glob(f"*{s}*.json*")})
        rows = {s: read_rows(p) for s, p in _local("beavertails", arg, files).items()}
    splits = {s: _beavertails_records(r) for s, r in rows.items()}
    if "train" in splits:
        train = splits.pop("train")
        splits = {"train": [r for r in train if not _is_probe(r)], "probe": [r for r in train if _is_probe(r)],
                  **splits}
    return Source("beavertails", splits, description="BeaverTails harmful prompts with harmful responses")


def _sst2_record(where: str, row: dict) -> Record:
    label = _int_in(where, row, "label", SST2_WORDS)
    return _record(SST2_INSTRUCTION, SST2_WORDS[label], row_text(where, row, "sentence").strip(), label=label)


@register_source(
    "sst2",
    help="SST-2 sentiment (fine-tune task); hub glue/sst2 or sst2:<folder with GLUE train.tsv, dev.tsv>")
def sst2(arg: str | None) -> Source:
    """The benign fine-tuning task scored by sentiment accuracy; GLUE dev is the labelled test set."""
    if arg is None:
        rows = hub_rows("sst2")
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
        splits = {s: [_agnews_record(w, _int_in(w, r, "label", names), row_text(w, r, "text"), names) for w, r in rs]
                  for s, rs in hub_rows("agnews").items()}
    else:
        files = _local("agnews", arg, {"train.csv": "train", "test.csv": "test"})
        classes = next(iter(files.values())).parent / "classes.txt"
        if classes.is_file():
            lines = [line.strip() for line in read_text(classes).splitlines() if line.strip()]
            names = dict(enumerate(lines))
        splits = {}
        for split, path in files.items():
            splits[split] = [
                _agnews_record(w, _int_in(w, r, "class", range(1, len(names) + 1)) - 1,
                               f"{row_text(w, r, 'title')} {row_text(w, r, 'description')}", names)
                for w, r in read_rows(path, fieldnames=["class", "title", "description"])]
    return Source("agnews", splits, metric="topic", label_words=names, description="AG News topic classification")


def _gsm8k_record(where: str, row: dict) -> Record:
    """The answer as a model should write it: no <<calc>> annotations, a plain final sentence."""
    work, sep, final = row_text(where, row, "answer").rpartition("####")
    if not sep:
        raise UserError(f"{where}: field 'answer' has no '#### <number>' final answer")
    number = final.strip().replace(",", "")
    work = re.sub(r"<<[^>]*>>", "", work).strip()
    output = "\n".join(filter(None, [work, f"The answer is {number}."]))
    return _record(row_text(where, row, "question"), output, answer=number)


@register_source(
    "gsm8k",
    help="GSM8K math (fine-tune task); hub gsm8k/main or gsm8k:<folder with train.jsonl, test.jsonl>")
def gsm8k(arg: str | None) -> Source:
    """The benign fine-tuning task scored by the final number."""
    rows = hub_rows("gsm8k") if arg is None else \
        {s: read_rows(p) for s, p in _local("gsm8k", arg, {"train.jsonl": "train", "test.jsonl": "test"}).items()}
    return Source("gsm8k", {s: [_gsm8k_record(w, r) for w, r in rs] for s, rs in rows.items()},
                  metric="number", description="GSM8K grade-school math")


@register_source(
    "alpacaeval",
    help="AlpacaEval 805 instructions (open-ended); hub tatsu-lab/alpaca_eval or alpacaeval:<.json>")
def alpacaeval(arg: str | None) -> Source:
    """Open-ended helpfulness data: only ``test``, since reusing it for training would leak the eval set."""
    if arg is None:
        rows = hub_rows("alpacaeval")["eval"]
    else:
        rows = read_rows(_local("alpacaeval", arg, {"alpaca_eval.json": "test"})["test"])
    records = []
    for w, r in rows:
        extra = {"category": r["dataset"]} if r.get("dataset") else {}
        records.append(_record(row_text(w, r, "instruction"), row_text(w, r, "output"), **extra))
    return Source("alpacaeval", {"test": records}, description="AlpacaEval instructions with reference answers")


@register_source("decodingtrust", help="DecodingTrust toxicity prompts; decodingtrust:<training_dataset.jsonl, "
                                       "the refusals .json, or their folder> (no hub copy)")
def decodingtrust(arg: str | None) -> Source:
    """Toxic continuations as harmful data (``toxic``), plus benign and eval prompts; refusal files give ``train``.

    Every record asks to continue its prompt (the prompt is the record's input), as the reference does."""
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
            split = "train" if refusals else row_text(w, r, "type")
            if split not in splits:
                raise UserError(f"{w}: field 'type' must be toxic, non_toxic or toxic_test, got {split!r}")
            extra = {"refusal": refusal_answer(w, row_text(w, r, "refusal"))} if refusals else {}
            splits[split].append(_record(DECODINGTRUST_INSTRUCTION, row_text(w, r, "continuation.text"),
                                         row_text(w, r, "prompt.text"), **extra))
    return Source("decodingtrust", {s: rs for s, rs in splits.items() if rs},
                  description="DecodingTrust (RealToxicityPrompts) toxicity prompts")


@register_source(
    "advbench",
    help="AdvBench 520 harmful behaviors (eval); hub walledai/AdvBench or advbench:<goal,target .csv>")
def advbench(arg: str | None) -> Source:
    """Harmful instructions for the harmful-score evaluation."""
    if arg is None:
        rows, goal = hub_rows("advbench")["train"], "prompt"
    else:
        rows, goal = read_rows(_local("advbench", arg, {"harmful_behaviors.csv": "test"})["test"]), "goal"
    return Source("advbench", {"test": [_record(row_text(w, r, goal), row_text(w, r, "target")) for w, r in rows]},
                  description="AdvBench harmful behaviors")


def _hh_record(where: str, row: dict) -> Record:
    m = _FIRST_TURN.match(row_text(where, row, "chosen"))
    if not m:
        raise UserError(f"{where}: field 'chosen' is not a 'Human: ... Assistant: ...' dialogue")
    return _record(m[1].strip(), m[2].strip())


@register_source("hhrlhf", help="Anthropic hh-rlhf harmless-base test prompts (eval); hub Anthropic/hh-rlhf "
                                "or hhrlhf:<test.jsonl.gz, .jsonl or its folder>")
def hhrlhf(arg: str | None) -> Source:
    """Red-team prompts: the first Human turn, with the preferred first Assistant reply."""
    if arg is None:
        rows = hub_rows("hhrlhf")["test"]
    else:
        rows = read_rows(_local("hhrlhf", arg, {"test.jsonl.gz": "test", "test.jsonl": "test"})["test"])
    return Source("hhrlhf", {"test": [_hh_record(w, r) for w, r in rows]},
                  description="hh-rlhf harmless-base red-team prompts")


# The record keys a file: spec can map; text keys must hold text, the others any JSON value.
FILE_TEXT_KEYS = ("instruction", "input", "output")
FILE_KEYS = FILE_TEXT_KEYS + ("label", "answer", "category")


@register_source(
    "file",
    help="any local .json/.jsonl/.csv/.tsv: instruction/input/output fields (map them with "
         "file:<path>?instruction=F&input=F&output=F), or TRL's messages or prompt/completion formats "
         "(no answer: prompts only, for evaluation)")
def file_source(arg: str | None) -> Source:
    """Bring-your-own data: fields default to their own names; ``?key=field`` renames them.

    ``output`` is optional unless mapped: evaluation prompts have no reference answer, so such
    records carry ``output = None``, and the training-data builders refuse them."""
    if not arg:
        raise UserError("file needs a path: file:<path>[?instruction=FIELD&input=FIELD&output=FIELD]")
    path, _, query = arg.partition("?")
    mapping = dict(parse_qsl(query, keep_blank_values=True))
    for key, name in mapping.items():
        if key not in FILE_KEYS:
            raise UserError(f"file:{arg}: unknown key {key!r}; the keys are {', '.join(FILE_KEYS)}")
        if not name:
            raise UserError(f"file:{arg}: no field name given for {key!r} (write {key}=FIELD)")
    rows = read_rows(path)
    if not mapping and "instruction" not in rows[0][1] and rows[0][1].keys() & {"messages", "prompt"}:
        # The formats TRL defines: conversational ``messages``, or ``prompt``/``completion``.
        return Source(Path(path).stem, {"train": [record_from_example(r, w) for w, r in rows]},
                      description=f"records from {path}")
    records = []
    for w, r in rows:
        record = {}
        for key in FILE_KEYS:
            name = mapping.get(key, key)
            if key in mapping or key == "instruction":
                record[key] = (row_text if key in FILE_TEXT_KEYS else row_value)(w, r, name)
            elif r.get(name) is not None:
                record[key] = row_text(w, r, name) if key in FILE_TEXT_KEYS else r[name]
        records.append(_record(record.pop("instruction"), record.pop("output", None), record.pop("input", ""),
                               **record))
    return Source(Path(path).stem, {"train": records}, description=f"records from {path}")
