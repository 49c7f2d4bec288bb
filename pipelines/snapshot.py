"""Snapshot versions, LATEST, staging and publication: the layout of `OUT/NAME/` that build,
refresh and augment share.

`OUT/NAME/VERSION/` is a complete snapshot (it has a `manifest.json`); `OUT/NAME/LATEST` names
the newest one and is replaced atomically, last; `OUT/NAME/HISTORY` lists versions in
publication order. A snapshot is built into a staging folder (`.staging-*`) and renamed into
place, so a reader never sees half of one; staging left by a killed run is removed under the
corpus lock. The version is a content hash of the spec, the source checksums and the pipeline
code, so the same inputs always give the same version.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from apache_beam.io.filesystems import FileSystems

import pipelines
from augment.util import cache_dir, first_line, write_text_atomic
from pipelines.errors import ScarceError, SourceError
from pipelines.fetch import ResolvedSource
from pipelines.spec import CorpusSpec

LATEST = "LATEST"
HISTORY = "HISTORY"
STAGING_PREFIX = ".staging-"


def code_sha256() -> str:
    """Hash of the pipeline code, every .py file under pipelines/ (sub-folders too): a change
    of code is a new version. Files are taken by relative path, so the hash is the same on
    every machine."""
    h = hashlib.sha256()
    root = Path(pipelines.__file__).parent
    for p in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def snapshot_version(spec: CorpusSpec, resolved: list[ResolvedSource], code: str) -> str:
    h = hashlib.sha256(f"{spec.sha256}\0{code}".encode())
    for r in resolved:
        h.update(f"\0{r.source.name}\0{r.sha256}".encode())
    return h.hexdigest()[:12]


@dataclass
class Staged:
    """A snapshot built into a staging folder, not yet published."""

    corpus_dir: str
    staging: str
    version: str
    stats: dict[str, Any]
    processed: list[str]  # sources run through the per-source stages (the rest came from cache)


def staging_dir(folder: str, label: str = "") -> str:
    """A fresh staging folder name under `folder` (a corpus or the source cache)."""
    return FileSystems.join(folder, f"{STAGING_PREFIX}{label + '-' if label else ''}{uuid.uuid4().hex[:8]}")


def cache_root(corpus_dir: str) -> str:
    """The per-source cache: beside the snapshots; for gs:// or s3:// outputs, in the local
    cache (it is rebuildable)."""
    if "://" in corpus_dir:
        return str(cache_dir() / "sources" / corpus_dir.rstrip("/").rsplit("/", 1)[-1])
    return os.path.join(corpus_dir, ".cache", "sources")


def split_files(version_dir: str) -> list[str]:
    """The Parquet shards of a published snapshot's splits."""
    with FileSystems.open(FileSystems.join(version_dir, "manifest.json")) as f:
        manifest = json.loads(f.read())
    return [FileSystems.join(version_dir, s["path"]) for s in manifest["shards"] if s["rows"]]


@contextmanager
def cleaned_on_failure(staging: str, what: str) -> Iterator[None]:
    """Around a pipeline writing into `staging`: on failure the folder goes, and an unexpected
    error becomes a one-line ScarceError naming `what` (the traceback stays as its cause)."""
    try:
        yield
    except Exception as exc:
        remove_path(staging)
        if isinstance(exc, ScarceError):
            raise
        raise ScarceError(f"{what} failed: {type(exc).__name__}: {first_line(exc)}") from exc


def clean_stale_staging(corpus_dir: str) -> list[str]:
    """Remove staging folders left by a killed run; call only while holding the corpus lock."""
    if "://" in corpus_dir or not os.path.isdir(corpus_dir):
        return []
    stale = []
    for folder in (corpus_dir, cache_root(corpus_dir)):
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.startswith(STAGING_PREFIX):
                    shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
                    stale.append(name)
    return stale


def publish(corpus_dir: str, staging: str, version: str) -> str:
    """Move a finished staging folder into place, then replace LATEST (last, atomically)."""
    target = FileSystems.join(corpus_dir, version)
    local = "://" not in corpus_dir
    if FileSystems.exists(FileSystems.join(target, "manifest.json")):
        # Same content hash: a rebuild of an existing version; keep the published copy.
        remove_path(staging)
    elif local:
        if os.path.exists(target):
            shutil.rmtree(target)  # a partial folder from a crash between renames
        os.replace(staging, target)
    else:
        files = [m.path for m in FileSystems.match([FileSystems.join(staging, "**")])[0].metadata_list]
        FileSystems.rename(files, [target + f[len(staging):] for f in files])
    latest = FileSystems.join(corpus_dir, LATEST)
    if local:
        with open(os.path.join(corpus_dir, HISTORY), "a", encoding="utf-8") as f:
            f.write(version + "\n")  # publication order, for --keep
        write_text_atomic(latest, version + "\n")
    else:
        with FileSystems.create(latest) as f:
            f.write((version + "\n").encode())
    return target


def replace_folder(staging: str, target: str) -> None:
    """Swap a finished folder into place: the old one is moved aside first, then removed."""
    old = f"{target}.old-{uuid.uuid4().hex[:8]}"
    if os.path.exists(target):
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def remove_path(path: str) -> None:
    """Delete a folder (local or through FileSystems); missing is fine."""
    if "://" not in path:
        shutil.rmtree(path, ignore_errors=True)
    elif FileSystems.exists(path):
        FileSystems.delete([path])


def read_latest(corpus_dir: str) -> str | None:
    path = FileSystems.join(corpus_dir, LATEST)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        return f.read().decode().strip() or None


def resolve_version(corpus_dir: str, version: str | None) -> str:
    """The folder of `version`, or of the one LATEST names; it must be a complete snapshot."""
    version = version or read_latest(corpus_dir)
    if not version:
        raise SourceError(f"{corpus_dir}: no LATEST snapshot; build one first (python -m pipelines.build SPEC --out DIR)")
    vdir = os.path.join(corpus_dir, version)
    if not os.path.exists(os.path.join(vdir, "manifest.json")):
        raise SourceError(f"{vdir}: not a complete snapshot (no manifest.json)")
    return vdir
