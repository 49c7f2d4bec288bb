"""A teacher judges text: every variant and a sample of the real train sentences is scored on its
own in bits per character (`lm.scoring.texts_bits_per_char`, batched and jitted), and a variant is
kept when it scores no worse than the `--keep-quantile` quantile of the real sentences.

Scores are kept in the run (`RUN/judge/real_bpc.npy`, `RUN/rounds/rN/judged.parquet` with
`bits_per_char` and `kept`), so a re-run reads them back instead of judging again.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow.parquet as pq

from lm.scoring import texts_bits_per_char

from lm.distill.variants import VARIANT_COLUMNS, write_variants
from lm.distill.workspace import Workspace


@dataclass(frozen=True)
class Verdict:
    threshold: float                 # bits/char: the Q quantile of the real sentences
    keep: np.ndarray                 # bool per variant
    per_augmenter: dict[str, dict]   # name -> {"variants", "kept", "kept_fraction"}


def quantile_filter(real_bpc: np.ndarray, variant_bpc: np.ndarray, augmenters: Sequence[str],
                    q: float) -> Verdict:
    """Keep a variant when it scores no worse than the `q` quantile of the real sentences' bits
    per character; the threshold is the same for every augmenter, counts are per augmenter."""
    if not 0.0 < q <= 1.0:
        raise ValueError(f"--keep-quantile must be in (0, 1], not {q}")
    real = real_bpc[np.isfinite(real_bpc)]
    threshold = float(np.quantile(real, q)) if len(real) else math.inf
    keep = np.isfinite(variant_bpc) & (variant_bpc <= threshold)
    per: dict[str, dict] = {}
    names = np.asarray(augmenters, dtype=object)
    for name in sorted(set(augmenters)):
        sel = names == name
        n, k = int(sel.sum()), int(keep[sel].sum())
        per[name] = {"variants": n, "kept": k, "kept_fraction": round(k / n, 4) if n else 0.0}
    return Verdict(threshold, keep, per)


def _score(judge: Any, texts: list[str]) -> np.ndarray:
    return texts_bits_per_char(judge.nll, judge.tokenizer.encode, judge.tokenizer.eos_id, texts, judge.context)


def real_scores(ws: Workspace, judge: Any) -> np.ndarray:
    """The judge's bits per character of (a seeded sample of) the real train sentences."""
    path = ws.run / "judge" / "real_bpc.npy"
    if path.is_file():
        return np.load(path)
    texts = [r["text"] for r in ws.snapshot.records("train")]
    if len(texts) > ws.preset.judge_real:  # a quantile needs a sample, not every sentence
        pick = np.sort(np.random.default_rng([ws.settings.seed, 5]).permutation(len(texts))[: ws.preset.judge_real])
        texts = [texts[i] for i in pick]
    t = time.perf_counter()
    scores = _score(judge, texts)
    ws.log(f"judge: {len(texts):,} real train sentences scored in {time.perf_counter() - t:.1f}s, "
           f"median {np.nanmedian(scores):.3f} bits/char")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, scores)
    return scores


def judge_round(ws: Workspace, r: int, rows: list[dict], judge: Any, real_bpc: np.ndarray) -> tuple[list[dict], dict]:
    """Score and filter a round's new variants (read back when already judged): the kept ones and
    {"threshold", "augmenters": per augmenter counts, "median_bpc": per augmenter}."""
    path = ws.run / "rounds" / f"r{r}" / "judged.parquet"
    judged = path.is_file()
    if judged:
        table = pq.read_table(path).to_pylist()
        bpc = np.asarray([x["bits_per_char"] for x in table], np.float64)
        rows = [{c: x[c] for c in VARIANT_COLUMNS} for x in table]
    else:
        t = time.perf_counter()
        bpc = _score(judge, [x["text"] for x in rows])
        ws.log(f"round {r}: judged {len(rows):,} variants in {time.perf_counter() - t:.1f}s")
    verdict = quantile_filter(real_bpc, bpc, [x["augmenter"] for x in rows], ws.settings.keep_quantile)
    if not judged:
        write_variants(path, rows, {"bits_per_char": bpc.tolist(), "kept": verdict.keep.tolist()})
    kept = [x for x, k in zip(rows, verdict.keep) if k]
    return kept, {"threshold": verdict.threshold, "augmenters": verdict.per_augmenter,
                  "median_bpc": {a: float(np.nanmedian(bpc[[x["augmenter"] == a for x in rows]]))
                                 for a in verdict.per_augmenter}}
