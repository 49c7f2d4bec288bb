"""Exact and near-duplicate removal, keeping every near-duplicate cluster inside one split.

Exact: records grouped by id (sha1 of the normalised text). Near: MinHash signatures over
shingles of the lower-cased text without punctuation (defaults: character 5-grams, which suit
sentence-sized records, where one edited word changes five word 5-grams out of twenty; word
n-grams with `shingle = "word"` for documents; 112 permutations in 14 bands of 8 rows, so pairs above a
Jaccard similarity of about (1/14)^(1/8) = 0.72 share a band), candidate pairs confirmed by their
estimated Jaccard >= `threshold`, then connected components of the confirmed pairs (the MinHash
LSH steps are in lsh.py).

The shuffle is kept small: band hashes travel with ids only (16 bytes a record and band, in
arrays per batch), each signature travels once to its id's shard, and from there once to each
distinct multi-member bucket that holds it (a tight cluster shares all its bands: one bucket).
The clustered ids reach the records as a side input, so records outside clusters stay put.
stats.json's `near_dedup_shuffle` counts what moved.

Among copies, the record kept is the one in the most held-out split (test, then dev, then
train), then the first in reading order; with `near = "keep"` the whole cluster moves to that
split instead. Either way no text has a near-copy on the other side of a split boundary.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, NamedTuple

import apache_beam as beam
import numpy as np

from pipelines.lsh import (ID_SHARDS, SIZES, BandBuckets, BucketMembers, BucketSignatures, ConfirmPairs,
                           connected_components)
from pipelines.records import Stage, StageOutput, flatten, group_by, nonempty, order_key, reject_record, shard_of
from pipelines.spec import DedupSpec


class ExactDedup(beam.PTransform):
    """One record per id, over batches: StageOutput(record batches, rejection batches), the other
    copies rejected as duplicates. Batches are cut by a hash of the id into ID_SHARDS groups."""

    def expand(self, batches) -> StageOutput:
        return (
            batches
            | "ShardById" >> beam.FlatMap(_by_shard, lambda r: r["id"])
            | "GroupByShard" >> beam.GroupByKey()
            | "KeepFirst" >> Stage(_KeepFirst())
        )


def _by_shard(batch: list, key: Callable[[Any], str]) -> Iterator[tuple[int, list]]:
    """A batch cut into (shard, part) pairs by a stable hash of each item's key."""
    yield from group_by(batch, lambda item: shard_of(key(item), ID_SHARDS)).items()


class _KeepFirst(beam.DoFn):
    def process(self, item: tuple[int, Iterable[list[dict]]]) -> Iterator[Any]:
        kept, rejected = [], []
        for copies in group_by(flatten(item[1]), lambda r: r["id"]).values():
            copies.sort(key=order_key)
            kept.append(copies[0])
            rejected += [reject_record(r, "exact_dedup", "exact_duplicate", duplicate_of=copies[0]["id"])
                         for r in copies[1:]]
        yield from nonempty(kept, rejected)


class _ResolveClusters(beam.DoFn):
    """The clusters of one shard: each cluster's first record kept, the others dropped (or moved)."""

    def __init__(self, action: str):
        self.action = action

    def process(self, item: tuple[int, Iterable[list[tuple[str, dict]]]]) -> Iterator[Any]:
        kept, rejected = [], []
        for cluster in group_by(flatten(item[1]), lambda m: m[0]).values():
            members = sorted((r for _, r in cluster), key=order_key)
            first = members[0]
            kept.append(first)
            for r in members[1:]:
                if r.get("pinned"):
                    kept.append(r)  # a record of the previous snapshot never moves nor goes (refresh)
                elif self.action == "keep":
                    kept.append({**r, "split": first["split"]})
                else:
                    rejected.append(reject_record(r, "near_dedup", "near_duplicate", duplicate_of=first["id"]))
        yield from nonempty(kept, rejected)


class _Route(beam.DoFn):
    """Records outside any cluster go straight on; members go, with their cluster, to the shard
    of their cluster (tag `members`)."""

    def process(self, batch: list[dict[str, Any]], clusters: dict[str, str]) -> Iterator[Any]:
        single, members = [], []
        for record in batch:
            root = clusters.get(record["id"])
            if root is None:
                single.append(record)
            else:
                members.append((root, record))
        if single:
            yield single
        for shard in _by_shard(members, lambda m: m[0]):
            yield beam.pvalue.TaggedOutput("members", shard)


def _components(item: tuple[None, Iterable[tuple[Any, Any]]]) -> dict[str, str]:
    parts = [(np.asarray(a, dtype=str), np.asarray(b, dtype=str)) for a, b in item[1]]
    return connected_components(np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts]))


class NearDedupOutput(NamedTuple):
    """A stage's records and rejections, plus what the LSH moved: (part, count) pairs to be summed, counted
    in stats.json (`near_dedup_shuffle`): band entries (a band hash and an id each), signatures
    (each record's once) and bucket members (a signature sent to a bucket it shares)."""

    records: beam.PCollection
    rejected: beam.PCollection
    sizes: beam.PCollection


class NearDedup(beam.PTransform):
    """MinHash LSH near-duplicate clusters over batches: NearDedupOutput(record batches, rejection
    batches, LSH sizes), the dropped copies rejected. The clustered ids (one dict, every edge's component)
    reach the routing step as a side input, so records outside clusters are never shuffled."""

    def __init__(self, spec: DedupSpec):
        super().__init__()
        self.spec = spec

    def expand(self, batches) -> NearDedupOutput:
        hashed = batches | "Signatures" >> beam.ParDo(BandBuckets(self.spec)).with_outputs(
            "signatures", SIZES, main="bands")
        members = hashed.bands | "GroupByBand" >> beam.GroupByKey() | "BucketMembers" >> beam.ParDo(BucketMembers())
        # Signatures and bucket memberships are tagged by what they are (SIGNED, MEMBER) and
        # grouped by id shard in one shuffle.
        joined = (
            (hashed.signatures, members)
            | "SignaturesAndMembers" >> beam.Flatten()
            | "GroupByIdShard" >> beam.GroupByKey()
            | "BucketSignatures" >> beam.ParDo(BucketSignatures()).with_outputs(SIZES, main="buckets")
        )
        sizes = (hashed[SIZES], joined[SIZES]) | "AllSizes" >> beam.Flatten()
        edges = (
            joined.buckets
            | "GroupByBucket" >> beam.GroupByKey()
            | "ConfirmPairs" >> beam.ParDo(ConfirmPairs(self.spec.threshold))
        )
        clusters = edges | "AllEdges" >> beam.GroupByKey() | "Components" >> beam.Map(_components)
        # no edge at all, no cluster map: then no record is in a cluster
        routed = batches | "Route" >> beam.ParDo(_Route(), beam.pvalue.AsSingleton(clusters, default_value={})
                                                 ).with_outputs("members", main="single")
        resolved = (
            routed.members
            | "GroupByCluster" >> beam.GroupByKey()
            | "Resolve" >> Stage(_ResolveClusters(self.spec.near))
        )
        kept = (routed.single, resolved.records) | "MergeKept" >> beam.Flatten()
        return NearDedupOutput(kept, resolved.rejected, sizes)
