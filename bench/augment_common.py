"""Settings and measuring helpers shared by bench/augment.py's jobs (ours in-process, Apertium,
nlpaug, the Beam pipeline): the records, the rates, and how a run is timed and summarised."""
from __future__ import annotations

import cProfile
import io
import pstats
import resource
import time
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
MIRROR = ROOT.parent / "shared" / "data"
WORK = ROOT / "bench" / "work"
N_RECORDS = 2000
REPEATS = 3
APERTIUM_REPEATS = 2  # a round trip over 2,000 records takes 10-25 s
SEED = 13
NOISE_RATE = 0.1
SYNONYM_RATE = 0.15
STOPWORDS_TOP = 100  # as pipelines.augmentation.STOPWORDS_TOP (the nlpaug worker imports no Beam)
PIPELINE_BATCH = 500  # [augment] batch_size in both specs
APERTIUM_BATCHES = (500, None)  # None: every record in one call
APERTIUM_JOBS = (1, 2)
LANGUAGES = {
    "gl": {"corpus": "gl-ctg", "unit": "line of train.txt", "thesaurus": "mythes", "pivot": "es",
           "keyboard": "es"},
    "en": {"corpus": "tinyshakespeare", "unit": "paragraph of input.txt", "thesaurus": "wordnet", "pivot": "es",
           "keyboard": "en"},
}


def load_records(lang: str) -> list[str]:
    if lang == "gl":
        lines = (MIRROR / "gl-ctg" / "train.txt").read_text(encoding="utf-8").splitlines()
        return [t.strip() for t in lines if t.strip()][:N_RECORDS]
    text = (MIRROR / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    return [p.strip() for p in text.split("\n\n") if p.strip()][:N_RECORDS]


def n_words(texts: Sequence[str]) -> int:
    return sum(len(t.split()) for t in texts)


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_timed_runs(fn: Callable[[], Any], repeats: int) -> tuple[list[dict[str, float]], Any]:
    """Runs `fn` `repeats` times: wall, this process's CPU and child processes' CPU per run; and
    the last run's result."""
    runs, out = [], None
    for _ in range(repeats):
        c0, k0, w0 = time.process_time(), children_cpu(), time.perf_counter()
        out = fn()
        wall = time.perf_counter() - w0
        runs.append({"wall_s": wall, "cpu_s": time.process_time() - c0, "child_cpu_s": children_cpu() - k0})
    return runs, out


def set_up(make: Callable[[], Any], stopwords: list[str] | None = None) -> Any:
    """`make()`'s augmenter, set up (dictionaries and thesauri loaded), with `stopwords` set if given."""
    aug = make()
    aug.setup()
    if stopwords is not None:
        aug.set_stopwords(stopwords)
    return aug


def summarise(runs: list[dict[str, float]], records: int, words: int) -> dict[str, Any]:
    best = min(runs, key=lambda r: r["wall_s"])
    cpu = best["cpu_s"] + best["child_cpu_s"]
    return {"best_s": round(best["wall_s"], 4), "runs_s": [round(r["wall_s"], 4) for r in runs],
            "first_s": round(runs[0]["wall_s"], 4), "cpu_s": round(cpu, 3),
            "sentences_per_s": round(records / best["wall_s"], 1), "words_per_s": round(words / best["wall_s"], 1),
            "words_per_cpu_s": round(words / cpu, 1) if cpu > 0 else None}


def changed(inputs: Sequence[str], outputs: Sequence[str]) -> float:
    """Share of outputs that differ from their input (a sanity check that the op did something)."""
    return round(sum(a != b for a, b in zip(inputs, outputs)) / max(1, len(inputs)), 3)


def first_variants(result: list[list[str]], texts: Sequence[str]) -> list[str]:
    return [v[0] if v else t for v, t in zip(result, texts)]


def profile_top(fn: Callable[[], Any], top: int = 10) -> list[dict[str, Any]]:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (path, line, func), (cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(path).name}:{line}({func})", "calls": nc, "tottime_s": round(tt, 4),
                     "cumtime_s": round(ct, 4)})
    return sorted(rows, key=lambda r: -r["tottime_s"])[:top]
