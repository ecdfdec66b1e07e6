"""The one reader for local data files: JSON array, JSON Lines, CSV, TSV, each optionally gzipped.

Every source reads its files through here, so every bad file fails the same way: one
``UserError`` line naming the file, and the row and field where they apply.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from pathlib import Path

from tvaccine.errors import UserError

# A row together with where it came from ("path, row 3"), so errors can point at it.
Row = tuple[str, dict]


def read_text(path: str | Path) -> str:
    """The file's text (``.gz`` decompressed), or one line saying why it cannot be read as UTF-8 text."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file")
    if not path.is_file():  # a pipe would block the read forever, a device never end
        raise UserError(f"{path}: not a regular file (a pipe, socket or device); save the data to a file")
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                        "save the file as UTF-8") from None


def read_rows(path: str | Path, fieldnames: list[str] | None = None) -> list[Row]:
    """Read a JSON array / JSONL / CSV / TSV file (``.gz`` too) into ``(where, row)`` pairs.

    ``fieldnames`` is for headerless CSV. TSV is read with QUOTE_NONE because GLUE files
    hold bare quote characters that are text, not quoting.
    """
    path = Path(path)
    text = read_text(path)
    if not text.strip():
        raise UserError(f"{path}: file is empty")
    kind = (Path(path.stem).suffix if path.suffix == ".gz" else path.suffix).lower()
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
        rows = _read_delimited(path, text, kind, fieldnames)
    elif kind != ".json":
        raise UserError(f"{path}: unknown format {kind or '(no extension)'!r}; "
                        "expected .json, .jsonl, .csv or .tsv (optionally .gz)")
    if not rows:
        raise UserError(f"{path}: no data rows")
    for where, row in rows:
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected an object with named fields, got a {type(row).__name__}")
    if kind in (".json", ".jsonl") and _SURROGATE_ESCAPE.search(text):
        for where, row in rows:
            _refuse_lone_surrogates(where, row)
    return rows


# A JSON escape of a UTF-16 surrogate: a pair decodes to one character, a lone one to a code point
# that is not text (printing or encoding it fails), so the rows are checked only when one appears.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_lone_surrogates(where: str, value, key: str = "") -> None:
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        if found:
            raise UserError(f"{where}: field {key!r} holds a lone UTF-16 surrogate (\\u{ord(found.group()):04x}), "
                            "which is not text; fix or remove it")
    elif isinstance(value, dict):
        for name, item in value.items():
            _refuse_lone_surrogates(where, item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list):
        for item in value:
            _refuse_lone_surrogates(where, item, key)


def _read_delimited(path: Path, text: str, kind: str, fieldnames: list[str] | None) -> list[Row]:
    """CSV / TSV rows. ``strict`` makes an unterminated quote an error: without it the csv module
    reads the rest of the file into one field and the row only looks short a field."""
    tsv = kind == ".tsv"
    reader = csv.DictReader(io.StringIO(text, newline=""), fieldnames=fieldnames, delimiter="\t" if tsv else ",",
                            quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL, strict=True)
    rows, last_line = [], 0
    try:
        reader.fieldnames  # reads the header line, if the file has one
        last_line = reader.line_num
        for i, row in enumerate(reader, 1):
            rows.append((f"{path}, row {i}", row))
            last_line = reader.line_num
    except csv.Error as e:
        lines = text.split("\n")
        start = next((n for n in range(last_line, len(lines)) if lines[n].strip()), last_line) + 1
        if "unexpected end of data" in str(e):
            raise UserError(f"{path}: unterminated quote: the quoted field on line {start} is never closed "
                            '(a quote inside a quoted field is written "")') from None
        raise UserError(f"{path}: unreadable {kind[1:].upper()} at line {start}: {e}") from None
    return rows


def row_value(where: str, row: dict, key: str):
    """``row[key]``, where ``a.b`` reaches into nested objects; a missing value names file, row and field."""
    value = row
    for part in key.split("."):
        if not isinstance(value, dict) or value.get(part) is None:
            raise UserError(f"{where}: missing field {key!r}")
        value = value[part]
    return value


def row_text(where: str, row: dict, key: str) -> str:
    """``row_value`` that must be text: a list, object or number where a sentence belongs is a data error."""
    value = row_value(where, row, key)
    if not isinstance(value, str):
        kind = {list: "a list", dict: "an object", int: "a number", float: "a number", bool: "true/false"}
        raise UserError(f"{where}: field {key!r} must be text, got {kind.get(type(value), type(value).__name__)}")
    return value
