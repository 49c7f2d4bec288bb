"""Benchmark: our augmenters against nlpaug's, on the same real text, in one run.

`.venv/bin/python bench/augment.py` (from the project root; needs `nlpaug`, the `bench` extra, and
Debian's apertium, apertium-es-gl, apertium-eng-spa, mythes-gl and wordnet-base).

Records: Galician, the first N_RECORDS non-empty lines of gl-ctg's train.txt (one sentence each);
English, the first N_RECORDS paragraphs of Tiny Shakespeare's input.txt (one speech each, line
breaks kept: the unit its spec reads). words = whitespace-separated tokens of the input.

It times, each on the same records:

1. our in-process augmenters, one `augment_batch(texts, seeds)` call over all records with
   per-record seeds (as the pipeline passes them): NoiseAugmenter with one op each (swap, delete,
   typo; rate 0.1, variants 1); SynonymAugmenter (wordnet on English, mythes on Galician; rate
   0.15; stop words = the 100 most frequent words, as the pipeline sets them);
   BackTranslateAugmenter (Apertium, pivot es) in batches of 500 as the pipeline calls it; and a
   grid of ApertiumRoundTrip configs (jobs 1 / 2 x batches of 500 / all records in one call),
   with the Apertium processes' CPU seconds, plus a per-stage CPU breakdown of each direction;
2. nlpaug's equivalents: RandomWordAug(action="swap"/"delete"), KeyboardAug and (English)
   SynonymAug(aug_src="wordnet"), with comparable settings, each both one `augment(text)` call
   per text and one `augment(list)` call; the faster of the two is compared;
3. the Beam pipeline end to end: `augment_snapshot` over a fresh snapshot of corpora/gl-ctg.toml
   (built from the local mirror into a temporary folder): sentences/s per augmenter as its
   stats.json reports them, and the whole call's wall time.

Only augmentation calls are timed; construction and `setup()` (loading dictionaries and
thesauri) are timed separately. Best of REPEATS runs (APERTIUM_REPEATS for the Apertium rows;
the pipeline once). When one of our augmenters is slower than its nlpaug equivalent it is
profiled (cProfile) and the top functions are stored. Writes bench/results/augment.json and the
"Augmentation" section of bench/README.md.
"""
from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import random
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine as common_machine, update_readme  # noqa: E402

from augment.backtranslate import ApertiumRoundTrip, BackTranslateAugmenter  # noqa: E402
from augment.base import record_seed  # noqa: E402
from augment.noise import NoiseAugmenter  # noqa: E402
from augment.synonyms import SynonymAugmenter, frequent_words  # noqa: E402
from augment.thesaurus import debian_wordnet_root  # noqa: E402

MIRROR = ROOT.parent / "shared" / "data"
WORK = ROOT / "bench" / "work"
RESULTS = ROOT / "bench" / "results" / "augment.json"
SECTION = "## Augmentation (bench/augment.py)"
GL_SPEC = ROOT / "corpora" / "gl-ctg.toml"
N_RECORDS = 2000
REPEATS = 3
APERTIUM_REPEATS = 2  # a round trip over 2,000 records takes 10-25 s
SEED = 13
NOISE_RATE = 0.1
SYNONYM_RATE = 0.15
STOPWORDS_TOP = 100  # as pipelines.augment.STOPWORDS_TOP
PIPELINE_BATCH = 500  # [augment] batch_size in both specs
APERTIUM_BATCHES = (500, None)  # None: every record in one call
APERTIUM_JOBS = (1, 2)
LANGUAGES = {
    "gl": {"corpus": "gl-ctg", "unit": "line of train.txt", "thesaurus": "mythes", "pivot": "es",
           "keyboard": "es"},
    "en": {"corpus": "tinyshakespeare", "unit": "paragraph of input.txt", "thesaurus": "wordnet", "pivot": "es",
           "keyboard": "en"},
}


# --------------------------------------------------------------------------------------------
# helpers


@contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Send fd 2 (Beam's logs, child processes included) to a file."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


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


def timed(fn: Callable[[], Any], repeats: int) -> tuple[list[dict[str, float]], Any]:
    """Runs `fn` `repeats` times: wall, this process's CPU and child processes' CPU per run."""
    runs, out = [], None
    for _ in range(repeats):
        c0, k0, w0 = time.process_time(), children_cpu(), time.perf_counter()
        out = fn()
        wall = time.perf_counter() - w0
        runs.append({"wall_s": wall, "cpu_s": time.process_time() - c0, "child_cpu_s": children_cpu() - k0})
    return runs, out


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


# --------------------------------------------------------------------------------------------
# ours


def bench_ours_inprocess(lang: str, texts: list[str], stopwords: list[str]) -> list[dict[str, Any]]:
    cfg, words = LANGUAGES[lang], n_words(texts)
    rows = []
    seeds_for = {name: [record_seed(str(i), name, 0, SEED) for i in range(len(texts))]
                 for name in ("swap", "delete", "typo", "synonyms")}
    makers: dict[str, Callable[[], Any]] = {
        op: (lambda op=op: NoiseAugmenter(language=lang, ops=[op], rate=NOISE_RATE, variants=1))
        for op in ("swap", "delete", "typo")
    }
    makers["synonyms"] = lambda: SynonymAugmenter(language=lang, backend=cfg["thesaurus"], rate=SYNONYM_RATE)
    def ready(make: Callable[[], Any], op: str) -> Any:
        aug = make()
        aug.setup()
        if op == "synonyms":
            aug.set_stopwords(stopwords)
        return aug

    for op, make in makers.items():
        print(f"{lang}: ours {op} ...", flush=True)
        t0 = time.perf_counter()
        aug = ready(make, op)
        setup_s = time.perf_counter() - t0
        seeds = seeds_for[op]
        runs, out = timed(lambda: aug.augment_batch(texts, seeds), REPEATS)
        settings = (f"NoiseAugmenter(ops=[{op!r}], rate={NOISE_RATE}, variants=1)" if op != "synonyms" else
                    f"SynonymAugmenter(backend={cfg['thesaurus']!r}, rate={SYNONYM_RATE}, "
                    f"stopwords=top {STOPWORDS_TOP} words)")
        rows.append({"op": op, "tool": "ours", "settings": settings, "api": "augment_batch(all records, per-record seeds)",
                     "records": len(texts), "words": words, "setup_s": round(setup_s, 3),
                     "changed": changed(texts, first_variants(out, texts)), **summarise(runs, len(texts), words),
                     "_warm": (lambda aug=aug, seeds=seeds: aug.augment_batch(texts, seeds)),
                     "_fresh": (lambda make=make, op=op: ready(make, op)), "_seeds": seeds})
    return rows


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
    pivot, words = LANGUAGES[lang]["pivot"], n_words(texts)
    grid = []
    for jobs in APERTIUM_JOBS:
        t0 = time.perf_counter()
        rt = ApertiumRoundTrip(lang, pivot, jobs=jobs)
        setup_s = time.perf_counter() - t0
        for batch in APERTIUM_BATCHES:
            size = batch or len(texts)
            print(f"{lang}: ours ApertiumRoundTrip jobs={jobs} batch={batch or 'all'} ...", flush=True)

            def run(rt: ApertiumRoundTrip = rt, size: int = size) -> list[str]:
                out: list[str] = []
                for i in range(0, len(texts), size):
                    out += rt.translate(texts[i:i + size])
                return out

            runs, out = timed(run, APERTIUM_REPEATS)
            grid.append({"jobs": jobs, "batch": batch or len(texts), "calls": -(-len(texts) // size),
                         "setup_s": round(setup_s, 3), "changed": changed([" ".join(t.split()) for t in texts],
                                                                           [" ".join(t.split()) for t in out]),
                         **summarise(runs, len(texts), words)})
    best = min(grid, key=lambda r: r["best_s"])
    # One Apertium call on one record: the fixed cost of starting both pipelines.
    rt = ApertiumRoundTrip(lang, pivot, jobs=1)
    start_runs, _ = timed(lambda: rt.translate(texts[:1]), APERTIUM_REPEATS)
    print(f"{lang}: ours BackTranslateAugmenter (batches of {PIPELINE_BATCH}) ...", flush=True)
    t0 = time.perf_counter()
    aug = BackTranslateAugmenter(language=lang, pivot=pivot)
    aug.setup()
    setup_s = time.perf_counter() - t0
    seeds = [record_seed(str(i), "backtranslate", 0, SEED) for i in range(len(texts))]

    def run_aug() -> list[list[str]]:
        out: list[list[str]] = []
        for i in range(0, len(texts), PIPELINE_BATCH):
            out += aug.augment_batch(texts[i:i + PIPELINE_BATCH], seeds[i:i + PIPELINE_BATCH])
        return out

    runs, out = timed(run_aug, APERTIUM_REPEATS)
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


# --------------------------------------------------------------------------------------------
# nlpaug


def nlpaug_synonym_probe(texts: list[str], stopwords: list[str]) -> tuple[dict[str, Any], Any]:
    """Can nlpaug's SynonymAug(wordnet) run offline with our private WordNet data root?

    NLTK's downloader is replaced by a stub that refuses (no network use); whatever resource
    nlpaug then asks for is recorded. Returns (status, augmenter or None).
    """
    import nltk

    root = debian_wordnet_root()
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))
    wanted: list[str] = []
    real_download = nltk.download

    def refuse(resource_name: str = "", *args: Any, **kwargs: Any) -> bool:
        wanted.append(str(resource_name))
        return False

    found = {}
    for res in ("corpora/wordnet", "corpora/omw-1.4", "taggers/averaged_perceptron_tagger_eng",
                "taggers/averaged_perceptron_tagger"):
        try:
            nltk.data.find(res)
            found[res] = True
        except LookupError:
            found[res] = False
    status: dict[str, Any] = {"nltk_data_root": str(root), "resources_found": found}
    nltk.download = refuse
    try:
        import nlpaug.augmenter.word as naw

        t0 = time.perf_counter()
        aug = naw.SynonymAug(aug_src="wordnet", aug_p=SYNONYM_RATE, aug_min=1, aug_max=None, stopwords=stopwords)
        status["setup_s"] = round(time.perf_counter() - t0, 3)
        try:
            aug.augment(texts[0])
            status["runs_offline"] = True
        except LookupError as exc:
            status["runs_offline"] = False
            status["error"] = f"LookupError: {' '.join(str(exc).split())[:300]}"
    except Exception as exc:  # construction itself failed
        status["runs_offline"] = False
        status["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        aug = None
    finally:
        nltk.download = real_download
    status["downloads_requested"] = wanted
    return status, aug


def bench_nlpaug(lang: str, texts: list[str], stopwords: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    import nlpaug.augmenter.char as nac
    import nlpaug.augmenter.word as naw

    cfg, words = LANGUAGES[lang], n_words(texts)
    makers: dict[str, tuple[str, Callable[[], Any]]] = {
        "swap": (f"RandomWordAug(action='swap', aug_p={NOISE_RATE}, aug_min=1, aug_max=None)",
                 lambda: naw.RandomWordAug(action="swap", aug_p=NOISE_RATE, aug_min=1, aug_max=None)),
        "delete": (f"RandomWordAug(action='delete', aug_p={NOISE_RATE}, aug_min=1, aug_max=None)",
                   lambda: naw.RandomWordAug(action="delete", aug_p=NOISE_RATE, aug_min=1, aug_max=None)),
        "typo": (f"KeyboardAug(lang={cfg['keyboard']!r}, aug_word_p={NOISE_RATE}, aug_word_min=1, aug_word_max=None, "
                 "aug_char_min=1, aug_char_max=1, min_char=1, include_special_char=False, include_numeric=False)",
                 lambda: nac.KeyboardAug(lang=cfg["keyboard"], aug_word_p=NOISE_RATE, aug_word_min=1, aug_word_max=None,
                                         aug_char_min=1, aug_char_max=1, min_char=1, include_special_char=False,
                                         include_numeric=False)),
    }
    synonym_status = None
    if lang == "en":
        synonym_status, syn = nlpaug_synonym_probe(texts, stopwords)
        if syn is not None and synonym_status["runs_offline"]:
            makers["synonyms"] = (f"SynonymAug(aug_src='wordnet', aug_p={SYNONYM_RATE}, aug_min=1, aug_max=None, "
                                  f"stopwords=top {STOPWORDS_TOP} words)", lambda syn=syn: syn)
        elif syn is not None:
            # Stock SynonymAug cannot run here (no POS tagger data). A clearly labelled variant with
            # nlpaug's POS tagging replaced by "no tag" (so it looks words up in every part of
            # speech, as ours does) measures the rest of its synonym path; it is not stock nlpaug.
            syn.model.pos_tag = lambda tokens: [(t, "") for t in tokens]
            makers["synonyms"] = (f"SynonymAug(aug_src='wordnet', aug_p={SYNONYM_RATE}, aug_min=1, aug_max=None, "
                                  f"stopwords=top {STOPWORDS_TOP} words) with pos_tag STUBBED to no tags "
                                  "(not stock nlpaug)", lambda syn=syn: syn)
    rows = []
    for op, (settings, make) in makers.items():
        print(f"{lang}: nlpaug {op} ...", flush=True)
        t0 = time.perf_counter()
        aug = make()
        setup_s = time.perf_counter() - t0
        if op == "synonyms":  # built (and WordNet loaded) by the probe
            setup_s = synonym_status["setup_s"]
        apis, cold_s = {}, None
        for api, fn in (("augment(text) per text", lambda aug=aug: [(aug.augment(t) or [t])[0] for t in texts]),
                        ("augment(list of texts)", lambda aug=aug: aug.augment(texts))):
            random.seed(SEED)
            runs, out = timed(fn, REPEATS)
            cold_s = runs[0]["wall_s"] if cold_s is None else cold_s
            apis[api] = {**summarise(runs, len(texts), words), "changed": changed(texts, out)}
        api = min(apis, key=lambda a: apis[a]["best_s"])
        rows.append({"op": op, "tool": "nlpaug", "settings": settings, "api": api, "records": len(texts),
                     "words": words, "setup_s": round(setup_s, 3), **apis[api], "cold_s": round(cold_s, 4),
                     "apis": {a: {k: v[k] for k in ("best_s", "runs_s", "words_per_s")} for a, v in apis.items()},
                     "stub": "STUBBED" in settings})
    return rows, synonym_status


# --------------------------------------------------------------------------------------------
# the Beam pipeline


def bench_pipeline(log: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from pipelines.augment import augment_snapshot
    from pipelines.build import build
    from pipelines.spec import load_spec

    out = Path(tempfile.mkdtemp(dir=WORK, prefix="augment-"))
    try:
        spec = load_spec(GL_SPEC)
        print("gl-ctg: building a snapshot for the pipeline ...", flush=True)
        with stderr_to(log):
            t0 = time.perf_counter()
            built = build(spec, str(out), mirror=str(MIRROR))
            build_s = time.perf_counter() - t0
        train = pq.read_table(Path(built["path"]) / "train", columns=["text"]).column("text").to_pylist()
        train_words = n_words(train)
        print("gl-ctg: augment_snapshot (DirectRunner) ...", flush=True)
        with stderr_to(log):
            t0, k0, c0 = time.perf_counter(), children_cpu(), time.process_time()
            stats = augment_snapshot(str(out / spec.name), spec)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - c0 + children_cpu() - k0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    steps = {}
    for name, s in stats["augmenters"].items():
        steps[name] = {"augmenter": s["augmenter"], "params": s["params"], "inputs": s["inputs"],
                       "produced": s["produced"], "kept": s["kept"], "rejected": s["rejected"], "failed": s["failed"],
                       "seconds": s["seconds"], "sentences_per_second": s["sentences_per_second"],
                       "words_per_second": round(train_words / s["seconds"], 1) if s["seconds"] else None}
        if s["augmenter"] == "backtranslate" and s["seconds"]:  # one round trip per pivot and record
            pivot = s["params"].get("pivot", "es")
            trips = 1 if isinstance(pivot, str) else len(pivot)
            steps[name]["round_trips_per_record"] = trips
            steps[name]["round_trip_words_per_second"] = round(trips * train_words / s["seconds"], 1)
    return {"corpus": "gl-ctg", "spec": "corpora/gl-ctg.toml", "runner": "DirectRunner (default options)",
            "build_s": round(build_s, 2), "train_records": len(train), "train_words": train_words,
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "records_per_s_wall": round(len(train) / wall, 1), "words_per_s_wall": round(train_words / wall, 1),
            "total": stats["total"], "augmenters": steps}


# --------------------------------------------------------------------------------------------
# report


def machine() -> dict[str, Any]:
    debs = {}
    for pkg in ("apertium", "apertium-es-gl", "apertium-eng-spa", "mythes-gl", "wordnet-base"):
        done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True)
        debs[pkg] = done.stdout.strip() or None
    return {**common_machine("apache-beam", "nlpaug", "nltk"), "debian": debs}


def ratio_rows(lang_results: dict[str, Any]) -> None:
    """ours/nlpaug (words/s) on every op both ran; >1 = ours faster."""
    by_op = {r["op"]: r for r in lang_results["nlpaug"]}
    for r in lang_results["ours"]:
        peer = by_op.get(r["op"])
        if peer:
            r["ratio_vs_nlpaug"] = round(r["words_per_s"] / peer["words_per_s"], 2)
            # First runs: both cold (ours: fresh caches; nlpaug: its very first timed run, per text).
            r["ratio_first_run_vs_nlpaug"] = round(peer["cold_s"] / r["first_s"], 2)
            r["ratio_is_vs_stub"] = peer.get("stub", False)


def fmt(x: float | None, digits: int = 0) -> str:
    return "" if x is None else f"{x:,.{digits}f}"


def table(results: dict[str, Any]) -> str:
    lines = ["| language | operation | tool | api | setup s | best s | sentences/s | words/s | changed | ours/nlpaug "
             "| ours/nlpaug, first runs |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for lang, res in results["languages"].items():
        rows = res["ours"] + [res["apertium"]["augmenter"]] + res["nlpaug"]
        order = ["swap", "delete", "typo", "synonyms", "backtranslate"]
        for r in sorted(rows, key=lambda r: (order.index(r["op"]), r["tool"] != "ours")):
            tool = r["tool"] + (" (pos_tag stubbed)" if r.get("stub") else "")
            ratio = first = ""
            if "ratio_vs_nlpaug" in r:
                dagger = "†" if r["ratio_is_vs_stub"] else ""
                ratio = f"{r['ratio_vs_nlpaug']:.2f}{dagger}"
                first = f"{r['ratio_first_run_vs_nlpaug']:.2f}{dagger}"
            lines.append(f"| {lang} | {r['op']} | {tool} | {r['api']} | {r['setup_s']:.2f} | {r['best_s']:.3f} "
                         f"| {fmt(r['sentences_per_s'])} | {fmt(r['words_per_s'])} | {r['changed']:.0%} | {ratio} | {first} |")
        if res.get("nlpaug_synonyms") and not res["nlpaug_synonyms"]["runs_offline"]:
            lines.append(f"| {lang} | synonyms | nlpaug (stock) | cannot run offline | | | | | | | |")
    return "\n".join(lines)


def apertium_table(results: dict[str, Any]) -> str:
    lines = ["| language | modes | jobs | batch | calls | best s | sentences/s | words/s | CPU s | words/CPU-s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for lang, res in results["languages"].items():
        ap = res["apertium"]
        for g in ap["grid"]:
            mark = " **best**" if (g["jobs"], g["batch"]) == (ap["best"]["jobs"], ap["best"]["batch"]) else ""
            lines.append(f"| {lang} | {' + '.join(ap['modes'])} | {g['jobs']} | {g['batch']}{mark} | {g['calls']} "
                         f"| {g['best_s']:.2f} | {fmt(g['sentences_per_s'])} | {fmt(g['words_per_s'])} "
                         f"| {g['cpu_s']:.1f} | {fmt(g['words_per_cpu_s'])} |")
    return "\n".join(lines)


def stages_table(results: dict[str, Any]) -> str:
    lines = ["| language | mode | stage | CPU s | share |", "|---|---|---|---:|---:|"]
    for lang, res in results["languages"].items():
        for direction in res["apertium"]["stages"]:
            for s in sorted(direction["stages"], key=lambda s: -s["cpu_s"])[:3]:
                lines.append(f"| {lang} | {direction['mode']} | `{s['stage'][:70]}` | {s['cpu_s']:.2f} "
                             f"| {s['share']:.0%} |")
    return "\n".join(lines)


def pipeline_table(p: dict[str, Any]) -> str:
    lines = ["| step | augmenter | inputs | produced | kept | seconds (DoFn) | sentences/s | words/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in p["augmenters"].items():
        lines.append(f"| {name} | {s['augmenter']} | {s['inputs']} | {s['produced']} | {s['kept']} | {s['seconds']:.2f} "
                     f"| {fmt(s['sentences_per_second'])} | {fmt(s['words_per_second'])} |")
    return "\n".join(lines)


def readme_section(results: dict[str, Any]) -> str:
    m, p = results["machine"], results["pipeline"]
    gl, en = results["languages"]["gl"], results["languages"]["en"]
    syn = en.get("nlpaug_synonyms") or {}
    syn_note = ("runs offline with our private WordNet root" if syn.get("runs_offline") else
                f"cannot run offline: WordNet loads from our private data root ({syn.get('nltk_data_root')}, "
                f"appended to `nltk.data.path`), but `augment()` calls `nltk.pos_tag`, whose tagger data "
                f"(`averaged_perceptron_tagger_eng`) is not installed and is only available by download "
                f"(nlpaug asked for: {', '.join(syn.get('downloads_requested') or []) or 'nothing'}). "
                "The row marked \"pos_tag stubbed\" is nlpaug with `pos_tag` replaced by a function that "
                "tags nothing, so it looks words up in every part of speech as ours does; its ratio (†) "
                "compares with that variant, not with stock nlpaug")
    profiles = results.get("profiles") or {}
    prof_note = ("none of ours was slower than its nlpaug equivalent; nothing profiled" if not profiles else
                 "Where ours was slower than nlpaug it was profiled (cProfile; top functions by own time in "
                 "`results/augment.json`, `profiles`): "
                 + "; ".join(f"{k}: " + ", ".join(f"`{f['function']}` {f['tottime_s']} s own"
                                                  for f in v[:3]) for k, v in profiles.items()))
    load = m["load_avg_1m"]
    ceil = {lang: 2 * max([res["apertium"]["words_per_cpu_s_all_stages"]]
                          + [g["words_per_cpu_s"] or 0 for g in res["apertium"]["grid"]])
            for lang, res in results["languages"].items()}
    cpu_best = "; ".join(
        f"{lang} jobs={g['jobs']}, batch {g['batch']} ({g['words_per_cpu_s']:,.0f} words/CPU-s)"
        for lang, res in results["languages"].items()
        for g in [max(res["apertium"]["grid"], key=lambda g: g["words_per_cpu_s"] or 0)])
    bts = [s for s in p["augmenters"].values() if "round_trip_words_per_second" in s]
    bt_note = ("; ".join(f"{s['round_trips_per_record']} round trips per record, "
                         f"{s['round_trip_words_per_second']:,.0f} round-trip words/s" for s in bts) or "none")
    return f"""{SECTION}

Our augmenters (in-process) against nlpaug {m['nlpaug']} on the same records, in one run, best of
{REPEATS} runs (Apertium rows: best of {APERTIUM_REPEATS}), on {m['cpu_count']} CPUs ({m['cpu']}), Python
{m['python']}, apache-beam {m['apache-beam']}, NLTK {m['nltk']}, Apertium {m['debian'].get('apertium')}.
Run: `.venv/bin/python bench/augment.py`; numbers in `results/augment.json`. The 1-minute load
average was {load[0]} before the run and {load[1]} after it: other work shares the 2 CPUs, so
wall times are noisy (CPU seconds are in the JSON).

Records: Galician, the first {gl['records']} lines of gl-ctg's train.txt ({gl['words']:,} words); English,
the first {en['records']} paragraphs (speeches, line breaks kept) of Tiny Shakespeare ({en['words']:,} words).
words = whitespace-separated tokens of the input; sentences/s = records/s.

{table(results)}

- ours/nlpaug = our words/s over nlpaug's on the same records (above 1: ours faster).
- Settings. Ours: `NoiseAugmenter(ops=[op], rate={NOISE_RATE}, variants=1)` per op;
  `SynonymAugmenter(backend=mythes|wordnet, rate={SYNONYM_RATE})` with the {STOPWORDS_TOP} most frequent words as
  stop words (what the pipeline sets when NLTK has no list); `BackTranslateAugmenter(pivot="es")`
  in batches of {PIPELINE_BATCH}. One `augment_batch` call with per-record seeds, as the pipeline calls them.
  nlpaug: `RandomWordAug(action="swap"|"delete", aug_p={NOISE_RATE}, aug_min=1, aug_max=None)`;
  `KeyboardAug(lang="es"|"en", aug_word_p={NOISE_RATE}, aug_word_max=None, aug_char_min=1, aug_char_max=1,
  min_char=1, include_special_char=False, include_numeric=False)` (one letter in 10% of words, like
  our typo op); `SynonymAug(aug_src="wordnet", aug_p={SYNONYM_RATE}, aug_max=None, stopwords=same list)`.
  Its `aug_max` default (10) is lifted so long speeches get as many edits as ours; nlpaug counts
  punctuation as tokens and rounds up, ours rounds. nlpaug has no Galician thesaurus (its WordNet
  needs OMW data, not installed) and no rule-based MT: those rows have no peer.
- nlpaug is timed both one `augment(text)` call per text and one `augment(list)` call; the faster is
  shown ("api"), both are in the JSON. `augment(list, num_thread=2)` was not tried: nlpaug makes a
  thread pool per pair of texts, and threads share the GIL.
- "first runs" compares cold runs: ours' first run (fresh thesaurus caches) with nlpaug's very
  first timed run (one call per text, before its list API). It matters most for synonyms: ours
  caches each word's synonyms, and it looks up every eligible word of a text before sampling
  which to replace, where nlpaug looks up only the sampled words. Every run is in the JSON (`runs_s`).
- nlpaug `SynonymAug(wordnet)` {syn_note}.
- "changed" = share of outputs that differ from their input.
- {prof_note}.

Apertium round trip (`ApertiumRoundTrip(lang, "es", jobs=...)`, `translate()` over all records in
batches; CPU s = the Apertium processes' user + system seconds; aim: 10,000 words/s on 2 cores):

{apertium_table(results)}

- Best config: gl jobs={gl['apertium']['best']['jobs']}, batch {gl['apertium']['best']['batch']}: {fmt(gl['apertium']['best']['words_per_s'])} words/s;
  en jobs={en['apertium']['best']['jobs']}, batch {en['apertium']['best']['batch']}: {fmt(en['apertium']['best']['words_per_s'])} words/s.
  A call on one record takes {gl['apertium']['one_record_call_s']} s (gl) and {en['apertium']['one_record_call_s']} s (en):
  starting the two pipelines (each loads its transducers and compiles its transfer rules), paid by
  every call and by every job of a call.
- Which config is fastest in wall time flips between runs with the machine's load; the least CPU
  per word is {cpu_best}: one call over all records pays the start-up once.
- Even on 2 idle cores the round trip cannot exceed 2 x words/CPU-s. All stages run one after
  another cost {gl['apertium']['words_per_cpu_s_all_stages']:,.0f} (gl) and {en['apertium']['words_per_cpu_s_all_stages']:,.0f} (en) words per CPU-second; the best figure,
  stages or grid, is {ceil['gl'] / 2:,.0f} (gl) and {ceil['en'] / 2:,.0f} (en), i.e. a ceiling of about {ceil['gl']:,.0f} (gl) and
  {ceil['en']:,.0f} (en) words/s: the 10,000 words/s aim is out of reach with these pairs on 2 cores.
  Where the CPU goes (the three costliest stages of each direction, run one after another on
  the same input):

{stages_table(results)}

Beam pipeline end to end: `augment_snapshot` on a fresh snapshot of corpora/gl-ctg.toml
(build: {p['build_s']} s, not counted), {p['runner']}, {p['train_records']} train records ({p['train_words']:,} words), its
own `[augment]` table (backtranslate via es and pt, synonyms mythes 0.15, noise swap/delete/typo/
strip_diacritics 0.1 x 2 variants), batch_size 500. Whole call: {p['wall_s']} s wall
({p['records_per_s_wall']} train records/s for all three steps), {p['total']['kept']} variants kept of {p['total']['produced']}.
Per step, as stats.json reports it (seconds = time inside the step's DoFn, filters included;
words/s = train words / those seconds):

{pipeline_table(p)}

- backtranslate makes one round trip per pivot and record: {bt_note}.
- The whole call also reads the snapshot, counts the stop words, batches by id hash for Apertium,
  joins the variants against every corpus id and writes the shards; it took {p['cpu_s']} CPU seconds
  (this process and Apertium's).
"""


def main() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "augment-bench.log"
    log.write_text("")
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(), "repeats": REPEATS, "apertium_repeats": APERTIUM_REPEATS,
                               "seed": SEED, "languages": {}}
    profiles: dict[str, Any] = {}
    for lang, cfg in LANGUAGES.items():
        texts = load_records(lang)
        stopwords = frequent_words(texts, STOPWORDS_TOP)
        res: dict[str, Any] = {"corpus": cfg["corpus"], "unit": cfg["unit"], "records": len(texts),
                               "words": n_words(texts), "load_avg_1m_start": round(os.getloadavg()[0], 2)}
        res["ours"] = bench_ours_inprocess(lang, texts, stopwords)
        res["nlpaug"], res["nlpaug_synonyms"] = bench_nlpaug(lang, texts, stopwords)
        ratio_rows(res)
        for r in res["ours"]:
            warm, fresh, seeds = r.pop("_warm"), r.pop("_fresh"), r.pop("_seeds")
            if r.get("ratio_vs_nlpaug") is not None and r["ratio_vs_nlpaug"] < 1:
                print(f"{lang}: profiling ours {r['op']} (slower than nlpaug, best runs) ...", flush=True)
                profiles[f"{lang}/{r['op']} (warm)"] = profile_top(warm)
            if r.get("ratio_first_run_vs_nlpaug") is not None and r["ratio_first_run_vs_nlpaug"] < 1:
                print(f"{lang}: profiling ours {r['op']} (slower than nlpaug, first run) ...", flush=True)
                aug = fresh()  # new augmenter, cold caches; setup not profiled
                profiles[f"{lang}/{r['op']} (cold)"] = profile_top(lambda aug=aug: aug.augment_batch(texts, seeds))
        res["apertium"] = bench_apertium(lang, texts)
        results["languages"][lang] = res
    results["pipeline"] = bench_pipeline(log)
    results["profiles"] = profiles
    results["total_s"] = round(time.perf_counter() - started, 1)
    # Other work on the machine skews wall times; the 1-minute load average tells how much.
    results["machine"]["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    update_readme(SECTION, readme_section(results))
    print(table(results))
    print()
    print(apertium_table(results))
    print()
    print(stages_table(results))
    print()
    print(pipeline_table(results["pipeline"]))
    print(f"pipeline wall {results['pipeline']['wall_s']} s; load {results['machine']['load_avg_1m']}")
    print(f"logs: {log}; results: {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
