"""bench/augment.py's Apertium job: our ApertiumRoundTrip over a grid of jobs x batch sizes, our
BackTranslateAugmenter as the pipeline calls it, and where each direction's CPU goes, stage by stage."""
from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from bench.augment_common import (APERTIUM_BATCHES, APERTIUM_JOBS, APERTIUM_REPEATS, LANGUAGES, PIPELINE_BATCH,
                                  SEED, changed, children_cpu, cpu_timed_runs, first_variants, n_words, set_up,
                                  summarise)
from bench.common import timed_call


def stage_breakdown(mode: str, texts: Sequence[str]) -> tuple[dict[str, Any], bytes]:
    """The mode's stages run one after another on the whole input, CPU seconds each.

    The stages come from Apertium's mode file with -u's options ($1 = -n, $2 = none), behind
    apertium-destxt and before apertium-retxt, as the `apertium` script runs them for txt.
    """
    mode_file = Path("/usr/share/apertium/modes") / f"{mode}.mode"
    line = " ".join(mode_file.read_text().split())
    stages = [["apertium-destxt"]]
    for part in line.split(" | "):
        argv = [a for a in (x.replace("$1", "-n").replace("$2", "") for x in shlex.split(part)) if a]
        stages.append(argv)
    stages.append(["apertium-retxt"])
    data = "".join(" ".join(line.split()) + "\n" for t in texts for line in t.split("\n")).encode()
    out = []
    for argv in stages:
        k0, w0 = children_cpu(), time.perf_counter()
        data = subprocess.run(argv, input=data, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True).stdout
        out.append({"stage": " ".join(Path(a).name if a.startswith("/") else a for a in argv),
                    "cpu_s": round(children_cpu() - k0, 3), "wall_s": round(time.perf_counter() - w0, 3)})
    total = sum(s["cpu_s"] for s in out)
    for s in out:
        s["share"] = round(s["cpu_s"] / total, 3) if total else None
    return {"mode": mode, "cpu_s": round(total, 3), "stages": out}, data


def bench_apertium(lang: str, texts: list[str]) -> dict[str, Any]:
    from augment.backtranslate import ApertiumRoundTrip, BackTranslateAugmenter
    from augment.base import record_seed

    pivot, words = LANGUAGES[lang]["pivot"], n_words(texts)
    grid = []
    for jobs in APERTIUM_JOBS:
        setup_s, rt = timed_call(ApertiumRoundTrip, lang, pivot, jobs=jobs)
        for batch in APERTIUM_BATCHES:
            size = batch or len(texts)
            print(f"{lang}: ours ApertiumRoundTrip jobs={jobs} batch={batch or 'all'} ...", flush=True)

            def run(rt: ApertiumRoundTrip = rt, size: int = size) -> list[str]:
                out: list[str] = []
                for i in range(0, len(texts), size):
                    out += rt.translate(texts[i:i + size])
                return out

            runs, out = cpu_timed_runs(run, APERTIUM_REPEATS)
            grid.append({"jobs": jobs, "batch": batch or len(texts), "calls": -(-len(texts) // size),
                         "setup_s": round(setup_s, 3), "changed": changed([" ".join(t.split()) for t in texts],
                                                                           [" ".join(t.split()) for t in out]),
                         **summarise(runs, len(texts), words)})
    best = min(grid, key=lambda r: r["best_s"])
    # One Apertium call on one record: the fixed cost of starting both pipelines.
    rt = ApertiumRoundTrip(lang, pivot, jobs=1)
    start_runs, _ = cpu_timed_runs(lambda: rt.translate(texts[:1]), APERTIUM_REPEATS)
    print(f"{lang}: ours BackTranslateAugmenter (batches of {PIPELINE_BATCH}) ...", flush=True)
    setup_s, aug = timed_call(set_up, lambda: BackTranslateAugmenter(language=lang, pivot=pivot))
    seeds = [record_seed(str(i), "backtranslate", 0, SEED) for i in range(len(texts))]

    def run_aug() -> list[list[str]]:
        out: list[list[str]] = []
        for i in range(0, len(texts), PIPELINE_BATCH):
            out += aug.augment_batch(texts[i:i + PIPELINE_BATCH], seeds[i:i + PIPELINE_BATCH])
        return out

    runs, out = cpu_timed_runs(run_aug, APERTIUM_REPEATS)
    augmenter = {"op": "backtranslate", "tool": "ours",
                 "settings": f"BackTranslateAugmenter(pivot={pivot!r}, backend='apertium'), jobs={aug.engines[0].jobs}",
                 "api": f"augment_batch in batches of {PIPELINE_BATCH} (as the pipeline)", "records": len(texts),
                 "words": words, "setup_s": round(setup_s, 3),
                 "changed": changed(["\n".join(" ".join(x.split()) for x in t.split("\n")) for t in texts],
                                    first_variants(out, texts)),
                 **summarise(runs, len(texts), words)}
    print(f"{lang}: Apertium stage breakdown ...", flush=True)
    fwd_mode, bwd_mode = rt.forward, rt.backward
    forward, pivot_text = stage_breakdown(fwd_mode, texts)
    backward, _ = stage_breakdown(bwd_mode, pivot_text.decode("utf-8", errors="replace").split("\n")[:-1])
    return {"pivot": pivot, "modes": [fwd_mode, bwd_mode], "grid": grid,
            "best": {k: best[k] for k in ("jobs", "batch", "best_s", "words_per_s", "sentences_per_s")},
            "one_record_call_s": round(min(r["wall_s"] for r in start_runs), 3),
            "augmenter": augmenter, "stages": [forward, backward],
            "words_per_cpu_s_all_stages": round(words / (forward["cpu_s"] + backward["cpu_s"]), 1)}
