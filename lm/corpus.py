"""Read a corpus snapshot (`OUT/NAME/VERSION/{train,dev,test}/*.parquet`) as text.

`open_snapshot(OUT/NAME)` follows `OUT/NAME/LATEST`; a version folder is accepted directly.

Joining rule (what "the split's raw text" means everywhere in `lm`): records are read in
`(source, doc, pos)` order, and consecutive records, documents included, are joined with the
corpus separator: "\\n\\n" when a source of the spec holds whole paragraphs or documents
(`format = "paragraphs"` or `"document"` with `segment = false`, e.g. tinyshakespeare, where this
gives back the published validation text exactly, less the file's final newline), otherwise
"\\n" (lines, sentences: one record a line, e.g. gl-ctg). Training packs documents (records of one
`doc`, joined the same way) with an end-of-sequence token between them.

Every shard is checked before it is read, by the snapshot format's one rule
(`common.snapshot_format.checked_shards`, re-exported here): a split folder against the
version's manifest.json, the augmented set against its stats.json. A shard whose sha256 differs
from the listing, a listed shard that is missing, or a Parquet file the listing does not name is
a DataError, so a test shard copied over the train shard is never trained on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from common.errors import DataError
from common.snapshot_format import (LATEST, SPEC_COPY, SPLITS, STATS, checked_shards, is_version_dir, read_latest,
                                    read_spec_copy, shard_listing)

__all__ = ["SPLITS", "Snapshot", "augmenter_kinds", "checked_shards", "corpus_separator", "open_snapshot",
           "read_columns"]
WHOLE_UNIT_FORMATS = ("paragraphs", "document")


@dataclass(frozen=True)
class Snapshot:
    """One immutable corpus version; splits are read lazily and kept."""

    root: Path
    name: str
    version: str

    @cached_property
    def separator(self) -> str:
        return corpus_separator(self.root / SPEC_COPY)

    def records(self, split: str) -> list[dict[str, Any]]:
        """The split's rows in reading order."""
        return _read_rows(self.root / split, split)

    def documents(self, split: str) -> list[str]:
        """Each document's text: its records joined with the separator, in reading order."""
        docs: list[str] = []
        key = None
        parts: list[str] = []
        for r in self.records(split):
            k = (r["source"], r["doc"])
            if k != key and parts:
                docs.append(self.separator.join(parts))
                parts = []
            key = k
            parts.append(r["text"])
        if parts:
            docs.append(self.separator.join(parts))
        return docs

    def text(self, split: str) -> str:
        """The split's raw text as evaluated: all records joined with the separator."""
        return self.separator.join(self.documents(split))

    def augmented_dir(self) -> Path:
        return self.root / "augmented"


def _read_rows(folder: Path, split: str) -> list[dict[str, Any]]:
    if not folder.is_dir() or not any(folder.glob("*.parquet")):
        raise DataError(f"split {split!r} not found: no Parquet shards in {folder}")
    listing = shard_listing(folder)
    files = checked_shards(folder, listing)
    try:
        rows = pq.read_table(files, columns=["text", "source", "doc", "pos", "id"]).to_pylist()
    except Exception as exc:  # pyarrow raises many types; the message names the folder
        raise DataError(f"cannot read split {split!r} in {folder}: {exc}") from exc
    if listing is not None and len(rows) != sum(s["rows"] for s in listing.values()):
        raise DataError(f"split {split!r} in {folder}: {len(rows)} rows, the manifest says "
                        f"{sum(s['rows'] for s in listing.values())}")
    # Shards are sorted inside but chosen by id hash, so sort across them.
    rows.sort(key=lambda r: (r["source"], r["doc"], r["pos"], r["id"]))
    return rows


def augmenter_kinds(folder: Path) -> dict[str, str | None]:
    """Augmenter step name -> its kind ("noise", "synonyms", ...), from the augmented set's
    stats.json beside `folder` (VERSION/augmented/train); {} when there is none."""
    path = Path(folder).parent / STATS
    if not path.is_file():
        return {}
    stats = json.loads(path.read_text(encoding="utf-8"))
    return {n: a.get("augmenter") for n, a in stats.get("augmenters", {}).items()}


def read_columns(folder: Path, columns: list[str], optional: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The rows (only `columns`, plus the `optional` ones a shard has; None where it has not) of
    every Parquet shard under `folder`, in file order."""
    files = checked_shards(Path(folder))
    if not files:
        raise DataError(f"no Parquet files with augmented text in {folder}")
    rows: list[dict[str, Any]] = []
    for f in files:
        try:
            have = set(pq.read_schema(f).names)
            part = pq.read_table(f, columns=columns + [c for c in optional if c in have]).to_pylist()
            rows += [{c: None for c in optional} | r for r in part]
        except Exception as exc:
            raise DataError(f"cannot read augmented text {f}: {exc}") from exc
    return rows


def corpus_separator(spec_path: Path) -> str:
    """"\\n\\n" if any source keeps whole paragraphs or documents, else "\\n" (see module doc)."""
    for src in read_spec_copy(spec_path).get("sources", []):
        fmt = src.get("format")
        if fmt in WHOLE_UNIT_FORMATS and not src.get("segment", True):
            return "\n\n"
    return "\n"


def open_snapshot(path: str | Path) -> Snapshot:
    """`OUT/NAME` (follows LATEST) or a version folder `OUT/NAME/VERSION`."""
    p = Path(path)
    version = read_latest(p)
    if version is not None:
        root = p / version
        if not root.is_dir():
            raise DataError(f"{p / LATEST} names version {version!r}, but {root} does not exist")
        return Snapshot(root=root, name=p.name, version=version)
    if is_version_dir(p):
        return Snapshot(root=p, name=p.parent.name, version=p.name)
    raise DataError(f"no corpus snapshot at {p} (expected OUT/NAME with a LATEST file, or a version folder)")
