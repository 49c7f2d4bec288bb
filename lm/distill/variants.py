"""Augmented text for the loop: variant files (Parquet with `VARIANT_COLUMNS`), the snapshot's
augmented set (made with `pipelines.augment` when missing), a later round's fresh variants and the
teacher's samples (ours or a Hugging Face model's). The only module of `lm` that runs `pipelines` or `augment`; they
are imported where used (Apache Beam takes seconds to import, and a run that has its augmented
text never needs it).
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.files import read_json, replacing
from common.snapshot_format import SPEC_COPY, checked_shards, read_spec_copy
from lm.corpus import Snapshot
from lm.errors import DataError

from lm.distill.workspace import Workspace

VARIANT_COLUMNS = ("id", "text", "parent_id", "augmenter", "params", "seed")
TEACHER_SAMPLE = "teacher-sample"


def read_variants(folder: Path) -> list[dict[str, Any]]:
    """Every variant under `folder`, in a fixed order."""
    rows: list[dict[str, Any]] = []
    for f in checked_shards(folder):
        rows += pq.read_table(f, columns=list(VARIANT_COLUMNS)).to_pylist()
    rows.sort(key=lambda r: (r["augmenter"], r["parent_id"], r["params"], r["id"]))
    return rows


def read_variants_file(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path, columns=list(VARIANT_COLUMNS)).to_pylist()


def write_variants(path: Path, rows: list[dict[str, Any]], extra: dict[str, list] | None = None) -> None:
    cols = {c: [r[c] for r in rows] for c in VARIANT_COLUMNS}
    table = pa.table({**cols, **(extra or {})})
    with replacing(path) as tmp:
        pq.write_table(table, tmp)


def merge(a: list[dict], b: list[dict]) -> list[dict]:
    """`a` then the variants of `b` it does not hold (by id)."""
    seen = {x["id"] for x in a}
    return a + [x for x in b if x["id"] not in seen]


def augment_seed(snapshot: Snapshot) -> int:
    """The snapshot's [augment] seed (round 1's variants were made with it)."""
    try:
        return int(read_json(snapshot.augmented_dir() / "stats.json").get("seed", 0))
    except (OSError, ValueError):
        return 0


def ensure_augmented(snapshot: Snapshot) -> Path:
    """The snapshot's augmented set, made with pipelines.augment when missing."""
    folder = snapshot.augmented_dir() / "train"
    if folder.is_dir() and any(folder.glob("*.parquet")):
        return folder
    from pipelines.augmentation import augment_snapshot
    from pipelines.errors import ScarceError
    print(f"no augmented text in {snapshot.root}: running pipelines.augment", file=sys.stderr)
    try:
        augment_snapshot(str(snapshot.root.parent), version=snapshot.version)
    except ScarceError as exc:
        raise DataError(f"augmentation failed: {exc}") from exc
    return folder


def augment_round(run: Path, snapshot: Snapshot, seed: int, weights: dict[str, float], floor: float = 0.05) -> list[dict]:
    """Run pipelines.augment again with a new seed on a shadow of the snapshot (the snapshot's own
    augmented set is left alone), with the augmenters the previous round weighted above `floor`.
    Deterministic backends (Apertium, beam search) are skipped: a new seed gives them nothing new."""
    from augment.registry import parse_augment
    from pipelines.augmentation import augment_snapshot
    from pipelines.errors import ScarceError
    from pipelines.spec import parse_spec

    spec_path = snapshot.root / "spec.toml"
    spec = parse_spec(spec_path.read_text(encoding="utf-8"), str(spec_path))
    config = parse_augment(spec.augment, spec.language)
    steps = []
    for step, raw in zip(config.steps, spec.augment["steps"]):
        deterministic = step.kind == "backtranslate" and not step.params.get("do_sample")
        if not deterministic and weights.get(step.name, 0.0) >= floor:
            steps.append(raw)
    if not steps:
        return []
    shadow = run / "rounds" / f"seed-{seed}" / snapshot.name
    vdir = shadow / snapshot.version
    vdir.mkdir(parents=True, exist_ok=True)
    for name in ("train", "dev", "test", "manifest.json", "spec.toml"):
        link = vdir / name
        if not link.exists():
            link.symlink_to((snapshot.root / name).resolve())
    (shadow / "LATEST").write_text(snapshot.version + "\n", encoding="utf-8")
    spec = dataclasses.replace(spec, augment={**spec.augment, "steps": steps})
    try:
        augment_snapshot(str(shadow), spec=spec, seed=seed)
    except ScarceError as exc:
        raise DataError(f"round augmentation failed: {exc}") from exc
    return read_variants(vdir / "augmented" / "train")


def sample_settings(snapshot: Snapshot, preset_samples: int, preset_tokens: int) -> dict[str, Any]:
    """The spec's `[augment.teacher_sample]` (checked by `augment.registry`) over the preset's
    defaults: {"samples", "max_tokens", "temperature", "top_p"}; samples 0 turns it off."""
    from augment.registry import parse_teacher_sample
    path = snapshot.root / SPEC_COPY
    table = read_spec_copy(path).get("augment", {})
    try:
        given = parse_teacher_sample(table.get("teacher_sample", {}))
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None
    return {"samples": preset_samples, "max_tokens": preset_tokens, **given}


def flax_sampler(model: Any, temperature: float, top_p: float) -> Callable[[list[str], int, int], list[str]]:
    """(prefixes, seed, max new tokens) -> continuations by one of our models (`lm.generate`, a
    key/value cache, one seed per prefix so a sample does not depend on its batch)."""
    from lm.generate import generate

    def sample(prefixes: list[str], seed: int, tokens: int) -> list[str]:
        return [generate(model, p, max_tokens=tokens, temperature=temperature, top_p=top_p, seed=seed * 100_003 + i)
                for i, p in enumerate(prefixes)]
    return sample


def teacher_samples(ws: Workspace, sampler: Callable[[list[str], int, int], list[str]], r: int, seed: int,
                    samples: int, tokens: int, params: dict[str, Any]) -> list[dict]:
    """Sequence-level distillation: the teacher continues prefixes (the first third of the words)
    of `samples` seeded real train sentences; each new text becomes a variant of its sentence
    (`augmenter = "teacher-sample"`, `parent_id` the sentence). `params` (temperature, ...) go into
    the variants' provenance."""
    from pipelines.records import record_id
    path = ws.run / "rounds" / f"r{r}" / "teacher-samples.parquet"
    if path.is_file():
        return read_variants_file(path)
    recs = ws.snapshot.records("train")
    rng = np.random.default_rng([seed, 11])
    picks = rng.permutation(len(recs))[:samples]
    prefixes, parents = [], []
    for i in picks:
        words = recs[i]["text"].split(" ")
        if len(words) < 4:
            continue
        prefixes.append(" ".join(words[: max(3, len(words) // 3)]))
        parents.append(recs[i]["id"])
    t = time.perf_counter()
    conts = sampler(prefixes, seed, tokens)
    known = {x["id"] for x in recs}
    rows, seen = [], set()
    for prefix, cont, parent in zip(prefixes, conts, parents):
        # a record may hold several lines (verse, dialogue): the sample runs to the teacher's
        # end of record, each line's spaces tidied
        text = "\n".join(" ".join(line.split()) for line in (prefix + cont).strip().split("\n"))
        rid = record_id(text)
        if not cont.strip() or rid in known or rid in seen:
            continue
        seen.add(rid)
        rows.append({"id": rid, "text": text, "parent_id": parent, "augmenter": TEACHER_SAMPLE,
                     "params": json.dumps({"max_new_tokens": tokens, **params,
                                           "prefix": "first third of the words"}, sort_keys=True), "seed": int(seed)})
    ws.log(f"round {r}: {len(rows):,} teacher samples in {time.perf_counter() - t:.1f}s")
    write_variants(path, rows)
    return rows
