"""`python -m pipelines.build SPEC --out DIR [--mirror DIR] [Beam options]`

Turns the sources of a corpus spec into a clean, versioned, leakage-free snapshot
`DIR/NAME/VERSION/` and points `DIR/NAME/LATEST` at it, last and atomically.

Stages (each a named PTransform): Read -> Normalise -> Segment -> IdentifyLanguage -> Quality
-> AssignSplit per source (cached by source checksum and settings, see source_cache.py), then
over the whole corpus ExactDedup -> NearDedup -> Write. Every unit read ends as exactly one of kept,
rejected (with a reason) or duplicate, and stats.json says so: input = kept + rejected + duplicates.

The version is a content hash of the spec, the source checksums and the pipeline code, so the
same inputs always give the same version and the same bytes.

Exit codes: 0 ok, 1 a source or the build failed, 2 a usage or spec error.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

import pipelines
from pipelines.dedup import ExactDedup, NearDedup
from pipelines.errors import ScarceError, SpecError, run_cli
from pipelines.fetch import ResolvedSource, resolve_sources
from pipelines.lock import CorpusLock
from pipelines.source_cache import cache_root, cached_files, is_cached, process_sources, source_key
from pipelines.spec import CorpusSpec, load_spec
from pipelines.write import Finalise, WriteShards, corpus_order, outcome_keys, rejected_order

LATEST = "LATEST"
HISTORY = "HISTORY"
STAGING_PREFIX = ".staging-"


def code_sha256() -> str:
    """Hash of the pipeline code: a change of code is a new version."""
    h = hashlib.sha256()
    root = Path(pipelines.__file__).parent
    for p in sorted(root.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def snapshot_version(spec: CorpusSpec, resolved: list[ResolvedSource], code: str) -> str:
    h = hashlib.sha256(f"{spec.sha256}\0{code}".encode())
    for r in resolved:
        h.update(f"\0{r.source.name}\0{r.sha256}".encode())
    return h.hexdigest()[:12]


class ApplyPins(beam.PTransform):
    """Records that were in the previous snapshot keep its split (refresh); `pinned` marks them."""

    def expand(self, inputs):
        records, pins = inputs
        return (
            {"records": records | "KeyRecords" >> beam.Map(lambda r: (r["id"], r)), "pins": pins}
            | "JoinPins" >> beam.CoGroupByKey()
            | "Pin" >> beam.FlatMap(_pin)
        )


def _pin(item: tuple[str, dict]) -> Iterator[dict]:
    pins = sorted(item[1]["pins"])
    for r in item[1]["records"]:
        yield {**r, "split": pins[0], "pinned": True} if pins else r


def _split_of_path(item: tuple[str, dict]) -> tuple[str, str]:
    path, row = item
    return row["id"], os.path.basename(os.path.dirname(path))


class FinishCorpus(beam.PTransform):
    """Corpus-wide stages over every source's cached output: pins, dedup, split, write."""

    def __init__(self, spec: CorpusSpec, record_files: list[str], rejected_files: list[str], root: str,
                 version: str, manifest: dict[str, Any], segment: dict[str, int], pin_files: list[str]):
        super().__init__()
        self.spec, self.record_files, self.rejected_files, self.root = spec, record_files, rejected_files, root
        self.version, self.manifest, self.segment, self.pin_files = version, manifest, segment, pin_files

    def expand(self, pbegin):
        spec = self.spec
        records = (pbegin | "RecordFiles" >> beam.Create(self.record_files)
                   | "ReadRecords" >> beam.io.ReadAllFromParquet())
        rejected = (pbegin | "RejectedFiles" >> beam.Create(self.rejected_files)
                    | "ReadRejected" >> beam.io.ReadAllFromText()
                    | "ParseRejected" >> beam.Map(json.loads))
        if self.pin_files:
            pins = (pbegin | "PinFiles" >> beam.Create(self.pin_files)
                    | "ReadPins" >> beam.io.ReadAllFromParquet(columns=["id"], with_filename=True)
                    | "PinSplit" >> beam.Map(_split_of_path))
            records = (records, pins) | "ApplyPins" >> ApplyPins()

        duplicates = []
        if spec.dedup.exact:
            exact = records | "ExactDedup" >> ExactDedup()
            records, duplicates = exact.kept, [exact.duplicates]
        if spec.dedup.near != "off":
            records, near_dups = records | "NearDedup" >> NearDedup(spec.dedup)
            duplicates.append(near_dups)
        dups = (tuple(duplicates) or (pbegin | "NoDuplicates" >> beam.Create([]),)) | "AllDuplicates" >> beam.Flatten()

        shards = (records | "BySplit" >> beam.Map(lambda r: (r["split"], r))
                  | "WriteSplits" >> WriteShards(self.root, "parquet", spec.output.rows_per_shard, corpus_order))
        dropped = (rejected, dups) | "RejectedAndDuplicates" >> beam.Flatten()
        (dropped | "ByRejected" >> beam.Map(lambda r: ("rejected", r))
         | "WriteRejected" >> WriteShards(self.root, "jsonl", spec.output.rows_per_shard, rejected_order, None))
        counts = (
            (records | "KeptKeys" >> beam.Map(outcome_keys("kept")),
             rejected | "RejectedKeys" >> beam.Map(outcome_keys("rejected")),
             dups | "DuplicateKeys" >> beam.Map(outcome_keys("duplicate")))
            | "AllOutcomes" >> beam.Flatten()
            | "CountOutcomes" >> beam.combiners.Count.PerElement()
        )
        chars = (records | "SplitChars" >> beam.Map(lambda r: (r["split"], len(r["text"])))
                 | "SumChars" >> beam.CombinePerKey(sum))
        return (
            pbegin
            | "Once" >> beam.Create([None])
            | "Finalise" >> beam.ParDo(
                Finalise(self.root, spec, self.version, self.manifest, self.segment),
                beam.pvalue.AsList(shards), beam.pvalue.AsList(counts), beam.pvalue.AsList(chars))
        )


@dataclass
class Staged:
    """A snapshot built into a staging folder, not yet published."""

    corpus_dir: str
    staging: str
    version: str
    stats: dict[str, Any]
    processed: list[str]  # sources run through the per-source stages (the rest came from cache)


def split_files(version_dir: str) -> list[str]:
    """The Parquet shards of a published snapshot's splits."""
    with FileSystems.open(FileSystems.join(version_dir, "manifest.json")) as f:
        manifest = json.loads(f.read())
    return [FileSystems.join(version_dir, s["path"]) for s in manifest["shards"] if s["rows"]]


def stage_snapshot(spec: CorpusSpec, out: str, resolved: list[ResolvedSource], beam_args: list[str] | None = None,
                   pins_from: str | None = None) -> Staged:
    """Process what changed, then build the whole snapshot into a staging folder.

    `pins_from` names a published version folder whose records keep their split (refresh).
    """
    code = code_sha256()
    version = snapshot_version(spec, resolved, code)
    corpus_dir = FileSystems.join(out, spec.name)
    root = cache_root(corpus_dir)
    keys = [source_key(spec, r, code) for r in resolved]
    todo = [(r, k) for r, k in zip(resolved, keys) if not is_cached(root, k)]
    beam_args = beam_args or []
    staging = FileSystems.join(corpus_dir, f"{STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
    manifest = {
        "name": spec.name, "version": version, "language": spec.language, "spec_sha256": spec.sha256,
        "code_version": pipelines.__version__, "code_sha256": code, "split_method": spec.split.method,
        "sources": [{"name": r.source.name, "kind": r.source.kind, "location": r.source.location,
                     "format": r.source.format, "sha256": r.sha256} for r in resolved],
    }
    try:
        if todo:
            process_sources(spec, todo, root, beam_args)
        record_files, rejected_files, segment = cached_files(root, keys)
        pin_files = split_files(pins_from) if pins_from else []
        with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
            _ = p | "FinishCorpus" >> FinishCorpus(spec, record_files, rejected_files, staging, version, manifest,
                                                   segment, pin_files)
    except ScarceError:
        remove_path(staging)
        raise
    except Exception as exc:
        remove_path(staging)
        raise ScarceError(f"build of {spec.name} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    with FileSystems.open(FileSystems.join(staging, "stats.json")) as f:
        stats = json.loads(f.read())
    return Staged(corpus_dir, staging, version, stats, [r.source.name for r, _ in todo])


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
        tmp = f"{latest}.{uuid.uuid4().hex}.tmp"
        Path(tmp).write_text(version + "\n", encoding="utf-8")
        os.replace(tmp, latest)
    else:
        with FileSystems.create(latest) as f:
            f.write((version + "\n").encode())
    return target


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


def build(spec: CorpusSpec, out: str, mirror: str | None = None, beam_args: list[str] | None = None,
          resolved: list[ResolvedSource] | None = None) -> dict[str, Any]:
    """Build and publish a snapshot; returns a summary with the version, paths and stats."""
    resolved = resolved if resolved is not None else resolve_sources(spec, mirror)
    corpus_dir = FileSystems.join(out, spec.name)
    with CorpusLock(corpus_dir):
        clean_stale_staging(corpus_dir)
        staged = stage_snapshot(spec, out, resolved, beam_args)
        target = publish(corpus_dir, staged.staging, staged.version)
    return {"name": spec.name, "version": staged.version, "path": target, "stats": staged.stats,
            "processed_sources": staged.processed}


def summary_text(result: dict[str, Any]) -> str:
    s = result["stats"]
    lines = [f"{result['name']} {result['version']} -> {result['path']}",
             f"  input {s['input']} = kept {s['kept']} + rejected {s['rejected']} + duplicates {s['duplicates']}",
             "  splits: " + ", ".join(f"{k} {v}" for k, v in s["splits"].items())]
    for stage, reasons in s["stages"].items():
        lines.append(f"  {stage}: " + ", ".join(f"{r} {n}" for r, n in reasons.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.build", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="corpus spec, e.g. corpora/gl-ctg.toml")
    parser.add_argument("--out", required=True, help="output folder (local, gs:// or s3://)")
    parser.add_argument("--mirror", help="serve URL sources from this folder (or set SCARCE_LM_MIRROR)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args, beam_args = parser.parse_known_args(argv)
    check_beam_args(beam_args)
    spec = load_spec(args.spec)
    result = build(spec, args.out, args.mirror, beam_args)
    print(json.dumps(result, indent=2) if args.json else summary_text(result))
    return 0


def check_beam_args(beam_args: list[str]) -> None:
    """Options our parser did not take must be Beam's; anything else is a usage error (exit 2)."""
    known = PipelineOptions([]).get_all_options(drop_default=False, retain_unknown_options=False)
    for arg in beam_args:
        if arg.startswith("--") and arg[2:].split("=", 1)[0] not in known:
            raise SpecError(f"unknown option {arg} (not a Beam pipeline option either)")


if __name__ == "__main__":
    sys.exit(run_cli(main))
