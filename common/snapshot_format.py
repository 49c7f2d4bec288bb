"""The layout of a published corpus snapshot, as its builders (`pipelines`) and readers (`lm`) share it.

`OUT/NAME/LATEST` names the version to read; `OUT/NAME/VERSION/` holds the splits
(`train/`, `dev/`, `test/`, Parquet shards), `manifest.json` (every shard's path, rows and
sha256), `stats.json`, the spec it was built from (`spec.toml`) and, once augmented,
`augmented/` with its own `stats.json` listing the variants' shards.

The one verification rule (`checked_shards`): before a shard is read, the listing that vouches
for it (a version's manifest.json, the augmented set's stats.json) must name it, and its sha256
must match; a listed shard that is missing, or a Parquet file the listing does not name, is a
DataError too, so a test shard copied over the train shard is never trained on or augmented.
"""
from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from common.errors import DataError
from common.files import sha256_file

SPLITS = ("train", "dev", "test")
LATEST = "LATEST"
MANIFEST, STATS, SPEC_COPY = "manifest.json", "stats.json", "spec.toml"
LISTINGS = (MANIFEST, STATS)  # a version's shards; the augmented set's shards

Listing = dict[str, dict[str, Any]]  # shard path (relative to its folder) -> {"path", "rows", "sha256"}


def read_latest(corpus_dir: str | Path) -> str | None:
    """The version `corpus_dir/LATEST` names; None when there is no LATEST, or it is empty."""
    path = Path(corpus_dir) / LATEST
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8").strip() or None


def resolve_version(corpus_dir: str, version: str | None = None) -> str:
    """The folder of `version`, or of the one LATEST names; it must be a complete snapshot
    (have its manifest.json): what a command that writes into a version (augment) needs."""
    version = version or read_latest(corpus_dir)
    if not version:
        raise DataError(f"{corpus_dir}: no LATEST snapshot; build one first (python -m pipelines.build SPEC --out DIR)")
    vdir = os.path.join(corpus_dir, version)  # a str as given: Beam's FileSystems take the path on
    if not os.path.exists(os.path.join(vdir, MANIFEST)):
        raise DataError(f"{vdir}: not a complete snapshot (no manifest.json)")
    return vdir


def is_version_dir(path: Path) -> bool:
    """A version folder (splits or a manifest), as opposed to OUT/NAME."""
    return (path / "train").is_dir() or (path / MANIFEST).is_file()


def shard_listing(folder: Path) -> Listing | None:
    """The shards that the listing in or beside `folder` (manifest.json of a version, stats.json
    of the augmented set) names under it, keyed by path relative to `folder`; None when `folder`
    is not part of a snapshot (e.g. a user's own `--augmented` folder)."""
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


def checked_shards(folder: str | Path, listing: Listing | None = None, named: str | None = None) -> list[Path]:
    """The Parquet files under `folder`, sorted, each checked against the snapshot's listing (the
    module's rule; `listing`: one already read). Messages name the listing file `named`, else
    speak of "the snapshot's listing" (a reader's folder may be vouched for by either file)."""
    root = os.fspath(folder)  # messages show the folder as the caller spelt it
    folder = Path(folder)
    files = sorted(folder.rglob("*.parquet"))
    listing = shard_listing(folder) if listing is None else listing
    if listing is None:
        return files
    present = {f.relative_to(folder).as_posix(): f for f in files}
    extra = sorted(set(present) - set(listing))
    what = named or "the snapshot's listing"
    if extra:
        raise DataError(f"{os.path.join(root, extra[0])}: a Parquet file that {what} does not "
                        f"{'list' if named else 'name'}; remove it or rebuild the snapshot")
    for rel, entry in sorted(listing.items()):
        if rel not in present:
            lists = f"{named} lists it" if named else f"the snapshot lists it ({entry['rows']} rows)"
            raise DataError(f"{os.path.join(root, rel)}: missing; {lists}")
        if sha256_file(present[rel]) != entry["sha256"]:
            raise DataError(f"{os.path.join(root, rel)}: sha256 differs from {what} (the shard was changed "
                            "or replaced after publication); rebuild the snapshot")
    return files


def verify_shards(version_dir: str) -> None:
    """Check every split of a published version against its manifest.json before a pipeline
    reads it (a shard copied over another, or dropped in, would otherwise be read as that split)."""
    manifest = os.path.join(version_dir, MANIFEST)
    with open(manifest, encoding="utf-8") as f:
        shards = json.load(f)["shards"]
    for split in sorted({s["path"].split("/", 1)[0] for s in shards}):
        prefix = split + "/"
        own = {s["path"][len(prefix):]: s for s in shards if s["path"].startswith(prefix)}
        checked_shards(os.path.join(version_dir, split), own, named=f"{version_dir}/{MANIFEST}")


def read_spec_copy(path: Path) -> dict[str, Any]:
    """A snapshot's copy of its spec (`VERSION/spec.toml`) as a dict; {} when there is none."""
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DataError(f"cannot read the snapshot's spec {path}: {exc}") from exc
