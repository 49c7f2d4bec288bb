"""The record and rejection shapes that flow through the build, and the record id.

A record is a plain dict (cheap to pickle between Beam workers) with the snapshot columns
`id, text, source, doc, pos, lang, lang_score` plus working fields (`offset`, `split`).
A rejection is a dict with `reason`, `stage`, `source`, `offset` and a `snippet`.

Every stage returns `StageOutput(records, rejected)`: the records that go on and the rejected
ones (dicts with a `reason`), as Beam's `RunInference` returns its dead letters beside its
results. A DoFn stage sends a rejection to the tagged output `rejected` (`reject(...)`) and
`Stage(fn)` makes it such a PTransform.

Records travel between the build's steps in batches (lists of up to BATCH records): a runner
pays its per-element cost (encoding, bookkeeping, a Dask task's share) once per batch instead
of once per record, which was most of a build's time. `Stages(fn, ...)` runs record stages one
after another over each batch in one step, as a runner's fusion would, and gives batches of
records and of rejections.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any, Callable, Hashable, Iterable, Iterator, NamedTuple, TypeVar

import apache_beam as beam
import xxhash
from apache_beam.metrics import Metrics

T = TypeVar("T")
BATCH = 1000  # records per element between steps

SNIPPET_CHARS = 200
# Most held-out split first: when copies or near-copies of a text fall in several splits the
# whole cluster goes to the most held-out one, so a test sentence never leaks into train.
SPLIT_PRIORITY = {"test": 0, "dev": 1, "train": 2}


def record_id(text: str) -> str:
    """First 16 hex digits of sha1 of the normalised text: same text, same id, in every build."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def snippet(value: str | bytes) -> str:
    if isinstance(value, bytes):
        return repr(value[:SNIPPET_CHARS])
    return value[:SNIPPET_CHARS]


def rejection(stage: str, reason: str, source: str, offset: int, text: str | bytes,
              **extra: Any) -> dict[str, Any]:
    """A rejected unit: where it was, why, and enough of it to find it again.

    Also counts it as the Beam counter `stage/reason`, so runner UIs (Dataflow, Flink) show drops
    live; outside a pipeline the counter is a no-op.
    """
    Metrics.counter(stage, reason).inc()
    return {"stage": stage, "reason": reason, "source": source, "offset": offset,
            "snippet": snippet(text), **extra}


def reject_record(record: dict[str, Any], stage: str, reason: str, **extra: Any) -> dict[str, Any]:
    """Reject a record that already has an id, doc and pos."""
    return rejection(stage, reason, record["source"], record.get("offset", -1), record["text"],
                     id=record.get("id"), doc=record.get("doc"), pos=record.get("pos"), **extra)


def order_key(record: dict[str, Any]) -> tuple:
    """Deterministic preference among copies: a record pinned by the previous snapshot (refresh),
    then the most held-out split, then reading order."""
    return (not record.get("pinned", False), SPLIT_PRIORITY.get(record.get("split") or "train", 2),
            record["source"], record["doc"], record["pos"], record["id"])


REJECTED = "rejected"


class StageOutput(NamedTuple):
    """What a stage returns: records that go on, and rejected records (dicts with a `reason`)."""

    records: beam.PCollection
    rejected: beam.PCollection


def reject(rejected: dict[str, Any]) -> beam.pvalue.TaggedOutput:
    """A rejection, yielded from a DoFn stage, goes to its `rejected` output."""
    return beam.pvalue.TaggedOutput(REJECTED, rejected)


class Stage(beam.PTransform):
    """A DoFn that yields records and `reject(...)`ions, as a stage returning StageOutput."""

    def __init__(self, fn: beam.DoFn, *args: Any):
        super().__init__()
        self.fn, self.args = fn, args

    def expand(self, pcoll):
        out = pcoll | beam.ParDo(self.fn, *self.args).with_outputs(REJECTED, main="records")
        return StageOutput(out.records, out[REJECTED])


class Stages(beam.PTransform):
    """Record stages (`Stage`-style DoFns) applied in order to batches of records, in one step:
    StageOutput(batches of records, batches of rejections)."""

    def __init__(self, *fns: beam.DoFn):
        super().__init__()
        self.fns = fns

    def expand(self, batches):
        out = batches | beam.ParDo(_RunStages(self.fns)).with_outputs(REJECTED, main="records")
        return StageOutput(out.records, out[REJECTED])


class _RunStages(beam.DoFn):
    def __init__(self, fns: tuple[beam.DoFn, ...]):
        self.fns = fns

    def setup(self) -> None:
        for fn in self.fns:
            fn.setup()

    def process(self, batch: list[dict[str, Any]]) -> Iterator[Any]:
        rejected: list[dict[str, Any]] = []
        for fn in self.fns:
            records: list[dict[str, Any]] = []
            for record in batch:
                for item in fn.process(record):
                    if isinstance(item, beam.pvalue.TaggedOutput):
                        rejected.append(item.value)
                    else:
                        records.append(item)
            batch = records
        yield from nonempty(batch, rejected)


def nonempty(records: list, rejected: list) -> Iterator[Any]:
    """A batch step's outputs: the records batch and the rejections batch, each only if not empty."""
    if records:
        yield records
    if rejected:
        yield reject(rejected)


def batched(items: Iterable[T], size: int = BATCH) -> Iterator[list[T]]:
    """Consecutive lists of up to `size` items."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def group_by(items: Iterable[T], key: Callable[[T], Hashable]) -> dict[Hashable, list[T]]:
    """Items by key, in their order, keys in first-seen order."""
    groups: dict[Hashable, list[T]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return groups


def shard_of(key: str, shards: int) -> int:
    """A stable shard for a string key: the same in every process and on every run."""
    return xxhash.xxh64_intdigest(key.encode("utf-8")) % shards


def flatten(batches: Iterable[list[T]]) -> list[T]:
    return [item for batch in batches for item in batch]
