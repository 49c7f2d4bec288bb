"""Per-source processing and its cache: the part of a build that one source decides alone.

Read -> Normalise -> Segment -> IdentifyLanguage -> Quality -> AssignSplit depend only on the
source's bytes, the spec's reading, filtering and splitting settings and the code, so their
output is cached under `OUT/NAME/.cache/sources/KEY/` (`snapshot.cache_root`) (records.parquet, rejected.jsonl,
meta.json) with KEY a hash of exactly those. A build or refresh reprocesses only the sources
whose key is new; the corpus-wide stages (dedup, split, write) then run over every source.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from typing import Any, Iterable, Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from pipelines import readers
from pipelines.fetch import ResolvedSource
from pipelines.langid import IdentifyLanguage
from pipelines.normalise import NormaliseText
from pipelines.quality import QualityFilter
from pipelines.records import Stage, Stages, batched, flatten, nonempty
from pipelines.runners import pipeline_options
from pipelines.segment import Segment
from pipelines.snapshot import staging_dir
from pipelines.spec import CorpusSpec
from pipelines.split import AssignSplit
from pipelines.write import jsonl_bytes, parquet_bytes, rejected_order, write_bytes

RECORDS, REJECTED, META = "records.parquet", "rejected.jsonl", "meta.json"
CACHE_SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("doc", pa.string()),
    ("pos", pa.int64()), ("lang", pa.string()), ("lang_score", pa.float64()), ("split", pa.string()),
    ("offset", pa.int64()),
])


def source_key(spec: CorpusSpec, resolved: ResolvedSource, code: str) -> str:
    """Hash of everything the per-source stages depend on."""
    settings = {
        "source": dataclasses.asdict(resolved.source), "sha256": resolved.sha256, "language": spec.language,
        "split": dataclasses.asdict(spec.split), "langid": dataclasses.asdict(spec.langid),
        "filters": dataclasses.asdict(spec.filters), "code": code,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:24]


def is_cached(root: str, key: str) -> bool:
    return os.path.exists(os.path.join(root, key, META))


class ReadSource(beam.DoFn):
    """One source's units, as batches of records, and its rejections."""

    def process(self, info: dict[str, Any]) -> Iterator[Any]:
        rejected: list[dict[str, Any]] = []

        def units() -> Iterator[dict[str, Any]]:
            for kind, item in readers.read_source(info):
                if kind == "ok":
                    yield item
                else:
                    rejected.append(item)

        yield from batched(units())
        yield from nonempty([], rejected)


def _by_source(batch: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """A batch keyed by its source (every batch comes from one source)."""
    return batch[0]["source"], batch


class ProcessSources(beam.PTransform):
    """Source infos in; (record batches with their own split, rejection batches, segment counts) out."""

    def __init__(self, spec: CorpusSpec, infos: list[dict[str, Any]]):
        super().__init__()
        self.spec, self.infos = spec, infos

    def expand(self, pbegin):
        spec = self.spec
        read = pbegin | "Sources" >> beam.Create(self.infos) | "Read" >> Stage(ReadSource())
        units = read.records | "Spread" >> beam.Reshuffle()
        label = (IdentifyLanguage(spec.language, spec.langid.confusable, spec.langid.action, spec.langid.min_score),
                 QualityFilter(spec.filters), AssignSplit(spec.split))
        if not any(info["segment"] for info in self.infos):
            good = units | "NormaliseIdentifyQualitySplit" >> Stages(NormaliseText(), *label)
            segment = pbegin | "NoSegmentation" >> beam.Create([])
            return good.records, (read.rejected, good.rejected) | "AllRejected" >> beam.Flatten(), segment
        normal = units | "Normalise" >> Stages(NormaliseText())
        segmented, segment = normal.records | "Segment" >> Segment()
        good = segmented | "IdentifyQualitySplit" >> Stages(*label)
        rejected = (read.rejected, normal.rejected, good.rejected) | "AllRejected" >> beam.Flatten()
        return good.records, rejected, segment


class _WriteSource(beam.DoFn):
    """Writes one source's records, rejections and counts into its staging folder."""

    def __init__(self, staging: str):
        self.staging = staging

    def process(self, item: tuple[str, dict[str, Iterable]]) -> Iterator[str]:
        name, parts = item
        folder = FileSystems.join(self.staging, name)
        records = sorted(flatten(parts["records"]), key=lambda r: (r["doc"], r["pos"], r["id"]))
        write_bytes(FileSystems.join(folder, RECORDS), parquet_bytes(records, CACHE_SCHEMA))
        write_bytes(FileSystems.join(folder, REJECTED), jsonl_bytes(sorted(flatten(parts["rejected"]), key=rejected_order)))
        segment = {k: n for (_, k), n in parts["segment"]}
        meta = {"source": name, "records": len(records), "segment": dict(sorted(segment.items()))}
        write_bytes(FileSystems.join(folder, META), json.dumps(meta, sort_keys=True).encode())
        yield name


class ProcessAndCache(beam.PTransform):
    """Runs the per-source stages and writes each source's output under `staging/NAME/`."""

    def __init__(self, spec: CorpusSpec, infos: list[dict[str, Any]], staging: str):
        super().__init__()
        self.spec, self.infos, self.staging = spec, infos, staging

    def expand(self, pbegin):
        records, rejected, segment = pbegin | "ProcessSources" >> ProcessSources(self.spec, self.infos)
        names = pbegin | "SourceNames" >> beam.Create([info["name"] for info in self.infos])
        return (
            {"records": records | "RecordBySource" >> beam.Map(_by_source),
             "rejected": rejected | "RejectedBySource" >> beam.Map(_by_source),
             "segment": segment | "SegmentBySource" >> beam.Map(lambda kv: (kv[0][0], kv)),
             # every source gets its folder, even one whose only output is a rejection or nothing
             "names": names | "NameKeys" >> beam.Map(lambda n: (n, n))}
            | "GroupBySource" >> beam.CoGroupByKey()
            | "WriteSource" >> beam.ParDo(_WriteSource(self.staging))
        )


def process_sources(spec: CorpusSpec, todo: list[tuple[ResolvedSource, str]], root: str,
                    beam_args: list[str]) -> None:
    """Process the (source, key) pairs in one Beam pipeline and move each into the cache."""
    staging = staging_dir(root)
    infos = [readers.source_info(r, spec) for r, _ in todo]
    try:
        with beam.Pipeline(options=pipeline_options(beam_args)) as p:
            _ = p | "ProcessAndCache" >> ProcessAndCache(spec, infos, staging)
        for resolved, key in todo:
            target = os.path.join(root, key)
            if os.path.exists(target):
                shutil.rmtree(target)
            os.replace(os.path.join(staging, resolved.source.name), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def cached_files(root: str, keys: list[str]) -> tuple[list[str], list[str], dict[str, int]]:
    """(records files, rejected files, summed segment counts) of the given cache keys."""
    segment: dict[str, int] = {}
    for key in keys:
        with open(os.path.join(root, key, META), encoding="utf-8") as f:
            for k, n in json.load(f)["segment"].items():
                segment[k] = segment.get(k, 0) + n
    return ([os.path.join(root, k, RECORDS) for k in keys], [os.path.join(root, k, REJECTED) for k in keys],
            dict(sorted(segment.items())))
