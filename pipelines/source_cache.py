"""Per-source processing and its cache: the part of a build that one source decides alone.

Read -> Normalise -> Segment -> IdentifyLanguage -> Quality -> AssignSplit depend only on the
source's bytes, the spec's reading, filtering and splitting settings and the code, so their
output is cached under `OUT/NAME/.cache/sources/KEY/` (`snapshot.cache_root`) (records.parquet, rejected.jsonl,
meta.json) with KEY a hash of exactly those. A build or refresh reprocesses only the sources
whose key is new, in the same pipeline as the corpus-wide stages (build_corpus.BuildCorpus): their
output goes on to dedup and writing as it is made (in the cache's shape, `_CacheRow`) and is
written to the cache beside (`WriteCache`), which takes it once the pipeline has succeeded.
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
from pipelines.segment import Segment
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


def _by_source(batch: list[dict[str, Any]], part: str) -> tuple[str, tuple[str, list[dict[str, Any]]]]:
    """A batch keyed by its source (every batch comes from one source), tagged with its part."""
    return batch[0]["source"], (part, batch)


class _CacheRow(beam.DoFn):
    """The last per-source stage: a record as the cache stores it (CACHE_SCHEMA's fields), so that
    what goes on to the corpus stages is the same whether it was just made or read from the cache."""

    def process(self, record: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield {k: record.get(k) for k in CACHE_SCHEMA.names}


class ProcessSources(beam.PTransform):
    """Source infos in; (record batches with their own split, rejection batches, segment counts
    or None when no source is segmented) out."""

    def __init__(self, spec: CorpusSpec, infos: list[dict[str, Any]]):
        super().__init__()
        self.spec, self.infos = spec, infos

    def expand(self, pbegin):
        spec = self.spec
        read = pbegin | "Sources" >> beam.Create(self.infos, reshuffle=False) | "Read" >> Stage(ReadSource())
        units = read.records | "Spread" >> beam.Reshuffle()
        label = (IdentifyLanguage(spec.language, spec.langid.confusable, spec.langid.action, spec.langid.min_score),
                 QualityFilter(spec.filters), AssignSplit(spec.split), _CacheRow())
        if not any(info["segment"] for info in self.infos):
            good = units | "NormaliseIdentifyQualitySplit" >> Stages(NormaliseText(), *label)
            return good.records, (read.rejected, good.rejected) | "AllRejected" >> beam.Flatten(), None
        normal = units | "Normalise" >> Stages(NormaliseText())
        segmented, segment = normal.records | "Segment" >> Segment()
        good = segmented | "IdentifyQualitySplit" >> Stages(*label)
        rejected = (read.rejected, normal.rejected, good.rejected) | "AllRejected" >> beam.Flatten()
        return good.records, rejected, segment


class _WriteSource(beam.DoFn):
    """Writes one source's records, rejections and counts into its staging folder."""

    def __init__(self, staging: str):
        self.staging = staging

    def process(self, item: tuple[str, Iterable[tuple[str, Any]]]) -> Iterator[str]:
        name, tagged = item
        parts: dict[str, list] = {"records": [], "rejected": [], "segment": []}
        for part, value in tagged:
            if part in parts:
                parts[part].append(value)
        folder = FileSystems.join(self.staging, name)
        records = sorted(flatten(parts["records"]), key=lambda r: (r["doc"], r["pos"], r["id"]))
        write_bytes(FileSystems.join(folder, RECORDS), parquet_bytes(records, CACHE_SCHEMA))
        write_bytes(FileSystems.join(folder, REJECTED), jsonl_bytes(sorted(flatten(parts["rejected"]), key=rejected_order)))
        segment = {k: n for (_, k), n in parts["segment"]}
        meta = {"source": name, "records": len(records), "segment": dict(sorted(segment.items()))}
        write_bytes(FileSystems.join(folder, META), json.dumps(meta, sort_keys=True).encode())
        yield name


class WriteCache(beam.PTransform):
    """ProcessSources' outputs in, as {"records", "rejected"[, "segment"]}; each source's written
    under `staging/NAME/` (every source named gets its folder, even one whose only output is a
    rejection or nothing)."""

    def __init__(self, staging: str, names: list[str]):
        super().__init__()
        self.staging, self.names = staging, names

    def expand(self, outputs):
        records, rejected, segment = outputs["records"], outputs["rejected"], outputs.get("segment")
        parts = [records | "RecordBySource" >> beam.Map(_by_source, "records"),
                 rejected | "RejectedBySource" >> beam.Map(_by_source, "rejected"),
                 records.pipeline | "SourceNames" >> beam.Create([(n, ("name", None)) for n in self.names],
                                                                 reshuffle=False)]
        if segment is not None:
            parts.append(segment | "SegmentBySource" >> beam.Map(lambda kv: (kv[0][0], ("segment", kv))))
        return (parts | "AllParts" >> beam.Flatten() | "GroupBySource" >> beam.GroupByKey()
                | "WriteSource" >> beam.ParDo(_WriteSource(self.staging)))


def commit_sources(todo: list[tuple[ResolvedSource, str]], staging: str, root: str) -> None:
    """Move each source that a pipeline wrote into `staging` to its place in the cache."""
    for resolved, key in todo:
        target = os.path.join(root, key)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(os.path.join(staging, resolved.source.name), target)


def cached_files(root: str, keys: list[str]) -> tuple[list[str], list[str], dict[str, int]]:
    """(records files, rejected files, summed segment counts) of the given cache keys."""
    segment: dict[str, int] = {}
    for key in keys:
        with open(os.path.join(root, key, META), encoding="utf-8") as f:
            for k, n in json.load(f)["segment"].items():
                segment[k] = segment.get(k, 0) + n
    return ([os.path.join(root, k, RECORDS) for k in keys], [os.path.join(root, k, REJECTED) for k in keys],
            dict(sorted(segment.items())))
