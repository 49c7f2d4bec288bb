"""Sources staged where every worker can read them.

A build resolves its sources on the launching machine (downloads land in its cache, mirrors are
matched there). Workers of a distributed runner may be other machines, so before the per-source
stages run, each resolved source file is copied through Beam's FileSystems to the staging
location (`--staging`, or `OUT/NAME/.staged-sources`): a local or shared folder, gs:// or s3://.
Files are named by their sha256, so a source already staged is not copied again, and staging
never changes what is built (cache keys and versions use the sha256, not the path).
"""
from __future__ import annotations

import dataclasses
import os
import shutil

from apache_beam.io.filesystems import CompressionTypes, FileSystems

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
        with open(resolved.local, "rb") as src, \
                FileSystems.create(partial, compression_type=CompressionTypes.UNCOMPRESSED) as dst:
            shutil.copyfileobj(src, dst, CHUNK)
        FileSystems.rename([partial], [target])
    return dataclasses.replace(resolved, local=target)


def open_source(path: str):
    """A source file, staged or not, opened for reading as bytes (never decompressed by name)."""
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
