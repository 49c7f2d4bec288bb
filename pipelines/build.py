"""`python -m pipelines.build SPEC --out DIR [--mirror DIR] [Beam options]`

Turns the sources of a corpus spec into a clean, versioned, leakage-free snapshot
`DIR/NAME/VERSION/` and points `DIR/NAME/LATEST` at it, last and atomically.

Stages (each a named PTransform): Read -> Normalise -> Segment -> IdentifyLanguage -> Quality
-> AssignSplit -> ExactDedup -> NearDedup -> Write. Every unit read ends as exactly one of kept,
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
from pathlib import Path
from typing import Any, Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

import pipelines
from pipelines import readers
from pipelines.dedup import ExactDedup, NearDedup
from pipelines.errors import ScarceError, SpecError, run_cli
from pipelines.fetch import ResolvedSource, resolve_sources
from pipelines.langid import IdentifyLanguage
from pipelines.normalise import NormaliseText
from pipelines.quality import QualityFilter
from pipelines.segment import Segment
from pipelines.spec import CorpusSpec, load_spec
from pipelines.split import assign_split
from pipelines.write import Finalise, WriteShards, corpus_order, outcome_keys, rejected_order

LATEST = "LATEST"
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


class ReadSource(beam.DoFn):
    def process(self, info: dict[str, Any]) -> Iterator[Any]:
        for kind, item in readers.read_source(info):
            yield item if kind == "ok" else beam.pvalue.TaggedOutput("rejected", item)


class _Count(beam.DoFn):
    """Counts records that ask for segmentation (before and after it) for stats.json."""

    def __init__(self, key: str):
        self.key = key

    def process(self, record: dict[str, Any]) -> Iterator[str]:
        if record.get("segment"):
            yield self.key


class BuildCorpus(beam.PTransform):
    """The whole build as one transform: source infos in, stats dict out (files written)."""

    def __init__(self, spec: CorpusSpec, infos: list[dict[str, Any]], root: str, version: str, manifest: dict[str, Any]):
        super().__init__()
        self.spec, self.infos, self.root, self.version, self.manifest = spec, infos, root, version, manifest

    def expand(self, pbegin):
        spec = self.spec
        read = (
            pbegin
            | "Sources" >> beam.Create(self.infos)
            | "Read" >> beam.ParDo(ReadSource()).with_outputs("rejected", main="units")
        )
        units = read.units | "Spread" >> beam.Reshuffle()
        normal = units | "Normalise" >> beam.ParDo(NormaliseText()).with_outputs("rejected", main="records")
        segmented = normal.records | "Segment" >> Segment()
        lang = segmented | "IdentifyLanguage" >> beam.ParDo(IdentifyLanguage(
            spec.language, spec.langid.confusable, spec.langid.action, spec.langid.min_score)
        ).with_outputs("rejected", main="records")
        good = lang.records | "Quality" >> beam.ParDo(QualityFilter(spec.filters)).with_outputs("rejected", main="records")
        records = good.records | "AssignSplit" >> beam.Map(assign_split, spec.split)

        duplicates = []
        if spec.dedup.exact:
            exact = records | "ExactDedup" >> ExactDedup()
            records, duplicates = exact.kept, [exact.duplicates]
        if spec.dedup.near != "off":
            records, near_dups = records | "NearDedup" >> NearDedup(spec.dedup)
            duplicates.append(near_dups)

        rejected = (read.rejected, normal.rejected, lang.rejected, good.rejected) | "AllRejected" >> beam.Flatten()
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
        segment = (
            (normal.records | "UnitsToSegment" >> beam.ParDo(_Count("units_in")),
             segmented | "SentencesOut" >> beam.ParDo(_Count("sentences_out")))
            | "SegmentKeys" >> beam.Flatten()
            | "CountSegment" >> beam.combiners.Count.PerElement()
        )
        chars = (records | "SplitChars" >> beam.Map(lambda r: (r["split"], len(r["text"])))
                 | "SumChars" >> beam.CombinePerKey(sum))
        return (
            pbegin
            | "Once" >> beam.Create([None])
            | "Finalise" >> beam.ParDo(
                Finalise(self.root, spec, self.version, self.manifest),
                beam.pvalue.AsList(shards), beam.pvalue.AsList(counts),
                beam.pvalue.AsList(segment), beam.pvalue.AsList(chars))
        )


def publish(corpus_dir: str, staging: str, version: str) -> str:
    """Move a finished staging folder into place, then replace LATEST (last, atomically)."""
    target = FileSystems.join(corpus_dir, version)
    local = "://" not in corpus_dir
    if FileSystems.exists(FileSystems.join(target, "manifest.json")):
        # Same content hash: a rebuild of an existing version; keep the published copy.
        _remove(staging)
    elif local:
        if os.path.exists(target):
            shutil.rmtree(target)  # a partial folder from a crash between renames
        os.replace(staging, target)
    else:
        files = [m.path for m in FileSystems.match([FileSystems.join(staging, "**")])[0].metadata_list]
        FileSystems.rename(files, [target + f[len(staging):] for f in files])
    latest = FileSystems.join(corpus_dir, LATEST)
    if local:
        tmp = f"{latest}.{uuid.uuid4().hex}.tmp"
        Path(tmp).write_text(version + "\n", encoding="utf-8")
        os.replace(tmp, latest)
    else:
        with FileSystems.create(latest) as f:
            f.write((version + "\n").encode())
    return target


def _remove(path: str) -> None:
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
    code = code_sha256()
    version = snapshot_version(spec, resolved, code)
    corpus_dir = FileSystems.join(out, spec.name)
    staging = FileSystems.join(corpus_dir, f"{STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
    manifest = {
        "name": spec.name, "version": version, "language": spec.language, "spec_sha256": spec.sha256,
        "code_version": pipelines.__version__, "code_sha256": code, "split_method": spec.split.method,
        "sources": [{"name": r.source.name, "kind": r.source.kind, "location": r.source.location,
                     "format": r.source.format, "sha256": r.sha256} for r in resolved],
    }
    infos = [readers.source_info(r, spec) for r in resolved]
    options = PipelineOptions(beam_args or [])
    try:
        with beam.Pipeline(options=options) as p:
            _ = p | "BuildCorpus" >> BuildCorpus(spec, infos, staging, version, manifest)
    except ScarceError:
        _remove(staging)
        raise
    except Exception as exc:
        _remove(staging)
        raise ScarceError(f"build of {spec.name} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    target = publish(corpus_dir, staging, version)
    with FileSystems.open(FileSystems.join(target, "stats.json")) as f:
        stats = json.loads(f.read())
    return {"name": spec.name, "version": version, "path": target, "stats": stats}


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
