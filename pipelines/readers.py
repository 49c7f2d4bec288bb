"""Read one source into raw units (lines, paragraphs, documents, JSON or table rows).

A reader yields ("ok", record) or ("rejected", rejection); it never raises for bad content:
a binary or empty file, undecodable bytes, a NUL byte, a unit over the size cap or a malformed
JSON line all become rejections with a reason and an offset. Offsets are character offsets into
the decoded file (row numbers for tables).

A text file is decoded with its declared encoding first, then judged: a unit holding a NUL is
rejected alone (`nul_byte`); only a file that is binary throughout, or UTF-16 read without
`encoding = "utf-16"`, is rejected whole (WHOLE_SOURCE; the build says so on stderr too).

For a `tail` split the decoded text is cut at exact character boundaries first (dev = the
`dev` fraction before the last `test` fraction), so the test split is exactly the file's tail,
as in nanoGPT's and char-rnn's published character-level numbers.

Lines end at `\n`, `\r\n` or a lone `\r` (Python's universal newlines), in `lines`, `jsonl`,
`conllu` and `paragraphs` alike.

A file's bytes are read once, whole, and hashed (`staging.check_read`): a file replaced since it
was resolved is a SourceError, so the sha256 a build records is always that of the text it used.
"""
from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Any, Iterator

from pipelines.records import rejection
from pipelines.staging import check_read, open_source

Event = tuple[str, dict[str, Any]]
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BLANK_LINES = re.compile(r"(?:\r\n?|\n)[ \t\f\v]*(?:\r\n?|\n)\s*")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_SNIFF = 8192
# NUL and C0 controls that text does not use (tab, newlines, form feeds and ESC are text's);
# past this share of a file's characters it is binary, not text with a few bad lines.
_DROP_CONTROL = {c: None for c in [*range(0x09), *range(0x0E, 0x1B), *range(0x1C, 0x20)]}
_BINARY_SHARE = 0.05
# Reasons that reject a whole source, and what to tell the user about each.
WHOLE_SOURCE = {
    "binary": "NUL or control bytes throughout, not text",
    "undeclared_utf16": 'looks like UTF-16: set encoding = "utf-16" in source {name}',
    "empty_source": "empty, no text",
    "bad_parquet": "not a readable Parquet file",
    "missing_column": "has no such column",
}


def whole_source_hint(reason: str, name: str) -> str:
    """The one-line explanation of a whole-source rejection, for its detail and for stderr."""
    return WHOLE_SOURCE[reason].format(name=name)


def _escape(exc: UnicodeError) -> tuple[str | bytes, int]:
    """Like surrogateescape, but for every byte value and every codec (UTF-16 too): an
    undecodable byte b becomes U+DC00 + b, and encodes back to b, so a snippet shows the bytes."""
    if isinstance(exc, UnicodeDecodeError):
        return "".join(chr(0xDC00 + b) for b in exc.object[exc.start:exc.end]), exc.end
    if isinstance(exc, UnicodeEncodeError):
        chars = exc.object[exc.start:exc.end]
        if all(0xDC00 <= ord(c) <= 0xDCFF for c in chars):
            return bytes(ord(c) - 0xDC00 for c in chars), exc.end
    raise exc


codecs.register_error("scarce-escape", _escape)


def source_info(resolved: Any, spec: Any) -> dict[str, Any]:
    """The plain-dict description of a resolved source that travels to Beam workers."""
    s = resolved.source
    tail = (spec.split.dev, spec.split.test) if spec.split.method == "tail" else None
    return {
        "name": s.name, "kind": s.kind, "local": resolved.local, "format": s.format, "split": s.split,
        "field": s.field, "column": s.column, "config": s.config, "hf_split": s.hf_split,
        "encoding": s.encoding, "segment": s.segment, "tail": tail,
        "max_record_bytes": spec.filters.max_record_bytes,
        "sha256": None if s.kind == "hf" else resolved.sha256, "pinned": bool(s.sha256),
    }


def read_source(info: dict[str, Any]) -> Iterator[Event]:
    """All units of one source, in order."""
    if info["kind"] == "hf":
        yield from _read_hf(info)
    elif info["format"] == "parquet":
        yield from _read_parquet(info)
    else:
        yield from _read_text_file(info)


def _unit(info: dict[str, Any], text: str, doc: str, pos: int, offset: int, split: str | None) -> Event:
    return "ok", {"text": text, "source": info["name"], "doc": doc, "pos": pos, "offset": offset,
                  "split": split or info["split"], "segment": info["segment"]}


def _check_unit(info: dict[str, Any], text: str, offset: int) -> dict[str, Any] | None:
    """A rejection for an oversized unit, a NUL byte or undecodable bytes, else None."""
    limit = info["max_record_bytes"]
    if len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit:
        return rejection("read", "too_long", info["name"], offset, text, chars=len(text))
    nul = text.find("\0")
    if nul >= 0:  # never stripped: text with a NUL in it was damaged somewhere
        return rejection("read", "nul_byte", info["name"], offset, text, detail=f"NUL byte at char {nul} of the unit")
    bad = _SURROGATE.search(text)
    if bad:
        raw = text.encode(info["encoding"], "scarce-escape")
        return rejection("read", f"bad_{info['encoding'].replace('-', '').lower()}", info["name"], offset, raw,
                         detail=f"undecodable byte at char {bad.start()} of the unit")
    return None


def _looks_utf16(raw: bytes) -> bool:
    """A byte-order mark, or a NUL in (nearly) every other byte: UTF-16 text of a Latin script."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return True
    sample = raw[:_SNIFF]
    half = len(sample) // 2
    if half < 8:
        return False
    even, odd = sample[0::2].count(0) / half, sample[1::2].count(0) / half
    return max(even, odd) > 0.9 and min(even, odd) < 0.1


def _is_utf16_or_32(encoding: str) -> bool:
    return codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))


def _read_text_file(info: dict[str, Any]) -> Iterator[Event]:
    name = info["name"]
    with open_source(info["local"]) as f:
        raw = f.read()
    check_read(info, raw)
    if not _is_utf16_or_32(info["encoding"]) and _looks_utf16(raw):
        yield "rejected", rejection("read", "undeclared_utf16", name, 0, raw[:64],
                                    detail=whole_source_hint("undeclared_utf16", name))
        return
    text = raw.decode(info["encoding"], errors="scarce-escape")
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        yield "rejected", rejection("read", "empty_source", name, 0, raw[:64], detail=f"{len(raw)} bytes, no text")
        return
    control = len(text) - len(text.translate(_DROP_CONTROL))
    if control > _BINARY_SHARE * len(text):
        yield "rejected", rejection("read", "binary", name, 0, raw[:64],
                                    detail=f"{control} of {len(text)} characters are NUL or control bytes")
        return
    regions: list[tuple[int, int, str | None]] = [(0, len(text), None)]
    if info["tail"]:
        dev, test = info["tail"]
        n = len(text)
        test_at, dev_at = int(n * (1 - test)), int(n * (1 - test - dev))
        regions = [(0, dev_at, "train"), (dev_at, test_at, "dev"), (test_at, n, "test")]
    counter = [0]  # unit numbers run on across tail regions
    for start, end, split in regions:
        yield from _units(info, text[start:end], start, split, counter)


def _units(info: dict[str, Any], text: str, base: int, split: str | None, counter: list[int]) -> Iterator[Event]:
    fmt, name = info["format"], info["name"]
    if fmt == "document":
        pieces: Iterator[tuple[int, str]] = iter([(0, text)] if text.strip() else [])
    elif fmt == "paragraphs":
        pieces = _split_at(text, _BLANK_LINES)
    else:
        pieces = _split_lines(text)
    doc = name
    for offset, piece in pieces:
        offset += base
        if fmt == "conllu":  # only `# text =` comments are units; `# newdoc` starts a document
            if piece.startswith("# newdoc"):
                doc = f"{name}:{piece.partition('=')[2].strip() or counter[0]}"
            if not piece.startswith("# text ="):
                continue
            piece = piece[len("# text ="):].strip()
        elif not piece.strip():
            continue
        bad = _check_unit(info, piece, offset)
        if bad:
            yield "rejected", bad
            continue
        if fmt == "jsonl":
            try:
                obj = json.loads(piece)
            except json.JSONDecodeError as exc:
                yield "rejected", rejection("read", "bad_json", name, offset, piece, detail=exc.msg)
                continue
            value = obj.get(info["field"]) if isinstance(obj, dict) else None
            if not isinstance(value, str):
                yield "rejected", rejection("read", "missing_field", name, offset, piece,
                                            detail=f"no string field {info['field']!r}")
                continue
            if "\0" in value:  # an escaped \u0000 is as damaged as a raw NUL
                yield "rejected", rejection("read", "nul_byte", name, offset, piece,
                                            detail=f"NUL in field {info['field']!r}")
                continue
            yield _unit(info, value, f"{name}:{counter[0]}", 0, offset, split)
        else:
            yield _unit(info, piece, doc, counter[0], offset, split)
        counter[0] += 1


def _split_lines(text: str) -> Iterator[tuple[int, str]]:
    return _split_at(text, _LINE_BREAK)


def _split_at(text: str, separator: re.Pattern) -> Iterator[tuple[int, str]]:
    start = 0
    for m in separator.finditer(text):
        yield start, text[start:m.start()]
        start = m.end()
    yield start, text[start:]


def _rows(info: dict[str, Any], values: Iterator[Any]) -> Iterator[Event]:
    for row, value in enumerate(values):
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if not isinstance(value, str):
            yield "rejected", rejection("read", "not_text", info["name"], row, repr(value),
                                        detail=f"column {info['column']!r} holds {type(value).__name__}")
            continue
        bad = _check_unit(info, value, row)
        if bad:
            yield "rejected", bad
            continue
        yield _unit(info, value, info["name"], row, row, None)


def _read_parquet(info: dict[str, Any]) -> Iterator[Event]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open_source(info["local"]) as f:
        raw = f.read()
    check_read(info, raw)  # read whole, as text files are, so the bytes parsed are the bytes hashed
    try:
        pf = pq.ParquetFile(pa.BufferReader(raw))
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        yield "rejected", rejection("read", "bad_parquet", info["name"], 0, str(exc))
        return
    if info["column"] not in pf.schema_arrow.names:
        yield "rejected", rejection("read", "missing_column", info["name"], 0, ", ".join(pf.schema_arrow.names),
                                    detail=f"no column {info['column']!r}")
        return
    yield from _rows(info, (v for batch in pf.iter_batches(columns=[info["column"]])
                            for v in batch.column(0).to_pylist()))


def _read_hf(info: dict[str, Any]) -> Iterator[Event]:
    import datasets

    location, split = info["local"], info["hf_split"]
    folder = Path(location)
    if (folder / "dataset_info.json").exists() or (folder / "dataset_dict.json").exists() or (folder / "state.json").exists():
        ds = datasets.load_from_disk(str(folder))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split or "train"]
    else:
        ds = datasets.load_dataset(location, info["config"], split=split or "train")
    if info["column"] not in ds.column_names:
        yield "rejected", rejection("read", "missing_column", info["name"], 0, ", ".join(ds.column_names),
                                    detail=f"no column {info['column']!r}")
        return
    yield from _rows(info, iter(ds[info["column"]]))
