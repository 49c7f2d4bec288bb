"""The build pipeline: every source's cached output in, a staged snapshot out.

`stage_snapshot` runs the per-source stages for the sources whose cache key is new
(source_cache.py), then `FinishCorpus` over every source: ApplyPins (refresh) -> ExactDedup ->
NearDedup -> Write, into a staging folder that `snapshot.publish` later moves into place. Every
unit read ends as exactly one of kept, rejected (with a reason) or duplicate, and stats.json
says so: input = kept + rejected + duplicates.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

import pipelines
from pipelines.dedup import ExactDedup, NearDedup
from pipelines.fetch import ResolvedSource
from pipelines.runners import pipeline_options, staging_location
from pipelines.snapshot import (Staged, cache_root, cleaned_on_failure, code_sha256, snapshot_version, split_files,
                                staging_dir)
from pipelines.source_cache import cached_files, is_cached, process_sources, source_key
from pipelines.spec import CorpusSpec
from pipelines.staging import stage_source
from pipelines.write import Finalise, WriteShards, corpus_order, outcome_keys, rejected_order


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

        # What the dedup stages reject are the duplicates: counted apart from `rejected` in stats.
        duplicates = []
        if spec.dedup.exact:
            records, exact_dups = records | "ExactDedup" >> ExactDedup()
            duplicates.append(exact_dups)
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
    staging = staging_dir(corpus_dir, version)
    manifest = {
        "name": spec.name, "version": version, "language": spec.language, "spec_sha256": spec.sha256,
        "code_version": pipelines.__version__, "code_sha256": code, "split_method": spec.split.method,
        "sources": [{"name": r.source.name, "kind": r.source.kind, "location": r.source.location,
                     "format": r.source.format, "sha256": r.sha256} for r in resolved],
    }
    location = staging_location(beam_args, corpus_dir)
    if location:
        todo = [(stage_source(r, location), k) for r, k in todo]
    with cleaned_on_failure(staging, f"build of {spec.name}"):
        if todo:
            process_sources(spec, todo, root, beam_args)
        record_files, rejected_files, segment = cached_files(root, keys)
        pin_files = split_files(pins_from) if pins_from else []
        with beam.Pipeline(options=pipeline_options(beam_args)) as p:
            _ = p | "FinishCorpus" >> FinishCorpus(spec, record_files, rejected_files, staging, version, manifest,
                                                   segment, pin_files)
    with FileSystems.open(FileSystems.join(staging, "stats.json")) as f:
        stats = json.loads(f.read())
    return Staged(corpus_dir, staging, version, stats, [r.source.name for r, _ in todo])
