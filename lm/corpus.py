"""Read a corpus snapshot (`OUT/NAME/VERSION/{train,dev,test}/*.parquet`) as text.

`open_snapshot(OUT/NAME)` follows `OUT/NAME/LATEST`; a version folder is accepted directly.

Joining rule (what "the split's raw text" means everywhere in `lm`): records are read in
`(source, doc, pos)` order, and consecutive records, documents included, are joined with the
corpus separator: "\\n\\n" when a source of the spec holds whole paragraphs or documents
(`format = "paragraphs"` or `"document"` with `segment = false`, e.g. tinyshakespeare, where this
gives back the published validation text exactly, less the file's final newline), otherwise
"\\n" (lines, sentences: one record a line, e.g. gl-ctg). Training packs documents (records of one
`doc`, joined the same way) with an end-of-sequence token between them.

Every shard is checked before it is read (`checked_shards`): a split folder against the
version's manifest.json, the augmented set against its stats.json. A shard whose sha256 differs
from the listing, a listed shard that is missing, or a Parquet file the listing does not name is
a DataError, so a test shard copied over the train shard is never trained on.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from lm.errors import DataError
from lm.files import sha256_file

SPLITS = ("train", "dev", "test")
WHOLE_UNIT_FORMATS = ("paragraphs", "document")


@dataclass(frozen=True)
class Snapshot:
    """One immutable corpus version; splits are read lazily and kept."""

    root: Path
    name: str
    version: str

    @cached_property
    def separator(self) -> str:
        return corpus_separator(self.root / "spec.toml")

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


LISTINGS = ("manifest.json", "stats.json")  # a version's shards; the augmented set's shards


def shard_listing(folder: Path) -> dict[str, dict[str, Any]] | None:
    """Path (relative to `folder`) -> {"sha256", "rows"} of the shards that the listing in or
    beside `folder` (manifest.json of a version, stats.json of the augmented set) names under it;
    None when `folder` is not part of a snapshot (e.g. a user's own `--augmented` folder)."""
    # The listing sits in `folder` itself (VERSION/augmented) or beside it (VERSION/train).
    for where, prefix in ((folder, ""), (folder.parent, folder.name + "/")):
        for name in LISTINGS:
            path = where / name
            if not path.is_file():
                continue
            try:
                shards = json.loads(path.read_text(encoding="utf-8")).get("shards")
            except (OSError, ValueError) as exc:
                raise DataError(f"cannot read {path}: {exc}") from exc
            if shards is not None:
                return {s["path"][len(prefix):]: s for s in shards if s["path"].startswith(prefix)}
    return None


def checked_shards(folder: Path, listing: dict[str, dict[str, Any]] | None = None) -> list[Path]:
    """The Parquet files under `folder`, each checked against the snapshot's listing (see the
    module doc; `listing`: one already read); a DataError names the first file that does not match."""
    folder = Path(folder)
    files = sorted(folder.rglob("*.parquet"))
    listing = shard_listing(folder) if listing is None else listing
    if listing is None:
        return files
    present = {f.relative_to(folder).as_posix(): f for f in files}
    extra = sorted(set(present) - set(listing))
    if extra:
        raise DataError(f"{present[extra[0]]}: a Parquet file that the snapshot's listing does not name; "
                        "remove it or rebuild the snapshot")
    for rel, entry in sorted(listing.items()):
        if rel not in present:
            raise DataError(f"{folder / rel}: missing; the snapshot lists it ({entry['rows']} rows)")
        if sha256_file(present[rel]) != entry["sha256"]:
            raise DataError(f"{present[rel]}: sha256 differs from the snapshot's listing (the shard was changed "
                            "or replaced after publication); rebuild the snapshot")
    return files


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
    path = Path(folder).parent / "stats.json"
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
    if not spec_path.is_file():
        return "\n"
    try:
        spec = tomllib.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DataError(f"cannot read the snapshot's spec {spec_path}: {exc}") from exc
    for src in spec.get("sources", []):
        fmt = src.get("format")
        if fmt in WHOLE_UNIT_FORMATS and not src.get("segment", True):
            return "\n\n"
    return "\n"


def open_snapshot(path: str | Path) -> Snapshot:
    """`OUT/NAME` (follows LATEST) or a version folder `OUT/NAME/VERSION`."""
    p = Path(path)
    if (p / "LATEST").is_file():
        version = (p / "LATEST").read_text(encoding="utf-8").strip()
        root = p / version
        if not root.is_dir():
            raise DataError(f"{p / 'LATEST'} names version {version!r}, but {root} does not exist")
        return Snapshot(root=root, name=p.name, version=version)
    if (p / "train").is_dir() or (p / "manifest.json").is_file():
        return Snapshot(root=p, name=p.parent.name, version=p.name)
    raise DataError(f"no corpus snapshot at {p} (expected OUT/NAME with a LATEST file, or a version folder)")
