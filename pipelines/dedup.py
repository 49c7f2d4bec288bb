"""Exact and near-duplicate removal, keeping every near-duplicate cluster inside one split.

Exact: records grouped by id (sha1 of the normalised text). Near: MinHash signatures over
shingles of the lower-cased text without punctuation (defaults: character 5-grams, which suit
sentence-sized records, where one edited word changes five word 5-grams out of twenty; word
n-grams with `shingle = "word"` for documents; 112 permutations in 14 bands of 8 rows, so pairs above a
Jaccard similarity of about (1/14)^(1/8) = 0.72 share a band), LSH band keys shuffled in
batches (one element per band and sub-shard for up to 2,000 records), candidate pairs confirmed
by their estimated Jaccard >= `threshold`, then connected components by union-find over the
(few) confirmed edges.

Among copies, the record kept is the one in the most held-out split (test, then dev, then
train), then the first in reading order; with `near = "keep"` the whole cluster moves to that
split instead. Either way no text has a near-copy on the other side of a split boundary.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Iterator

import apache_beam as beam
import numpy as np
import xxhash
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.records import Stage, StageOutput, order_key, reject, reject_record
from pipelines.spec import DedupSpec

_MERSENNE = np.uint64((1 << 61) - 1)
_MAX_HASH = np.uint64((1 << 32) - 1)
_NON_WORD = re.compile(r"[^\w\s]+")
BUCKET_PAIRWISE_LIMIT = 200
SUB_SHARDS = 8  # per band: the groups the bucket batches are shuffled into


def shingles(text: str, n: int, unit: str = "char") -> list[str]:
    """Character or word n-grams of the lower-cased text without punctuation; short texts give one."""
    words = _NON_WORD.sub(" ", text.lower()).split()
    items: str | list[str] = " ".join(words) if unit == "char" else words
    if len(items) <= n:
        return [" ".join(words)]
    if unit == "char":
        return sorted({items[i:i + n] for i in range(len(items) - n + 1)})
    return [" ".join(items[i:i + n]) for i in range(len(items) - n + 1)]


class MinHasher:
    """MinHash with universal hashing (a * h + b) mod (2^61 - 1) over 32-bit xxhash values."""

    def __init__(self, num_perm: int, seed: int):
        rng = np.random.RandomState(seed)
        self.a = rng.randint(1, int(_MERSENNE), size=num_perm, dtype=np.uint64)
        self.b = rng.randint(0, int(_MERSENNE), size=num_perm, dtype=np.uint64)

    def signature(self, grams: list[str]) -> np.ndarray:
        hv = np.fromiter((xxhash.xxh32_intdigest(g.encode("utf-8")) for g in grams), dtype=np.uint64, count=len(grams))
        with np.errstate(over="ignore"):
            phv = ((hv[:, None] * self.a + self.b) % _MERSENNE) & _MAX_HASH
        return phv.min(axis=0)


class ExactDedup(beam.PTransform):
    """One record per id: StageOutput(records, rejected), the other copies rejected as duplicates."""

    def expand(self, records) -> StageOutput:
        return (
            records
            | "KeyById" >> beam.Map(lambda r: (r["id"], r))
            | "GroupById" >> beam.GroupByKey()
            | "KeepFirst" >> Stage(_KeepFirst())
        )


class _KeepFirst(beam.DoFn):
    def process(self, item: tuple[str, Iterable[dict]]) -> Iterator[Any]:
        copies = sorted(item[1], key=order_key)
        yield copies[0]
        for r in copies[1:]:
            yield reject(reject_record(r, "exact_dedup", "exact_duplicate", duplicate_of=copies[0]["id"]))


_HEX_ID = re.compile(r"[0-9a-f]{16}")


def _packed_ids(ids: list[str]) -> np.ndarray:
    """Our ids (16 hex digits) as uint64, in the same order: an array crosses workers as one
    buffer, a list of strings one object at a time. Other ids stay strings."""
    if all(_HEX_ID.fullmatch(i) for i in ids):
        return np.array([int(i, 16) for i in ids], dtype=np.uint64)
    return np.array(ids, dtype=object)


def _unpacked_ids(ids: np.ndarray) -> list[str]:
    return [f"{int(i):016x}" for i in ids] if ids.dtype == np.uint64 else list(ids)


class _BandBuckets(beam.DoFn):
    """MinHash signatures, emitted as batches: per (band, sub-shard) key, arrays of band hashes,
    ids and signatures for up to BATCH records. One element per record and band would make the
    shuffle 14 times the records, and a runner pays per element."""

    BATCH = 2000

    def __init__(self, spec: DedupSpec):
        self.spec = spec

    def setup(self) -> None:
        self.hasher = MinHasher(self.spec.num_perm, self.spec.seed)

    def start_bundle(self) -> None:
        self.buffer: list[tuple[str, np.ndarray]] = []

    def process(self, record: dict[str, Any]) -> Iterator[tuple]:
        sig = self.hasher.signature(shingles(record["text"], self.spec.ngram, self.spec.shingle))
        # Values are below 2^32: as uint32 the signature is small and cheap to shuffle.
        self.buffer.append((record["id"], sig.astype(np.uint32)))
        if len(self.buffer) >= self.BATCH:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for item in self._flush():
            yield GlobalWindows.windowed_value(item)

    def _flush(self) -> Iterator[tuple]:
        if not self.buffer:
            return
        ids = _packed_ids([rid for rid, _ in self.buffer])
        sigs = np.stack([sig for _, sig in self.buffer])
        self.buffer = []
        rows = self.spec.num_perm // self.spec.bands
        for band in range(self.spec.bands):
            block = np.ascontiguousarray(sigs[:, band * rows:(band + 1) * rows])
            hashes = np.fromiter((xxhash.xxh64_intdigest(row.tobytes()) for row in block), dtype=np.uint64,
                                 count=len(ids))
            shard = hashes % SUB_SHARDS
            for sub in range(SUB_SHARDS):
                take = np.flatnonzero(shard == sub)
                if len(take):
                    # Arrays, not tuples: a batch pickles as a few buffers when it crosses workers.
                    yield (band, sub), (hashes[take], ids[take], sigs[take])


class _ConfirmPairs(beam.DoFn):
    """Edges between members of one LSH bucket whose estimated Jaccard reaches the threshold."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def process(self, item: tuple[Any, Iterable[tuple]]) -> Iterator[tuple[str, str]]:
        batches = list(item[1])
        hashes = np.concatenate([h for h, _, _ in batches])
        parts = [i for _, i, _ in batches]
        if len({p.dtype for p in parts}) > 1:  # packed and unpacked batches: compare as strings
            parts = [np.array(_unpacked_ids(p), dtype=object) for p in parts]
        ids = np.concatenate(parts)
        sigs = np.concatenate([s for _, _, s in batches])
        order = np.lexsort((ids, hashes))  # by bucket, then id
        h, i = hashes[order], ids[order]
        order = order[np.r_[True, (h[1:] != h[:-1]) | (i[1:] != i[:-1])]]  # a record once per bucket
        starts = np.flatnonzero(np.r_[True, hashes[order][1:] != hashes[order][:-1]])
        sizes = np.diff(np.r_[starts, len(order)])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
            members = order[start:start + size]
            yield from self._edges(_unpacked_ids(ids[members]), sigs[members])

    def _edges(self, ids: list[str], sigs: np.ndarray) -> Iterator[tuple[str, str]]:
        # Huge buckets (boilerplate) are compared against their first member only.
        anchors = sigs if len(ids) <= BUCKET_PAIRWISE_LIMIT else sigs[:1]
        close = (anchors[:, None, :] == sigs[None, :, :]).mean(axis=2) >= self.threshold
        for i, j in zip(*np.nonzero(np.triu(close, 1))):
            yield ids[i], ids[j]


def connected_components(edges: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Union-find: every node mapped to the smallest id of its component."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


class _ResolveCluster(beam.DoFn):
    def __init__(self, action: str):
        self.action = action

    def process(self, item: tuple[str, Iterable[dict]]) -> Iterator[Any]:
        members = sorted(item[1], key=order_key)
        first = members[0]
        yield first
        for r in members[1:]:
            if r.get("pinned"):
                yield r  # a record of the previous snapshot never moves nor goes (refresh)
            elif self.action == "keep":
                yield {**r, "split": first["split"]}
            else:
                yield reject(reject_record(r, "near_dedup", "near_duplicate", duplicate_of=first["id"]))


class _Route(beam.DoFn):
    """Records outside any cluster go straight on; members are keyed by their cluster."""

    def process(self, item: tuple[str, dict]) -> Iterator[Any]:
        _, joined = item
        cluster = list(joined["cluster"])
        for record in joined["records"]:
            if cluster:
                yield beam.pvalue.TaggedOutput("members", (cluster[0], record))
            else:
                yield record


class NearDedup(beam.PTransform):
    """MinHash LSH near-duplicate clusters: StageOutput(records, rejected), the dropped copies rejected."""

    def __init__(self, spec: DedupSpec):
        super().__init__()
        self.spec = spec

    def expand(self, records) -> StageOutput:
        edges = (
            records
            | "Signatures" >> beam.ParDo(_BandBuckets(self.spec))
            | "GroupByBand" >> beam.GroupByKey()
            | "ConfirmPairs" >> beam.ParDo(_ConfirmPairs(self.spec.threshold))
            | "UniqueEdges" >> beam.Distinct()
        )
        clusters = (
            edges
            | "OneKey" >> beam.Map(lambda e: (None, e))
            | "AllEdges" >> beam.GroupByKey()
            | "Components" >> beam.FlatMap(lambda kv: sorted(connected_components(kv[1]).items()))
        )
        routed = (
            {"records": records | "KeyRecords" >> beam.Map(lambda r: (r["id"], r)), "cluster": clusters}
            | "JoinClusters" >> beam.CoGroupByKey()
            | "Route" >> beam.ParDo(_Route()).with_outputs("members", main="single")
        )
        resolved = (
            routed.members
            | "GroupByCluster" >> beam.GroupByKey()
            | "Resolve" >> Stage(_ResolveCluster(self.spec.near))
        )
        kept = (routed.single, resolved.records) | "MergeKept" >> beam.Flatten()
        return StageOutput(kept, resolved.rejected)
