"""Snapshot versions, LATEST, staging and publication: the layout of `OUT/NAME/` that build,
refresh and augment share.

`OUT/NAME/VERSION/` is a complete snapshot (it has a `manifest.json`); `OUT/NAME/LATEST` names
the newest one and is replaced atomically, last; `OUT/NAME/HISTORY` lists versions in
publication order. A snapshot is built into a staging folder (`.staging-*`) and renamed into
place, so a reader never sees half of one; staging left by a killed run is removed under the
corpus lock. The version is a content hash of the spec, the source checksums and the pipeline
code, so the same inputs always give the same version. Reading LATEST, resolving a version and
checking its shards belong to the snapshot format (`common.snapshot_format`), which `lm` reads
by too.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from apache_beam.io.filesystems import FileSystems

import pipelines
from common.errors import first_line
from common.files import user_cache_dir, write_text_atomic
from common.snapshot_format import LATEST, MANIFEST
from pipelines.errors import ScarceError
from pipelines.fetch import ResolvedSource
from pipelines.lock import CorpusLock
from pipelines.spec import CorpusSpec

HISTORY = "HISTORY"
STAGING_PREFIX = ".staging-"
# Inside a version folder: pipelines.augment's work in progress, renamed to `augmented/` when done.
AUGMENTED_STAGING_PREFIX = ".augmented-staging-"


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
        return str(user_cache_dir() / "sources" / corpus_dir.rstrip("/").rsplit("/", 1)[-1])
    return os.path.join(corpus_dir, ".cache", "sources")


def split_files(version_dir: str) -> list[str]:
    """The Parquet shards of a published snapshot's splits."""
    with FileSystems.open(FileSystems.join(version_dir, MANIFEST)) as f:
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
        raise ScarceError(f"{what} failed: {type(exc).__name__}: {first_line(exc, default='', limit=None)}") from exc


def augmented_staging_dir(version_dir: str) -> str:
    """A fresh folder inside a version for pipelines.augment to write into."""
    return os.path.join(version_dir, f"{AUGMENTED_STAGING_PREFIX}{uuid.uuid4().hex[:8]}")


def clean_stale_staging(corpus_dir: str) -> list[str]:
    """Remove staging folders left by a killed run (a build's or refresh's beside the versions
    and in the source cache, an augment's inside a version); call only while holding the corpus
    lock. Returns their names, relative to the corpus folder."""
    if "://" in corpus_dir or not os.path.isdir(corpus_dir):
        return []
    versions = [os.path.join(corpus_dir, n) for n in sorted(os.listdir(corpus_dir))
                if not n.startswith(".") and os.path.isdir(os.path.join(corpus_dir, n))]
    stale = []
    for folder, prefix in [(corpus_dir, STAGING_PREFIX), (cache_root(corpus_dir), STAGING_PREFIX),
                           *((v, AUGMENTED_STAGING_PREFIX) for v in versions)]:
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.startswith(prefix):
                    path = os.path.join(folder, name)
                    shutil.rmtree(path, ignore_errors=True)
                    stale.append(os.path.relpath(path, corpus_dir) if prefix == AUGMENTED_STAGING_PREFIX else name)
    return stale


F = TypeVar("F", bound=Callable[..., Any])


def holding_corpus_lock(fn: F) -> F:
    """Run `fn(corpus_dir, ...)` holding that corpus's lock, after removing stale staging: for
    commands that write into a published version (augment). A missing corpus folder is left
    for `fn` to report, not created."""
    @wraps(fn)
    def locked(corpus_dir: str, *args: Any, **kwargs: Any) -> Any:
        if "://" in corpus_dir or not os.path.isdir(corpus_dir):
            return fn(corpus_dir, *args, **kwargs)
        with CorpusLock(corpus_dir):
            clean_stale_staging(corpus_dir)
            return fn(corpus_dir, *args, **kwargs)
    return locked  # type: ignore[return-value]


def publish(corpus_dir: str, staging: str, version: str) -> str:
    """Move a finished staging folder into place, then replace LATEST (last, atomically)."""
    target = FileSystems.join(corpus_dir, version)
    local = "://" not in corpus_dir
    if FileSystems.exists(FileSystems.join(target, MANIFEST)):
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
