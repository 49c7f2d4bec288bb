"""The build pipeline: sources in, a staged snapshot out, in one Beam pipeline.

`stage_snapshot` runs `BuildCorpus`: the per-source stages for the sources whose cache key is
new (source_cache.py; their output is also written to the cache), the cached output of the
others, then over every source ApplyPins (refresh) -> ExactDedup -> NearDedup -> Write, into a
staging folder that `snapshot.publish` later moves into place. One pipeline, not one for the
sources and one for the corpus: a runner's fixed cost per pipeline and per transform is most of
the time of a small corpus's build. Every unit read ends as exactly one of kept, rejected (with
a reason) or duplicate, and stats.json says so: input = kept + rejected + duplicates.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Iterable, Iterator, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

import pipelines
from common.snapshot_format import SPLITS, STATS
from pipelines.dedup import ExactDedup, NearDedup
from pipelines import readers
from pipelines.fetch import ResolvedSource
from pipelines.records import BATCH, batched, group_by
from pipelines.runners import pipeline_options, staging_location
from pipelines.snapshot import (Staged, cache_root, cleaned_on_failure, code_sha256, snapshot_version, split_files,
                                staging_dir)
from pipelines.source_cache import ProcessSources, WriteCache, cached_files, commit_sources, is_cached, source_key
from pipelines.spec import CorpusSpec
from pipelines.staging import stage_source
from pipelines.write import (Finalise, ShardFormat, WriteShards, corpus_order, dropped_counts, kept_counts,
                             rejected_order)


class ReadBatches(beam.DoFn):
    """(kind, path) of a cached file of ours: a Parquet file's records, or a JSON-lines file's
    rejections (tag `rejected`), as batches of dicts."""

    def process(self, item: tuple[str, str]) -> Iterator[Any]:
        kind, path = item
        with FileSystems.open(path) as f:
            data = f.read()
        if kind == "records":
            for part in pq.read_table(pa.BufferReader(data)).to_batches(BATCH):
                yield part.to_pylist()
        else:
            for batch in batched(map(json.loads, data.decode("utf-8").splitlines())):
                yield beam.pvalue.TaggedOutput("rejected", batch)


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
        pins = (batches.pipeline | "PinFiles" >> beam.Create(self.pin_files, reshuffle=False) | "ReadPins" >> beam.Map(_pins_of)
                | "OneKey" >> beam.Map(lambda d: (None, d)) | "AllPins" >> beam.GroupByKey()
                | "MergePins" >> beam.Map(_merge_pins))
        return batches | "Pin" >> beam.Map(_pin, beam.pvalue.AsSingleton(pins))


def _by_split(batch: list[dict[str, Any]]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    yield from group_by(batch, lambda r: r["split"]).items()


class Inputs(NamedTuple):
    """What a build starts from: the sources to process now (their infos, and where their cache
    folders are staged) and the cached output of the others."""

    infos: list[dict[str, Any]]
    cache_staging: str
    record_files: list[str]
    rejected_files: list[str]
    segment: dict[str, int]  # the cached sources' segmentation counts, summed


class BuildCorpus(beam.PTransform):
    """The whole build in one pipeline, in batches: the per-source stages for the sources not
    cached (their output also written to the cache), the cached output of the others, then the
    corpus-wide stages over all of them: pins, dedup, split, write."""

    def __init__(self, spec: CorpusSpec, inputs: Inputs, root: str, version: str, manifest: dict[str, Any],
                 pin_files: list[str]):
        super().__init__()
        self.spec, self.inputs, self.root = spec, inputs, root
        self.version, self.manifest, self.pin_files = version, manifest, pin_files

    def _sources(self, pbegin) -> tuple[list, list, list]:
        """Record batches, rejection batches and counts of every source: made now (and written to
        the cache) for the new ones, read from the cache for the others."""
        spec, inputs = self.spec, self.inputs
        records, rejected, counted = [], [], []
        if inputs.infos:
            made, refused, segment = pbegin | "ProcessSources" >> ProcessSources(spec, inputs.infos)
            parts = {"records": made, "rejected": refused, **({"segment": segment} if segment is not None else {})}
            _ = parts | "WriteCache" >> WriteCache(inputs.cache_staging, [info["name"] for info in inputs.infos])
            records.append(made)
            rejected.append(refused)
            if segment is not None:  # the cached sources' are in inputs.segment
                counted.append(segment | "SegmentKeys" >> beam.Map(lambda kv: (("segment", kv[0][0], "", kv[0][1]), kv[1])))
        files = [("records", path) for path in inputs.record_files] + [("rejected", path) for path in inputs.rejected_files]
        if files:
            cached = (pbegin | "CachedFiles" >> beam.Create(files, reshuffle=False)
                      | "ReadCached" >> beam.ParDo(ReadBatches()).with_outputs("rejected", main="records"))
            records.append(cached.records)
            rejected.append(cached.rejected)
        return records, rejected, counted

    def expand(self, pbegin):
        spec, inputs = self.spec, self.inputs
        records, rejected, counted = self._sources(pbegin)
        records = records | "AllRecords" >> beam.Flatten()
        if not spec.dedup.exact:  # exact dedup's shuffle would spread the batches over the workers
            records = records | "Spread" >> beam.Reshuffle()
        if self.pin_files:
            records = records | "ApplyPins" >> ApplyPins(self.pin_files)

        # What the dedup stages reject are the duplicates: counted apart from `rejected` in stats.
        dropped = list(rejected)
        if spec.dedup.exact:
            records, exact_dups = records | "ExactDedup" >> ExactDedup()
            dropped.append(exact_dups)
        if spec.dedup.near != "off":
            records, near_dups, lsh = records | "NearDedup" >> NearDedup(spec.dedup)
            dropped.append(near_dups)
            counted.append(lsh | "LshKeys" >> beam.Map(lambda kv: (("shuffle", "", "near_dedup", kv[0]), kv[1])))
        dropped = dropped | "AllDropped" >> beam.Flatten()

        formats = {split: ShardFormat("parquet", corpus_order) for split in SPLITS}
        formats["rejected"] = ShardFormat("jsonl", rejected_order, None)
        shards = ((records | "BySplit" >> beam.FlatMap(_by_split),
                   dropped | "ByRejected" >> beam.Map(lambda batch: ("rejected", batch)))
                  | "ToWrite" >> beam.Flatten()
                  | "Write" >> WriteShards(self.root, spec.output.rows_per_shard, formats))
        counts = (
            (records | "KeptKeys" >> beam.FlatMap(kept_counts),
             dropped | "DroppedKeys" >> beam.FlatMap(dropped_counts), *counted)
            | "AllCounts" >> beam.Flatten()
            | "SumCounts" >> beam.CombinePerKey(sum)
        )
        return (
            pbegin
            | "Once" >> beam.Create([None], reshuffle=False)
            | "Finalise" >> beam.ParDo(
                Finalise(self.root, spec, self.version, self.manifest, inputs.segment),
                beam.pvalue.AsList(shards), beam.pvalue.AsList(counts))
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
    cache_staging = staging_dir(root)
    with cleaned_on_failure(staging, f"build of {spec.name}"):
        try:
            fresh = {k for _, k in todo}
            record_files, rejected_files, segment = cached_files(root, [k for k in keys if k not in fresh])
            inputs = Inputs([readers.source_info(r, spec) for r, _ in todo], cache_staging,
                            record_files, rejected_files, segment)
            pin_files = split_files(pins_from) if pins_from else []
            with beam.Pipeline(options=pipeline_options(beam_args)) as p:
                _ = p | "BuildCorpus" >> BuildCorpus(spec, inputs, staging, version, manifest, pin_files)
            commit_sources(todo, cache_staging, root)
        finally:
            shutil.rmtree(cache_staging, ignore_errors=True)
    with FileSystems.open(FileSystems.join(staging, STATS)) as f:
        stats = json.loads(f.read())
    return Staged(corpus_dir, staging, version, stats, [r.source.name for r, _ in todo])
