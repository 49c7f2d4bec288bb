"""The record and rejection shapes that flow through the build, and the record id.

A record is a plain dict (cheap to pickle between Beam workers) with the snapshot columns
`id, text, source, doc, pos, lang, lang_score` plus working fields (`offset`, `split`).
A rejection is a dict with `reason`, `stage`, `source`, `offset` and a `snippet`.

Every stage returns `StageOutput(records, rejected)`: the records that go on and the rejected
ones (dicts with a `reason`), as Beam's `RunInference` returns its dead letters beside its
results. A DoFn stage sends a rejection to the tagged output `rejected` (`reject(...)`) and
`Stage(fn)` makes it such a PTransform.
"""
from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

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
