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
from collections import Counter
from typing import Any, Iterable, Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

import pipelines
from pipelines.dedup import ExactDedup, NearDedup
from pipelines.fetch import ResolvedSource
from pipelines.records import BATCH, batched, group_by
from pipelines.runners import pipeline_options, staging_location
from pipelines.snapshot import (Staged, cache_root, cleaned_on_failure, code_sha256, snapshot_version, split_files,
                                staging_dir)
from pipelines.source_cache import cached_files, is_cached, process_sources, source_key
from pipelines.spec import CorpusSpec
from pipelines.staging import stage_source
from pipelines.write import Finalise, WriteShards, corpus_order, outcome_counts, rejected_order


class ReadBatches(beam.DoFn):
    """A Parquet (records) or JSON-lines (rejections) file of ours, as batches of dicts."""

    def process(self, path: str) -> Iterator[list[dict[str, Any]]]:
        with FileSystems.open(path) as f:
            data = f.read()
        if path.endswith(".parquet"):
            for part in pq.read_table(pa.BufferReader(data)).to_batches(BATCH):
                yield part.to_pylist()
        else:
            yield from batched(map(json.loads, data.decode("utf-8").splitlines()))


def _pins_of(path: str) -> dict[str, str]:
    """{id: split} of one shard of the previous snapshot (the split is the shard's folder)."""
    with FileSystems.open(path) as f:
        ids = pq.read_table(pa.BufferReader(f.read()), columns=["id"]).column("id").to_pylist()
    split = os.path.basename(os.path.dirname(path))
    return dict.fromkeys(ids, split)


def _merge_pins(item: tuple[None, Iterable[dict[str, str]]]) -> dict[str, str]:
    """One {id: split} map; an id in several splits keeps the first split by name."""
    pins: dict[str, str] = {}
    for part in item[1]:
        for rid, split in part.items():
            pins[rid] = min(split, pins.get(rid, split))
    return pins


def _pin(batch: list[dict[str, Any]], pins: dict[str, str]) -> list[dict[str, Any]]:
    return [{**r, "split": pins[r["id"]], "pinned": True} if r["id"] in pins else r for r in batch]


class ApplyPins(beam.PTransform):
    """Records that were in the previous snapshot keep its split (refresh); `pinned` marks them."""

    def __init__(self, pin_files: list[str]):
        super().__init__()
        self.pin_files = pin_files

    def expand(self, batches):
        pins = (batches.pipeline | "PinFiles" >> beam.Create(self.pin_files) | "ReadPins" >> beam.Map(_pins_of)
                | "OneKey" >> beam.Map(lambda d: (None, d)) | "AllPins" >> beam.GroupByKey()
                | "MergePins" >> beam.Map(_merge_pins))
        return batches | "Pin" >> beam.Map(_pin, beam.pvalue.AsSingleton(pins))


def _by_split(batch: list[dict[str, Any]]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    yield from group_by(batch, lambda r: r["split"]).items()


def _split_chars(batch: list[dict[str, Any]]) -> Iterator[tuple[str, int]]:
    chars: Counter = Counter()
    for r in batch:
        chars[r["split"]] += len(r["text"])
    yield from chars.items()


class FinishCorpus(beam.PTransform):
    """Corpus-wide stages over every source's cached output, in batches: pins, dedup, split, write."""

    def __init__(self, spec: CorpusSpec, record_files: list[str], rejected_files: list[str], root: str,
                 version: str, manifest: dict[str, Any], segment: dict[str, int], pin_files: list[str]):
        super().__init__()
        self.spec, self.record_files, self.rejected_files, self.root = spec, record_files, rejected_files, root
        self.version, self.manifest, self.segment, self.pin_files = version, manifest, segment, pin_files

    def expand(self, pbegin):
        spec = self.spec
        records = pbegin | "RecordFiles" >> beam.Create(self.record_files) | "ReadRecords" >> beam.ParDo(ReadBatches())
        if not spec.dedup.exact:  # exact dedup's shuffle would spread the batches over the workers
            records = records | "Spread" >> beam.Reshuffle()
        rejected = pbegin | "RejectedFiles" >> beam.Create(self.rejected_files) | "ReadRejected" >> beam.ParDo(ReadBatches())
        if self.pin_files:
            records = records | "ApplyPins" >> ApplyPins(self.pin_files)

        # What the dedup stages reject are the duplicates: counted apart from `rejected` in stats.
        duplicates = []
        if spec.dedup.exact:
            records, exact_dups = records | "ExactDedup" >> ExactDedup()
            duplicates.append(exact_dups)
        sizes = []
        if spec.dedup.near != "off":
            records, near_dups, lsh = records | "NearDedup" >> NearDedup(spec.dedup)
            duplicates.append(near_dups)
            sizes.append(lsh | "LshKeys" >> beam.Map(lambda kv: (("shuffle", "", "near_dedup", kv[0]), kv[1])))
        dups = (tuple(duplicates) or (pbegin | "NoDuplicates" >> beam.Create([]),)) | "AllDuplicates" >> beam.Flatten()

        shards = (records | "BySplit" >> beam.FlatMap(_by_split)
                  | "WriteSplits" >> WriteShards(self.root, "parquet", spec.output.rows_per_shard, corpus_order))
        dropped = (rejected, dups) | "RejectedAndDuplicates" >> beam.Flatten()
        (dropped | "ByRejected" >> beam.Map(lambda batch: ("rejected", batch))
         | "WriteRejected" >> WriteShards(self.root, "jsonl", spec.output.rows_per_shard, rejected_order, None))
        counts = (
            (records | "KeptKeys" >> beam.FlatMap(outcome_counts("kept")),
             rejected | "RejectedKeys" >> beam.FlatMap(outcome_counts("rejected")),
             dups | "DuplicateKeys" >> beam.FlatMap(outcome_counts("duplicate")), *sizes)
            | "AllOutcomes" >> beam.Flatten()
            | "CountOutcomes" >> beam.CombinePerKey(sum)
        )
        chars = records | "SplitChars" >> beam.FlatMap(_split_chars) | "SumChars" >> beam.CombinePerKey(sum)
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
