"""Write a snapshot: Parquet splits, rejected JSON lines, stats.json, manifest.json, README.md.

Outputs are byte-identical for the same input, spec and code: rows are sorted inside each
shard, shards are chosen by a hash of the id, and no timestamps are written. Every path goes
through Beam's FileSystems, so OUT may be a local folder, gs:// or s3://.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
from collections import Counter, defaultdict
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from common.snapshot_format import MANIFEST, SPEC_COPY, SPLITS, STATS
from pipelines.records import SPLIT_PRIORITY, flatten, group_by

SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("doc", pa.string()),
    ("pos", pa.int64()), ("lang", pa.string()), ("lang_score", pa.float32()),
])


def write_bytes(path: str, data: bytes) -> str:
    """Write `data` to `path` through FileSystems; returns its sha256."""
    with FileSystems.create(path) as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def parquet_bytes(rows: list[dict[str, Any]], schema: pa.Schema = SCHEMA) -> bytes:
    table = pa.Table.from_pylist([{k: r[k] for k in schema.names} for r in rows], schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def jsonl_bytes(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode("utf-8")


def shard_name(group: str, index: int, count: int, ext: str) -> str:
    return f"{group}/{group}-{index:05d}-of-{count:05d}.{ext}"


def corpus_order(r: dict[str, Any]) -> tuple:
    return r["source"], r["doc"], r["pos"], r["id"]


def rejected_order(r: dict[str, Any]) -> tuple:
    # The whole row last: two rejections alike in the rest (copies of a sentence in one unit)
    # keep one order whatever order they arrive in.
    return r["source"], r["offset"], r["stage"], r["reason"], r.get("id") or "", json.dumps(r, sort_keys=True)


class ShardFormat(NamedTuple):
    """How one group's shards are written: file kind, row order inside a shard, Parquet schema."""

    ext: str
    sort_key: Callable[[dict], tuple]
    schema: pa.Schema | None = SCHEMA


class _WriteShard(beam.DoFn):
    def __init__(self, root: str, formats: dict[str, ShardFormat]):
        self.root, self.formats = root, formats

    def process(self, item: tuple[tuple[str, int, int], Iterable[list[dict]]]) -> Iterator[dict[str, Any]]:
        (group, index, count), parts = item
        ext, sort_key, schema = self.formats[group]
        rows = sorted(flatten(parts), key=sort_key)
        data = parquet_bytes(rows, schema) if ext == "parquet" else jsonl_bytes(rows)
        name = shard_name(group, index, count, ext)
        yield {"path": name, "group": group, "rows": len(rows), "sha256": write_bytes(FileSystems.join(self.root, name), data)}


def _row_number(row: dict[str, Any]) -> int:
    """What picks a row's shard: its id, or a hash of the row when it has none."""
    return int(row.get("id") or hashlib.sha1(json.dumps(row, sort_keys=True).encode()).hexdigest()[:16], 16)


def _shard_parts(item: tuple[str, list[dict]], counts: dict[str, int], per_shard: int) -> Iterator[tuple]:
    group, rows = item
    n = max(1, math.ceil(counts[group] / per_shard))
    for index, part in group_by(rows, lambda row: _row_number(row) % n).items():
        yield (group, index, n), part


class WriteShards(beam.PTransform):
    """Writes (group, batch of rows) pairs as sorted shards of at most about `rows_per_shard` rows
    each, in the format `formats` gives the group (every group goes through one shuffle); a
    row's shard is its id modulo the group's shard count."""

    def __init__(self, root: str, rows_per_shard: int, formats: dict[str, ShardFormat]):
        super().__init__()
        self.root, self.rows_per_shard, self.formats = root, rows_per_shard, formats

    def expand(self, batches):
        counts = (batches | "Sizes" >> beam.Map(lambda kv: (kv[0], len(kv[1])))
                  | "Count" >> beam.CombinePerKey(sum))
        return (
            batches
            | "ShardKey" >> beam.FlatMap(_shard_parts, beam.pvalue.AsDict(counts), self.rows_per_shard)
            | "GroupShard" >> beam.GroupByKey()
            | "Write" >> beam.ParDo(_WriteShard(self.root, self.formats))
        )


DEDUP_STAGES = ("exact_dedup", "near_dedup")  # what they drop are duplicates, counted apart from rejections
Counts = Iterator[tuple[tuple[str, str, str, str], int]]


def kept_counts(batch: list[dict[str, Any]]) -> Counts:
    """A batch of kept records: its ("kept", source, "split", split) keys and its characters
    per split, ("chars", "", "", split), counted."""
    keys: Counter = Counter()
    for r in batch:
        keys["kept", r["source"], "split", r["split"]] += 1
        keys["chars", "", "", r["split"]] += len(r["text"])
    yield from keys.items()


def dropped_counts(batch: list[dict[str, Any]]) -> Counts:
    """A batch of rejections and duplicates: its (outcome, source, stage, reason) keys, counted."""
    yield from Counter(("duplicate" if r["stage"] in DEDUP_STAGES else "rejected", r["source"], r["stage"], r["reason"])
                       for r in batch).items()


def build_stats(counts: Iterable[tuple[tuple[str, str, str, str], int]], segment: dict[str, int]) -> dict[str, Any]:
    """stats.json: totals, per split, per stage and reason, per source; input = kept + rejected + duplicates.
    `segment`: segmentation counts so far, to which ("segment", source, "", key) counts add."""
    def empty() -> dict[str, Any]:
        return {"input": 0, "kept": 0, "rejected": 0, "duplicates": 0}

    total, sources = empty(), defaultdict(empty)
    splits = {s: 0 for s in SPLITS}
    stages: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    shuffle: dict[str, int] = {}
    segment = Counter(segment)
    for (outcome, source, stage, reason), n in counts:
        if outcome == "shuffle":  # what near dedup moved between steps, not records
            shuffle[reason] = shuffle.get(reason, 0) + n
            continue
        if outcome == "chars":  # characters per split: the manifest's
            continue
        if outcome == "segment":  # units cut into sentences, and the sentences they gave
            segment[reason] += n
            continue
        field = {"kept": "kept", "rejected": "rejected", "duplicate": "duplicates"}[outcome]
        for target in (total, sources[source]):
            target[field] += n
            target["input"] += n
        if outcome == "kept":
            splits[reason] += n
        else:
            stages[stage][reason] += n
            sources[source].setdefault("by_reason", defaultdict(int))[reason] += n
    stage_order = ("read", "normalise", "langid", "quality", "exact_dedup", "near_dedup")
    return {
        **total,
        "splits": splits,
        "stages": {s: dict(sorted(stages[s].items())) for s in stage_order if s in stages},
        "segment": dict(sorted(segment.items())),
        **({"near_dedup_shuffle": dict(sorted(shuffle.items()))} if shuffle else {}),
        "sources": {name: {**{k: v for k, v in s.items() if k != "by_reason"},
                           "by_reason": dict(sorted(s.get("by_reason", {}).items()))}
                    for name, s in sorted(sources.items())},
        "note": "input counts records after sentence segmentation plus units rejected before it",
    }


HF_SPLITS = (("train", "train"), ("validation", "dev"), ("test", "test"))  # Hugging Face name, our folder


def card_front_matter(name: str, language: str, augmented: bool) -> str:
    """The dataset card's YAML metadata: the Hub's `configs`, so that the snapshot folder is a
    Hugging Face dataset (`datasets.load_dataset(VERSION_DIR)` gives train, validation and test;
    `load_dataset(VERSION_DIR, "augmented")` the variants), and nothing else in it (rejected/,
    augmented/) joins a split. Strings are written as JSON, which YAML reads as they are."""
    lines = ["---", f"pretty_name: {json.dumps(name)}", f"language:\n- {json.dumps(language)}", "configs:",
             "- config_name: default", "  default: true", "  data_files:"]
    lines += [f"  - split: {hf}\n    path: {ours}/*.parquet" for hf, ours in HF_SPLITS]
    if augmented:
        lines += ["- config_name: augmented", "  data_files:", "  - split: train", "    path: augmented/train/*.parquet"]
    return "\n".join(lines + ["---", ""])


def with_front_matter(card: str, front: str) -> str:
    """`card` with its YAML front matter replaced by `front` (added when it has none)."""
    if card.startswith("---\n"):
        card = card.split("\n---\n", 1)[1]
    return front + card


def dataset_card(spec: Any, version: str, stats: dict[str, Any], manifest: dict[str, Any]) -> str:
    lines = [
        card_front_matter(spec.name, spec.language, augmented=False) + f"# {spec.name} ({version})", "",
        spec.description or "", "",
        f"- language: `{spec.language}`",
        f"- licence: {spec.license or 'not stated in the spec'}",
        f"- split method: `{spec.split.method}`" + (f" (dev {spec.split.dev}, test {spec.split.test})" if spec.split.method != "source" else ""),
        f"- records: {stats['kept']} kept of {stats['input']} ({stats['rejected']} rejected, {stats['duplicates']} duplicates)",
        "", "| split | rows | characters |", "|---|---:|---:|",
    ]
    for s in SPLITS:
        lines.append(f"| {s} | {stats['splits'][s]} | {manifest['characters'][s]} |")
    lines += ["", "## Sources", "", "| name | location | sha256 |", "|---|---|---|"]
    for src in manifest["sources"]:
        lines.append(f"| {src['name']} | {src['location']} | `{src['sha256']}` |")
    lines += ["", "## Rejected and duplicate records by stage", "", "| stage | reason | records |", "|---|---|---:|"]
    for stage, reasons in stats["stages"].items():
        for reason, n in reasons.items():
            lines.append(f"| {stage} | {reason} | {n} |")
    lines += [
        "", "## Loading", "", "The folder is a Hugging Face dataset (offline, no script):", "",
        "```python", "import datasets",
        f'splits = datasets.load_dataset("{version}")  # train, validation (dev/), test',
        f'variants = datasets.load_dataset("{version}", "augmented")  # once pipelines.augment has run', "```",
        "", "Columns: `id` (sha1 of the text, 16 hex digits), `text`, `source`, `doc`, `pos` (order inside",
        "the document), `lang`, `lang_score`. Rejected and duplicate records, with reasons, are in `rejected/`.", "",
    ]
    return "\n".join(lines)


class Finalise(beam.DoFn):
    """Writes stats.json, manifest.json, the spec and the dataset card once every shard exists.

    Side inputs: the written shards (the manifest lists the splits') and the summed counts: the
    (outcome, source, stage, reason) keys of `build_stats`, and characters per split (see
    `kept_counts`). `segment`: the segmentation counts of the sources that came from the cache."""

    def __init__(self, root: str, spec: Any, version: str, manifest_base: dict[str, Any], segment: dict[str, int]):
        self.root, self.spec, self.version, self.base, self.segment = root, spec, version, manifest_base, segment

    def process(self, _: Any, shards: list[dict], counts: list) -> Iterator[dict]:
        shards = sorted((s for s in shards if s["group"] in SPLITS), key=lambda s: s["path"])
        present = {s["group"] for s in shards}
        for split in SPLITS:  # an empty split still gets a (schema-only) shard so it loads
            if split not in present:
                name = shard_name(split, 0, 1, "parquet")
                shards.append({"path": name, "group": split, "rows": 0,
                               "sha256": write_bytes(FileSystems.join(self.root, name), parquet_bytes([]))})
        shards.sort(key=lambda s: (SPLIT_PRIORITY.get(s["group"], 3), s["path"]))
        stats = build_stats(counts, self.segment)
        characters = {s: 0 for s in SPLITS} | {split: n for (outcome, _, _, split), n in counts if outcome == "chars"}
        manifest = {**self.base, "characters": characters, "splits": stats["splits"],
                    "shards": [{k: s[k] for k in ("path", "rows", "sha256")} for s in shards]}
        write_bytes(FileSystems.join(self.root, SPEC_COPY), self.spec.text.encode("utf-8"))
        write_bytes(FileSystems.join(self.root, STATS), json_bytes(stats))
        write_bytes(FileSystems.join(self.root, MANIFEST), json_bytes(manifest))
        write_bytes(FileSystems.join(self.root, "README.md"), dataset_card(self.spec, self.version, stats, manifest).encode("utf-8"))
        yield stats


def json_bytes(obj: Any) -> bytes:
    """Indented, sorted, UTF-8 JSON with a final newline: the shape of every JSON file we write."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
