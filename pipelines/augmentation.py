"""The augmentation pipeline (its command is pipelines/augment.py): the spec's `[augment]` steps
over a snapshot's train split, into `VERSION/augmented/` (shards, `stats.json`, `failed.jsonl`).

Dev and test are never augmented: only the train shards are read as parents; the ids of all
splits are read only to drop variants that already exist anywhere in the corpus.

Backends load in `DoFn.setup`; records go to them in batches (`beam.BatchElements`, or batches
fixed by record id for backends whose output depends on batch-mates, as Apertium's); a failing
batch is retried in halves down to single records, so one bad record never costs the good ones
beside it, and what still fails goes to a dead-letter output. Each record's random stream is
seeded from (record id, augmenter, step, seed), so the output is the same for any batching,
order or number of workers, and the shards are byte-identical between runs.
"""
from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from typing import Any, Iterable, Iterator, NamedTuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from augment.base import AugmenterError, record_seed
from augment.filters import VariantFilter
from augment.registry import AugmentConfig, Step, parse_augment
from augment.words import WORD
from common.files import write_text_atomic
from common.snapshot_format import resolve_version, verify_shards
from pipelines.errors import ScarceError, SourceError, SpecError
from pipelines.records import REJECTED, Stage, StageOutput, record_id, reject
from pipelines.runners import pipeline_options
from pipelines.snapshot import augmented_staging_dir, cleaned_on_failure, holding_corpus_lock, replace_folder
from pipelines.spec import CorpusSpec, OutputSpec, parse_spec
from pipelines.write import ShardFormat, WriteShards, card_front_matter, json_bytes, jsonl_bytes, with_front_matter, write_bytes

AUGMENTED = "augmented"
SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("parent_id", pa.string()), ("augmenter", pa.string()),
    ("params", pa.string()), ("seed", pa.int64()),
])
STOPWORDS_TOP = 100
# The reason of a record the backend could not take (failed.jsonl), as opposed to a variant dropped.
FAILED = "failed"


def variant_order(r: dict[str, Any]) -> tuple:
    return r["augmenter"], r["parent_id"], r["params"], r["id"]


class HashBatches(beam.PTransform):
    """Batches whose members depend only on the record ids, never on runner or timing.

    For backends with memory across lines: Apertium's tagger and transfer carry state from one
    line to the next, so a sentence's translation depends on its batch-mates; fixing the
    batches by id keeps the output identical on every runner and worker count.
    """

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size

    def expand(self, records):
        size = self.batch_size
        count = records | "Count" >> beam.combiners.Count.Globally()
        return (
            records
            | "KeyByIdHash" >> beam.Map(lambda r, n: (int(r["id"][:12], 16) % max(1, -(-n // size)), r),
                                        beam.pvalue.AsSingleton(count))
            | "GroupBatch" >> beam.GroupByKey()
            | "Chunk" >> beam.FlatMap(lambda kv: _chunks(sorted(kv[1], key=lambda r: r["id"]), size))
        )


def _chunks(rows: list, size: int) -> Iterator[list]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def _rejection(augmenter: str, parent_id: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"augmenter": augmenter, "parent_id": parent_id, "reason": reason, **extra}


class AugmentBatch(beam.DoFn):
    """Runs one step on a batch; variants that fail the filters, and records the backend could
    not take (reason `failed`), are rejected; each batch's (size, seconds) goes to `timing`."""

    def __init__(self, step: Step, language: str, seed: int, filters: VariantFilter):
        self.step, self.language, self.seed, self.filters = step, language, seed, filters

    def setup(self) -> None:
        self.augmenter = self.step.build(self.language)
        self.augmenter.setup()

    def _run(self, batch: list[dict]) -> Iterator[tuple[dict, list[str]]]:
        """(record, variants) for every record, halving a failing batch down to single records."""
        try:
            seeds = [record_seed(r["id"], self.step.name, self.step.index, self.seed) for r in batch]
            variants = self.augmenter.augment_batch([r["text"] for r in batch], seeds)
            if len(variants) != len(batch):
                raise AugmenterError(f"{len(variants)} results for {len(batch)} records")
            yield from zip(batch, variants)
        except Exception as exc:  # a backend may die any way; the dead letter keeps the cause
            if len(batch) == 1:
                yield batch[0], exc
                return
            half = len(batch) // 2
            yield from self._run(batch[:half])
            yield from self._run(batch[half:])

    def process(self, batch: list[dict], stopwords: list[str]) -> Iterator[Any]:
        self.augmenter.set_stopwords(stopwords)
        start = time.perf_counter()
        name = self.step.name
        for record, variants in self._run(list(batch)):
            if isinstance(variants, Exception):
                yield reject(_rejection(name, record["id"], FAILED, error=f"{type(variants).__name__}: {variants}"[:500]))
                continue
            seed = record_seed(record["id"], name, self.step.index, self.seed)
            for k, text in enumerate(variants):
                reason = self.filters.reason(record["text"], text)
                if reason:
                    yield reject(_rejection(name, record["id"], reason))
                    continue
                yield {"id": record_id(text), "text": text, "parent_id": record["id"], "augmenter": name,
                       "params": json.dumps(self.augmenter.variant_params(k), sort_keys=True, ensure_ascii=False),
                       "seed": seed}
        yield beam.pvalue.TaggedOutput("timing", (name, (len(batch), time.perf_counter() - start)))


class StepOutput(NamedTuple):
    """A step's StageOutput plus what it measured: (records in a batch, seconds) per batch."""

    records: beam.PCollection
    rejected: beam.PCollection
    timing: beam.PCollection


class AugmentStep(beam.PTransform):
    """One `[[augment.steps]]` entry over the train records: batches, the augmenter, the filters."""

    def __init__(self, step: Step, language: str, seed: int, config: AugmentConfig, stopwords: beam.PCollection):
        super().__init__()
        self.step, self.language, self.seed, self.config, self.stopwords = step, language, seed, config, stopwords

    def expand(self, train) -> StepOutput:
        size = self.config.batch_size
        # Context-free augmenters take Beam's adaptive batches; others get batches fixed by id.
        batcher = (beam.BatchElements(min_batch_size=min(50, size), max_batch_size=size)
                   if self.step.context_free else HashBatches(size))
        out = (
            train
            | "Batch" >> batcher
            | "Augment" >> beam.ParDo(AugmentBatch(self.step, self.language, self.seed, self.config.filters),
                                      beam.pvalue.AsSingleton(self.stopwords)
                                      ).with_outputs(REJECTED, "timing", main="records")
        )
        return StepOutput(out.records, out[REJECTED], out.timing)


class _DropKnown(beam.DoFn):
    """One variant per text, and none that already is a corpus sentence (any split)."""

    def process(self, item: tuple[str, dict]) -> Iterator[Any]:
        _, joined = item
        variants = sorted(joined["variants"], key=variant_order)
        if not variants:
            return
        if list(joined["corpus"]):
            for v in variants:
                yield reject(_rejection(v["augmenter"], v["parent_id"], "in_corpus", id=v["id"]))
            return
        yield variants[0]
        for v in variants[1:]:
            yield reject(_rejection(v["augmenter"], v["parent_id"], "duplicate_variant", id=v["id"]))


def _sum_pairs(pairs: Iterable[tuple[float, float]]) -> tuple[float, float]:
    n = s = 0.0
    for a, b in pairs:
        n, s = n + a, s + b
    return n, s


class AugmentSnapshot(beam.PTransform):
    """Train split in, augmented shards, stats and dead letters out."""

    def __init__(self, version_dir: str, staging: str, config: AugmentConfig, language: str, seed: int):
        super().__init__()
        self.version_dir, self.staging, self.config, self.language, self.seed = version_dir, staging, config, language, seed

    def expand(self, pbegin):
        cfg = self.config
        # File patterns through Create + ReadAll: plain ParDos that every runner, Dask included, runs.
        train = (pbegin | "TrainFiles" >> beam.Create([FileSystems.join(self.version_dir, "train", "*.parquet")], reshuffle=False)
                 | "ReadTrain" >> beam.io.ReadAllFromParquet(columns=["id", "text"]))
        corpus_ids = [
            pbegin | f"IdFiles{split}" >> beam.Create([FileSystems.join(self.version_dir, split, "*.parquet")], reshuffle=False)
            | f"ReadIds{split}" >> beam.io.ReadAllFromParquet(columns=["id"])
            for split in ("train", "dev", "test")
        ]
        known = (corpus_ids | "AllIds" >> beam.Flatten()
                 | "KeyKnown" >> beam.Map(lambda r: (r["id"], True)))
        # The corpus's most frequent words: the stop-word list when NLTK has none for the language.
        stopwords = (train | "Words" >> beam.FlatMap(lambda r: [w.lower() for w in WORD.findall(r["text"])])
                     | "CountWords" >> beam.combiners.Count.PerElement()
                     | "TopWords" >> beam.combiners.Top.Of(STOPWORDS_TOP, key=lambda kv: (kv[1], kv[0]))
                     | "WordList" >> beam.Map(lambda top: [w for w, _ in top]))
        steps = [train | f"Augment[{step.name}]" >> AugmentStep(step, self.language, self.seed, cfg, stopwords)
                 for step in cfg.steps]
        deduped: StageOutput = (
            {"variants": [s.records for s in steps] | "AllVariants" >> beam.Flatten()
             | "KeyVariant" >> beam.Map(lambda v: (v["id"], v)),
             "corpus": known}
            | "JoinCorpus" >> beam.CoGroupByKey()
            | "DropKnown" >> Stage(_DropKnown())
        )
        shards = (deduped.records | "ToGroup" >> beam.Map(lambda v: ("train", [v]))
                  | "WriteVariants" >> WriteShards(self.staging, OutputSpec.rows_per_shard, {"train": ShardFormat("parquet", variant_order, SCHEMA)}))
        rejected = [s.rejected for s in steps] + [deduped.rejected] | "AllRejected" >> beam.Flatten()
        counts = (
            (rejected | "RejectedReason" >> beam.Map(lambda r: (r["augmenter"], r["reason"]))
             | "CountRejected" >> beam.combiners.Count.PerElement()
             | "RejectedKey" >> beam.Map(lambda kv: (("rejected",) + kv[0], kv[1])),
             deduped.records | "CountKept" >> beam.Map(lambda v: (v["augmenter"], 1)) | "SumKept" >> beam.CombinePerKey(sum)
             | "KeptKey" >> beam.Map(lambda kv: (("kept", kv[0], ""), kv[1])),
             [s.timing for s in steps] | "AllTiming" >> beam.Flatten() | "SumTiming" >> beam.CombinePerKey(_sum_pairs)
             | "TimingKey" >> beam.Map(lambda kv: (("timing", kv[0], ""), kv[1])))
            | "AllCounts" >> beam.Flatten()
        )
        dead = rejected | "Failed" >> beam.Filter(lambda r: r["reason"] == FAILED)
        return (
            pbegin | "Once" >> beam.Create([None], reshuffle=False)
            | "WriteStats" >> beam.ParDo(_WriteStats(self.staging, cfg, self.seed),
                                         beam.pvalue.AsList(counts), beam.pvalue.AsList(dead), beam.pvalue.AsList(shards))
        )


class _WriteStats(beam.DoFn):
    def __init__(self, root: str, cfg: AugmentConfig, seed: int):
        self.root, self.cfg, self.seed = root, cfg, seed

    def process(self, _: Any, counts: list, dead: list, shards: list) -> Iterator[dict]:
        stats: dict[str, Any] = {}
        for step in self.cfg.steps:
            stats[step.name] = {"augmenter": step.kind, "params": step.params, "inputs": 0, "produced": 0, "kept": 0,
                                "rejected": defaultdict(int), "failed": 0, "seconds": 0.0}
        for key, value in counts:
            kind, name, reason = key
            if kind == "rejected" and reason == FAILED:
                stats[name]["failed"] += value
            elif kind == "rejected":
                stats[name]["rejected"][reason] += value
            elif kind == "kept":
                stats[name]["kept"] += value
            else:
                stats[name]["inputs"] += int(value[0])
                stats[name]["seconds"] += value[1]
        for s in stats.values():
            s["rejected"] = dict(sorted(s["rejected"].items()))
            s["produced"] = s["kept"] + sum(s["rejected"].values())
            s["sentences_per_second"] = round(s["inputs"] / s["seconds"], 1) if s["seconds"] else None
            s["seconds"] = round(s["seconds"], 3)
        total = {k: sum(s[k] for s in stats.values()) for k in ("inputs", "produced", "kept", "failed")}
        doc = {"seed": self.seed, "total": total, "augmenters": stats,
               "shards": sorted(({k: s[k] for k in ("path", "rows", "sha256")} for s in shards), key=lambda s: s["path"])}
        write_bytes(FileSystems.join(self.root, "stats.json"), json_bytes(doc))
        # failed.jsonl keeps its own shape: what failed and why, without the rejection's reason.
        dead = sorted(({k: v for k, v in f.items() if k != "reason"} for f in dead),
                      key=lambda f: (f["augmenter"], f["parent_id"]))
        write_bytes(FileSystems.join(self.root, "failed.jsonl"), jsonl_bytes(dead))
        yield doc


@holding_corpus_lock  # a killed run's staging goes first; no build or refresh prunes the version meanwhile
def augment_snapshot(corpus_dir: str, spec: CorpusSpec | None = None, version: str | None = None,
                     seed: int | None = None, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Augment a snapshot's train split; returns the stats document."""
    vdir = resolve_version(corpus_dir, own_version(corpus_dir, version))
    verify_shards(vdir)  # parents must be the published train split, not whatever sits there now
    if spec is None:
        spec_path = os.path.join(vdir, "spec.toml")
        with open(spec_path, encoding="utf-8") as f:
            spec = parse_spec(f.read(), spec_path)
    if not spec.augment:
        raise SpecError(f"{spec.path}: augment: no [augment] table in the spec")
    try:
        config = parse_augment(spec.augment, spec.language)
    except ValueError as exc:
        raise SpecError(f"{spec.path}: {exc}") from None
    seed = config.seed if seed is None else seed
    target = os.path.join(vdir, AUGMENTED)
    staging = augmented_staging_dir(vdir)
    # Backends that cannot start (a missing Apertium pair or thesaurus) fail here, in one line.
    for step in config.steps:
        try:
            step.build(spec.language).setup()
        except AugmenterError as exc:
            raise SourceError(f"augment step {step.name}: {exc}") from None
    with cleaned_on_failure(staging, f"augmentation of {vdir}"):
        with beam.Pipeline(options=pipeline_options(beam_args)) as p:
            _ = p | "AugmentSnapshot" >> AugmentSnapshot(vdir, staging, config, spec.language, seed)
        refuse_all_failed(staging)
    replace_folder(staging, target)
    add_augmented_config(vdir, spec)
    with open(os.path.join(target, "stats.json"), encoding="utf-8") as f:
        return json.load(f)


def own_version(corpus_dir: str, version: str | None) -> str | None:
    """`version` as the name of a folder directly inside `corpus_dir` (a path to one is fine); a
    SpecError for one elsewhere (`../b/V`): the lock held is `corpus_dir`'s alone."""
    if not version:
        return version
    if "://" in corpus_dir:
        name = version.rstrip("/")
        inside = bool(name) and "/" not in name and name not in (".", "..")
    else:
        folder = os.path.normpath(os.path.join(corpus_dir, version))
        name = os.path.basename(folder)
        inside = os.path.realpath(os.path.dirname(folder)) == os.path.realpath(corpus_dir)
    if not inside:
        raise SpecError(f"--version {version}: not a version folder of {corpus_dir} (the corpus given, whose lock "
                        "is held); give one of its versions, or that version's own corpus folder")
    return name


def refuse_all_failed(staging: str) -> None:
    """A run in which every record failed says so and publishes nothing: an empty `augmented/`
    must never replace the variants of the last good run."""
    with open(os.path.join(staging, "stats.json"), encoding="utf-8") as f:
        total = json.load(f)["total"]
    if not total["inputs"] or total["failed"] < total["inputs"]:
        return
    with open(os.path.join(staging, "failed.jsonl"), encoding="utf-8") as f:
        first = json.loads(f.readline() or "{}")
    error = " ".join(str(first.get("error")).split())  # one line, whatever the backend said
    raise ScarceError(f"augment: every record failed ({total['failed']} of {total['inputs']}); nothing published, "
                      f"the previous augmented/ stays; first error ({first.get('augmenter')}): {error}")


def add_augmented_config(vdir: str, spec: CorpusSpec) -> None:
    """Declare the variants in the dataset card, so `datasets.load_dataset(VERSION, "augmented")`
    finds them; the rest of the card is kept as it is."""
    card = os.path.join(vdir, "README.md")
    if os.path.isfile(card):
        with open(card, encoding="utf-8") as f:
            text = f.read()
        write_text_atomic(card, with_front_matter(text, card_front_matter(spec.name, spec.language, augmented=True)))
