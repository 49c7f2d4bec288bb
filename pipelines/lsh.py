"""MinHash LSH for near dedup: signatures, band buckets, and the components of confirmed near-copies.

The steps NearDedup (dedup.py) chains, each a DoFn over arrays for a batch or a shard: band
hashes travel with packed ids only; each signature travels once to its id's shard
(`BandBuckets`), the multi-member buckets are found per band (`BucketMembers`), signatures are
joined to the distinct buckets that hold them (`BucketSignatures`), and each bucket shard
confirms its candidate pairs and reduces them to the components they connect (`ConfirmPairs`).
"""
from __future__ import annotations

import functools
import re
from typing import Any, Iterable, Iterator

import apache_beam as beam
import numpy as np
import xxhash
from scipy.sparse import coo_matrix, csgraph

from pipelines.records import shard_of
from pipelines.spec import DedupSpec

_MERSENNE = np.uint64((1 << 61) - 1)
_MAX_HASH = np.uint64((1 << 32) - 1)
_NON_WORD = re.compile(r"[^\w\s]+")
BUCKET_PAIRWISE_LIMIT = 200
SUB_SHARDS = 8  # per band: the groups the bucket batches are shuffled into
ID_SHARDS = 16  # the groups records are shuffled into by id (signatures, exact dedup, cluster members)
SIZES = "sizes"
SIGNED, MEMBER = 0, 1  # what an id shard receives: signatures, and bucket memberships


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

    def signatures(self, grams: list[list[str]]) -> np.ndarray:
        """The signatures of many texts' shingles (each text has at least one), one row each,
        computed a few thousand shingles at a time: numpy's cost per call is paid per chunk."""
        rows, start, total = [], 0, 0
        for end, text in enumerate(grams, 1):
            total += len(text)
            if total >= self.CHUNK or end == len(grams):
                rows.append(self._rows(grams[start:end], total))
                start, total = end, 0
        return np.concatenate(rows) if rows else np.zeros((0, len(self.a)), dtype=np.uint64)

    CHUNK = 8192

    def _rows(self, grams: list[list[str]], total: int) -> np.ndarray:
        hv = np.fromiter((xxhash.xxh32_intdigest(g.encode("utf-8")) for text in grams for g in text),
                         dtype=np.uint64, count=total)
        with np.errstate(over="ignore"):  # ((h * a + b) mod 2^64) mod (2^61 - 1), in place
            phv = hv[:, None] * self.a
            phv += self.b
            phv %= _MERSENNE
            phv &= _MAX_HASH
        starts = np.cumsum([0] + [len(text) for text in grams[:-1]])
        return np.minimum.reduceat(phv, starts, axis=0)


_HEX_ID = re.compile(r"[0-9a-f]{16}")


def _packed_ids(ids: list[str]) -> np.ndarray:
    """Our ids (16 hex digits) as uint64, in the same order: an array crosses workers as one
    buffer, a list of strings one object at a time. Other ids stay strings."""
    if all(_HEX_ID.fullmatch(i) for i in ids):
        return np.array([int(i, 16) for i in ids], dtype=np.uint64)
    return np.array(ids, dtype=object)


def _unpacked_ids(ids: np.ndarray) -> list[str]:
    return [f"{int(i):016x}" for i in ids] if ids.dtype == np.uint64 else list(ids)


def _joined_ids(*groups: list[np.ndarray]) -> list[np.ndarray]:
    """Each group of id arrays as one array; all packed if every array is, else all strings."""
    if all(a.dtype == np.uint64 for group in groups for a in group):
        return [np.concatenate(group) if group else np.zeros(0, dtype=np.uint64) for group in groups]
    return [np.array([i for a in group for i in _unpacked_ids(a)], dtype=object) for group in groups]


def _id_shards(ids: np.ndarray) -> np.ndarray:
    """The id shard of each id, the same whether the id is packed or not."""
    if ids.dtype == np.uint64:
        return (ids % np.uint64(ID_SHARDS)).astype(np.int64)
    return np.array([int(i, 16) % ID_SHARDS if _HEX_ID.fullmatch(i) else shard_of(i, ID_SHARDS) for i in ids],
                    dtype=np.int64)


def _split_by(shards: np.ndarray, *arrays: np.ndarray) -> Iterator[tuple[int, tuple]]:
    """(shard, the arrays' rows of that shard) for each shard present."""
    for shard in np.unique(shards):
        take = np.flatnonzero(shards == shard)
        yield int(shard), tuple(a[take] for a in arrays)


class BandBuckets(beam.DoFn):
    """MinHash signatures of a batch of records. Main output: per (band, sub-shard) key, arrays of
    band hashes and ids (16 bytes per record and band; one element per record and band would make
    the shuffle 14 times the records, and a runner pays per element). Tag `signatures`: each
    signature once, by a hash of its id, tagged SIGNED."""

    def __init__(self, spec: DedupSpec):
        self.spec = spec

    def setup(self) -> None:
        self.hasher = MinHasher(self.spec.num_perm, self.spec.seed)

    def process(self, batch: list[dict[str, Any]]) -> Iterator[Any]:
        names = [r["id"] for r in batch]
        ids = _packed_ids(names)
        # Values are below 2^32: as uint32 the signatures are small and cheap to shuffle.
        sigs = self.hasher.signatures([shingles(r["text"], self.spec.ngram, self.spec.shingle)
                                       for r in batch]).astype(np.uint32)
        for shard, part in _split_by(_id_shards(ids), ids, sigs):
            yield beam.pvalue.TaggedOutput("signatures", (shard, (SIGNED, part)))
        yield beam.pvalue.TaggedOutput(SIZES, ("signatures", len(names)))
        yield beam.pvalue.TaggedOutput(SIZES, ("band_entries", len(names) * self.spec.bands))
        width = self.spec.num_perm // self.spec.bands
        for band in range(self.spec.bands):
            block = np.ascontiguousarray(sigs[:, band * width:(band + 1) * width])
            hashes = np.fromiter((xxhash.xxh64_intdigest(row.tobytes()) for row in block), dtype=np.uint64,
                                 count=len(ids))
            # Arrays, not tuples: a batch pickles as a few buffers when it crosses workers.
            for sub, part in _split_by(hashes % np.uint64(SUB_SHARDS), hashes, ids):
                yield (band, sub), part


class BucketMembers(beam.DoFn):
    """The LSH buckets of one (band, sub-shard) group that hold more than one record, as
    (bucket key, member id) pairs sent to each member's id shard, tagged MEMBER. The key is a hash of the sorted
    members, so a cluster that shares several bands is one bucket, and its signatures travel once."""

    def process(self, item: tuple[Any, Iterable[tuple]]) -> Iterator[tuple[int, tuple[int, tuple]]]:
        batches = list(item[1])
        hashes = np.concatenate([h for h, _ in batches])
        (ids,) = _joined_ids([i for _, i in batches])
        order = np.lexsort((ids, hashes))  # by bucket, then id
        h, i = hashes[order], ids[order]
        order = order[np.r_[True, (h[1:] != h[:-1]) | (i[1:] != i[:-1])]]  # a record once per bucket
        starts = np.flatnonzero(np.r_[True, hashes[order][1:] != hashes[order][:-1]])
        sizes = np.diff(np.r_[starts, len(order)])
        keys, members = [], []
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
            rows = ids[order[start:start + size]]
            member_bytes = rows.tobytes() if rows.dtype == np.uint64 else " ".join(rows).encode("utf-8")
            keys.append(np.full(len(rows), xxhash.xxh64_intdigest(member_bytes), dtype=np.uint64))
            members.append(rows)
        if members:
            members_ids = np.concatenate(members)
            for shard, part in _split_by(_id_shards(members_ids), np.concatenate(keys), members_ids):
                yield shard, (MEMBER, part)


class BucketSignatures(beam.DoFn):
    """One id shard: its signatures joined to its bucket memberships, sent on to the bucket's shard."""

    def process(self, item: tuple[int, Iterable[tuple[int, tuple]]]) -> Iterator[Any]:
        signed, members = [], []
        for what, part in item[1]:
            (signed if what == SIGNED else members).append(part)
        if not members:
            return
        sig_ids, member_ids = _joined_ids([i for i, _ in signed], [i for _, i in members])
        sigs = np.concatenate([s for _, s in signed])
        keys = np.concatenate([k for k, _ in members])
        order = np.lexsort((member_ids, keys))
        keys, member_ids = keys[order], member_ids[order]
        once = np.r_[True, (keys[1:] != keys[:-1]) | (member_ids[1:] != member_ids[:-1])]
        keys, member_ids = keys[once], member_ids[once]
        yield beam.pvalue.TaggedOutput(SIZES, ("bucket_members", len(keys)))
        by_id = np.argsort(sig_ids, kind="stable")
        rows = by_id[np.searchsorted(sig_ids, member_ids, sorter=by_id)]
        yield from _split_by((keys % np.uint64(ID_SHARDS)).astype(np.int64), keys, member_ids, sigs[rows])


class ConfirmPairs(beam.DoFn):
    """The buckets of one shard: which members are near-copies (estimated Jaccard >= threshold),
    as the components that those pairs connect: under the key None, arrays (member ids, their
    component's smallest id) for the members that are not their component's smallest."""

    SMALL = 8  # buckets up to this size compare every pair, all of them at once
    CHUNK = 65536  # pairs compared per numpy call

    def __init__(self, threshold: float):
        self.threshold = threshold

    def process(self, item: tuple[int, Iterable[tuple]]) -> Iterator[tuple[None, tuple[np.ndarray, np.ndarray]]]:
        parts = list(item[1])
        keys = np.concatenate([k for k, _, _ in parts])
        (names,) = _joined_ids([m for _, m, _ in parts])
        sigs = np.concatenate([s for _, _, s in parts])
        ids, node = np.unique(names, return_inverse=True)  # a record's rows in several buckets: one node
        width = sigs.shape[1]
        need = next((k for k in range(width + 1) if k / width >= self.threshold), width + 1)
        order = np.lexsort((names, keys))  # by bucket, then id: the order the bucket sorted its members in
        starts = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1]])
        sizes = np.diff(np.r_[starts, len(order)])
        pairs: list[tuple[np.ndarray, np.ndarray]] = []  # (rows, rows) to compare: the small buckets
        links: list[tuple[np.ndarray, np.ndarray]] = []  # (rows, rows) known to be near-copies
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
            rows = order[start:start + size]
            if size <= self.SMALL:
                i, j = _pairs(int(size))
                pairs.append((rows[i], rows[j]))
            elif size > BUCKET_PAIRWISE_LIMIT:  # boilerplate: the first member against each other one
                close = np.count_nonzero(sigs[rows[1:]] == sigs[rows[0]], axis=1) >= need
                links.append((np.full(int(close.sum()), rows[0]), rows[1:][close]))
            else:
                links.append(_search(rows, sigs, need))
        if pairs:
            a, b = np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])
            for lo in range(0, len(a), self.CHUNK):
                x, y = a[lo:lo + self.CHUNK], b[lo:lo + self.CHUNK]
                close = np.count_nonzero(sigs[x] == sigs[y], axis=1) >= need
                links.append((x[close], y[close]))
        if links:
            first = node[np.concatenate([x for x, _ in links])]
            second = node[np.concatenate([y for _, y in links])]
            if len(first):
                children, roots = _star(ids, first, second)
                # under one key: the components are joined on one worker
                yield None, (np.array(_unpacked_ids(children), dtype=str), np.array(_unpacked_ids(roots), dtype=str))


def _search(rows: np.ndarray, sigs: np.ndarray, need: int) -> tuple[np.ndarray, np.ndarray]:
    """A bucket's components by breadth-first search, each member compared only with the members
    not yet reached: the same components as every pair would give, and for a bucket of n
    near-copies of one text about n comparisons instead of n (n - 1) / 2. Returns the (rows,
    rows) edges of the search trees."""
    block = sigs[rows]
    unseen = np.ones(len(rows), dtype=bool)
    tails, heads = [], []
    for seed in range(len(rows)):
        if not unseen[seed]:
            continue
        unseen[seed] = False
        queue = [seed]
        while queue and unseen.any():
            v = queue.pop()
            candidates = np.flatnonzero(unseen)
            reached = candidates[np.count_nonzero(block[candidates] == block[v], axis=1) >= need]
            unseen[reached] = False
            queue += reached.tolist()
            tails.append(np.full(len(reached), v))
            heads.append(reached)
    if not tails:
        return rows[:0], rows[:0]
    return rows[np.concatenate(tails)], rows[np.concatenate(heads)]


def _star(ids: np.ndarray, first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The components of edges between nodes numbered in sorted id order, as (ids, the smallest id
    of their component) for every node that is not its component's smallest."""
    n = len(ids)
    graph = coo_matrix((np.ones(len(first), dtype=np.int8), (first, second)), shape=(n, n))
    _, labels = csgraph.connected_components(graph, directed=False)
    _, smallest = np.unique(labels, return_index=True)  # nodes are in id order: a label's first is its smallest
    root = smallest[labels]
    nodes = np.flatnonzero(root != np.arange(n))
    return ids[nodes], ids[root[nodes]]


@functools.lru_cache(maxsize=None)
def _pairs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of positions in a bucket of `size`."""
    return np.triu_indices(size, 1)


def connected_components(first: Iterable[str], second: Iterable[str]) -> dict[str, str]:
    """The nodes of the edges (first[k], second[k]), each mapped to the smallest id of its component."""
    first, second = np.asarray(first, dtype=str), np.asarray(second, dtype=str)
    if not len(first):
        return {}
    names, codes = np.unique(np.concatenate([first, second]), return_inverse=True)
    children, roots = _star(names, codes[:len(first)], codes[len(first):])
    return dict(zip(names.tolist(), names.tolist())) | dict(zip(children.tolist(), roots.tolist()))
