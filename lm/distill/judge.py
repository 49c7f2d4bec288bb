"""Judging augmented text with models that never saw it: two cross-fitted character n-grams.

The train split's records are cut in two seeded halves. `judge-a` is an interpolated modified
Kneser-Ney character n-gram (`lm.ngram.CharNgram`) counted on half A's records alone (joined with
the corpus separator, as `lm.corpus` joins a split), `judge-b` one counted on half B's; each one's
order is the one with the lowest bits per character on the real dev split, which is never
augmented and never a parent, so the choice sees no text it will judge. Nothing is trained by
gradient: counting is cheap, so a re-run counts the same records again and reads the order back.
`RUN/judge/NAME.json` keeps each judge's method, order, dev curve and `data` record (which train
records it counted, `lm.run.data_record`).

A variant is scored by the judge that never saw its parent sentence: bits per character of the
variant's text on its own (its first characters use the history they have; no separator around
it). Each judge's keep threshold is the `--keep-quantile` quantile of its bits per character on a
seeded sample of the other half's real sentences. So every score is out of sample: the threshold
is not pulled down by memorised sentences, and variants of memorised parents get no favour. Every
call checks it by id against the judge's `data` record (`lm.run.seen_by`) and stops with a
`LeakError` otherwise.

Scores are kept in the run (`RUN/judge/real_bpc-NAME.npy`, `RUN/rounds/rN/judged.parquet` with
`bits_per_char`, `judge` and `kept`), so a re-run reads them back instead of judging again.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow.parquet as pq

from common.files import read_json, write_json, write_npy
from lm.errors import DataError
from lm.ngram import KN, METHODS, START_ORDER, CharNgram, dev_curve
from lm.run import data_record, seen_by

from lm.distill.variants import VARIANT_COLUMNS, write_variants
from lm.distill.workspace import Workspace

JUDGES = ("judge-a", "judge-b")


class LeakError(RuntimeError):
    """A judge was asked to score text it trained on (a bug: the cross-fitting must prevent it)."""


@dataclass(frozen=True)
class Judge:
    name: str
    half: int                 # the half of train it counted
    model: CharNgram          # counted on that half's records alone
    order: int                # the n-gram order it scores with, chosen on dev
    info: dict[str, Any]      # RUN/judge/NAME.json: method, order, dev curve, the `data` record

    def describe(self, real_bpc: np.ndarray) -> dict[str, Any]:
        """The report's entry: method, order, train records counted, dev and median bits per
        character of its real sample (the other half's sentences, `real_scores`)."""
        return {"method": self.info["method"], "order": self.order, "records": len(self.info["data"]["records"]),
                "dev_bits_per_char": self.info["dev_bits_per_char"],
                "real_median_bits_per_char": float(np.nanmedian(real_bpc)) if len(real_bpc) else None}


@dataclass(frozen=True)
class Verdict:
    thresholds: list[float]          # bits/char per judge: the Q quantile of its real sentences
    keep: np.ndarray                 # bool per variant
    per_augmenter: dict[str, dict]   # name -> {"variants", "kept", "kept_fraction"}

    @property
    def threshold(self) -> float:
        """The judges' mean threshold (the report's)."""
        return float(np.mean(self.thresholds))


def quantile_filter(real_bpc: Sequence[np.ndarray], variant_bpc: np.ndarray, augmenters: Sequence[str],
                    q: float, judge: np.ndarray | None = None) -> Verdict:
    """Keep a variant when it scores no worse than the `q` quantile of its judge's bits per
    character of real sentences (`real_bpc[judge[i]]`; no `judge`: the first for every variant);
    the thresholds are the same for every augmenter, counts are per augmenter."""
    thresholds = [quantile_threshold(r, q) for r in real_bpc]
    which = np.zeros(len(variant_bpc), np.int64) if judge is None else judge
    keep = np.isfinite(variant_bpc) & (variant_bpc <= np.asarray(thresholds)[which])
    return Verdict(thresholds, keep, count_kept(keep, augmenters))


def quantile_threshold(real_bpc: np.ndarray, q: float) -> float:
    """The `q` quantile of the real sentences' finite bits per character (inf without any)."""
    if not 0.0 < q <= 1.0:
        raise ValueError(f"--keep-quantile must be in (0, 1], not {q}")
    real = real_bpc[np.isfinite(real_bpc)]
    return float(np.quantile(real, q)) if len(real) else math.inf


def count_kept(keep: np.ndarray, augmenters: Sequence[str]) -> dict[str, dict]:
    per: dict[str, dict] = {}
    names = np.asarray(augmenters, dtype=object)
    for name in sorted(set(augmenters)):
        sel = names == name
        n, k = int(sel.sum()), int(keep[sel].sum())
        per[name] = {"variants": n, "kept": k, "kept_fraction": round(k / n, 4) if n else 0.0}
    return per


def halves(ws: Workspace) -> dict[str, int]:
    """Train record id -> 0 or 1: a seeded split of the records in two (as equal as can be)."""
    ids = sorted({r["id"] for r in ws.snapshot.records("train")})
    perm = np.random.default_rng([ws.settings.seed, 17]).permutation(len(ids))
    return {ids[i]: int(rank >= len(ids) // 2) for rank, i in enumerate(perm)}


def train_judges(ws: Workspace) -> list[Judge]:
    """`judge-a` and `judge-b`: each a modified Kneser-Ney character n-gram counted on its half of
    the train records, its order chosen on dev (on a re-run: read back, the records counted again)."""
    half_of, recs = halves(ws), ws.snapshot.records("train")
    return [count_judge(ws, name, h, [r for r in recs if half_of[r["id"]] == h]) for h, name in enumerate(JUDGES)]


def count_judge(ws: Workspace, name: str, h: int, recs: list[dict]) -> Judge:
    """One judge on the records `recs` of half `h`; `RUN/judge/NAME.json` records it."""
    path = ws.run / "judge" / f"{name}.json"
    text = ws.snapshot.separator.join(r["text"] for r in recs)
    data = data_record(ws.snapshot, ["train"], [r["id"] for r in recs])
    if path.is_file():
        info = read_json(path)
        if info["data"] != data:  # the halves follow the seed and snapshot, both fixed at creation
            raise DataError(f"{path}: counted on other records than half {'AB'[h]} of this run's train split")
        return Judge(name, h, CharNgram(text, info["order"], info["method"]), info["order"], info)
    dev = ws.snapshot.text("dev")
    if not dev:
        raise DataError(f"{ws.snapshot.root}: the judges' n-gram order is chosen on dev, and dev is empty")
    t = time.perf_counter()
    model = CharNgram(text, START_ORDER, KN)
    by_order = dev_curve(model, dev)
    order = int(np.argmin(by_order)) + 1
    info = {"name": name, "method": KN, "model": METHODS[KN], "half": "AB"[h], "order": order,
            "dev_bits_per_char": by_order[order - 1], "dev_bits_per_char_by_order": by_order,
            "train_chars": len(text), "data": data}
    write_json(path, info)
    ws.log(f"{name}: {METHODS[KN]} on half {'AB'[h]} of train ({len(recs):,} records), order {order} "
           f"(dev {by_order[order - 1]:.3f} bits/char) in {time.perf_counter() - t:.1f}s")
    return Judge(name, h, model, order, info)


def score(ws: Workspace, judge: Judge, texts: list[str], record_ids: Sequence[str] = (),
          variant_ids: Sequence[str] = ()) -> np.ndarray:
    """Bits per character of each text on its own (NaN when empty) at the judge's order, after
    checking by id that `judge` never counted these records or these variants' parents
    (`record_ids`) or variants (`variant_ids`)."""
    seen = seen_by(judge.info, ws.snapshot, "train", record_ids, variant_ids)
    if seen:
        raise LeakError(f"{judge.name} trained on {len(seen)} of the texts it was asked to judge "
                        f"(e.g. {sorted(seen)[0]}): a judge never scores its own training text")
    return np.asarray([judge.model.bits_per_char_at(t, judge.order) if t else math.nan for t in texts], np.float64)


def real_scores(ws: Workspace, judges: list[Judge]) -> list[np.ndarray]:
    """Per judge, its bits per character of a seeded sample of the other half's real sentences."""
    half_of, out = halves(ws), []
    for j in judges:
        path = ws.run / "judge" / f"real_bpc-{j.name}.npy"
        if path.is_file():
            out.append(np.load(path))
            continue
        recs = [r for r in ws.snapshot.records("train") if half_of[r["id"]] != j.half]
        n = max(1, ws.settings.judge_real // len(judges))
        if len(recs) > n:  # a quantile needs a sample, not every sentence
            pick = np.sort(np.random.default_rng([ws.settings.seed, 5, j.half]).permutation(len(recs))[:n])
            recs = [recs[i] for i in pick]
        t = time.perf_counter()
        scores = score(ws, j, [r["text"] for r in recs], [r["id"] for r in recs])
        ws.log(f"{j.name}: {len(recs):,} real sentences of the other half scored in {time.perf_counter() - t:.1f}s, "
               f"median {np.nanmedian(scores):.3f} bits/char")
        write_npy(path, scores)
        out.append(scores)
    return out


def judge_round(ws: Workspace, r: int, rows: list[dict], judges: list[Judge],
                real: list[np.ndarray]) -> tuple[list[dict], dict]:
    """Score and filter a round's new variants (read back when already judged), each by the judge
    that never saw its parent: the kept ones and {"threshold" (the judges' mean), "thresholds",
    "augmenters": per augmenter counts, "median_bpc": per augmenter}."""
    path = ws.run / "rounds" / f"r{r}" / "judged.parquet"
    half_of = halves(ws)
    # a variant whose parent is in neither half (none today) goes to the first judge; `score` checks
    which = np.asarray([1 - half_of[x["parent_id"]] if x["parent_id"] in half_of else 0 for x in rows], np.int64)
    judged = path.is_file()
    if judged:
        table = pq.read_table(path).to_pylist()
        bpc = np.asarray([x["bits_per_char"] for x in table], np.float64)
        rows = [{c: x[c] for c in VARIANT_COLUMNS} for x in table]
        which = np.asarray([JUDGES.index(x["judge"]) for x in table], np.int64)
    else:
        t = time.perf_counter()
        bpc = np.full(len(rows), np.nan)
        for k, j in enumerate(judges):
            idx = np.flatnonzero(which == k)
            sel = [rows[i] for i in idx]
            bpc[idx] = score(ws, j, [x["text"] for x in sel], [x["parent_id"] for x in sel], [x["id"] for x in sel])
        ws.log(f"round {r}: judged {len(rows):,} variants in {time.perf_counter() - t:.1f}s")
    augmenters = [x["augmenter"] for x in rows]
    v = quantile_filter(real[:len(judges)], bpc, augmenters, ws.settings.keep_quantile, which)
    if not judged:
        write_variants(path, rows, {"bits_per_char": bpc.tolist(), "judge": [JUDGES[k] for k in which],
                                    "kept": v.keep.tolist()})
    kept = [x for x, k in zip(rows, v.keep) if k]
    return kept, {"threshold": v.threshold, "thresholds": {j.name: t for j, t in zip(judges, v.thresholds)},
                  "augmenters": v.per_augmenter,
                  "median_bpc": {a: float(np.nanmedian(bpc[[x == a for x in augmenters]])) for a in v.per_augmenter}}
