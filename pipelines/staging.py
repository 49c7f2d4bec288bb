"""Sources staged where every worker can read them.

A build resolves its sources on the launching machine (downloads land in its cache, mirrors are
matched there). Workers of a distributed runner may be other machines, so before the per-source
stages run, each resolved source file is copied through Beam's FileSystems to the staging
location (`--staging`, or `OUT/NAME/.staged-sources`): a local or shared folder, gs:// or s3://.
Files are named by their sha256, so a source already staged is not copied again, and staging
never changes what is built (cache keys and versions use the sha256, not the path).

The bytes used are the bytes hashed: the copy is hashed as it is made, and the readers hash what
they read (`check_read`); a source file replaced since it was resolved (and its sha256 recorded or
checked against its pin) is a SourceError naming both hashes, never other text under the old hash.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os

from apache_beam.io.filesystems import CompressionTypes, FileSystems

from pipelines.errors import SourceError
from pipelines.fetch import ResolvedSource

CHUNK = 1 << 22


def stage_source(resolved: ResolvedSource, location: str) -> ResolvedSource:
    """`resolved` with `local` naming its copy under `location` (Hugging Face datasets are left
    where the datasets library reads them)."""
    if resolved.source.kind == "hf":
        return resolved
    target = FileSystems.join(location, f"{resolved.sha256}-{os.path.basename(resolved.local)}")
    size = os.path.getsize(resolved.local)
    if not (FileSystems.exists(target) and FileSystems.metadata(target).size_in_bytes == size):
        partial = target + ".partial"
        h = hashlib.sha256()
        with open(resolved.local, "rb") as src, \
                FileSystems.create(partial, compression_type=CompressionTypes.UNCOMPRESSED) as dst:
            for chunk in iter(lambda: src.read(CHUNK), b""):
                h.update(chunk)
                dst.write(chunk)
        if h.hexdigest() != resolved.sha256:
            FileSystems.delete([partial])
            raise changed(resolved.source.name, resolved.local, resolved.sha256, h.hexdigest(),
                          bool(resolved.source.sha256))
        FileSystems.rename([partial], [target])
    return dataclasses.replace(resolved, local=target)


def changed(name: str, where: str, expected: str, got: str, pinned: bool) -> SourceError:
    """The one-line error for a source whose bytes read are not the bytes resolved."""
    if pinned:
        return SourceError(f"source {name}: {where} changed during the build: the bytes read have sha256 {got}, "
                           f"not the pinned {expected}; nothing was built from them")
    return SourceError(f"source {name}: {where} changed during the build (sha256 {expected} when resolved, "
                       f"{got} when read); nothing was built from it, run the build again")


def check_read(info: dict, data: bytes) -> None:
    """Raise `changed` unless `data`, a source's bytes as a reader read them, has the sha256 the
    source was resolved with (`info["sha256"]`; infos without one are not checked)."""
    expected = info.get("sha256")
    if expected:
        got = hashlib.sha256(data).hexdigest()
        if got != expected:
            raise changed(info["name"], info["local"], expected, got, bool(info.get("pinned")))


def open_source(path: str):
    """A source file, staged or not, opened for reading as bytes (never decompressed by name)."""
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
