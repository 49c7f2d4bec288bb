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
"Augmentation" section of bench/README.md (template: bench/templates/augment.md); `--readme`
rewrites that section from the results JSON without running anything.

The jobs' code: bench/augment_common.py (settings, timing), augment_apertium.py, augment_nlpaug.py.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.augment_apertium import bench_apertium  # noqa: E402
from bench.augment_common import (LANGUAGES, MIRROR, NOISE_RATE, PIPELINE_BATCH, REPEATS, APERTIUM_REPEATS,  # noqa: E402
                                  SEED, STOPWORDS_TOP, SYNONYM_RATE, WORK, changed, children_cpu, cpu_timed_runs,
                                  first_variants, load_records, n_words, profile_top, set_up, summarise)
from bench.augment_nlpaug import bench_nlpaug  # noqa: E402
from bench.common import (quiet_note, fmt, fresh_log, load_1m, machine as common_machine, md_row, parser,  # noqa: E402
                          readme_only, render, stderr_to, timed_call, update_readme, write_results)

RESULTS = ROOT / "bench" / "results" / "augment.json"
SECTION = "## Augmentation (bench/augment.py)"
GL_SPEC = ROOT / "corpora" / "gl-ctg.toml"


# --------------------------------------------------------------------------------------------
# ours


def bench_ours_inprocess(lang: str, texts: list[str], stopwords: list[str]) -> list[dict[str, Any]]:
    from augment.base import record_seed
    from augment.noise import NoiseAugmenter
    from augment.synonyms import SynonymAugmenter

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
        return set_up(make, stopwords if op == "synonyms" else None)

    for op, make in makers.items():
        print(f"{lang}: ours {op} ...", flush=True)
        setup_s, aug = timed_call(ready, make, op)
        seeds = seeds_for[op]
        runs, out = cpu_timed_runs(lambda: aug.augment_batch(texts, seeds), REPEATS)
        settings = (f"NoiseAugmenter(ops=[{op!r}], rate={NOISE_RATE}, variants=1)" if op != "synonyms" else
                    f"SynonymAugmenter(backend={cfg['thesaurus']!r}, rate={SYNONYM_RATE}, "
                    f"stopwords=top {STOPWORDS_TOP} words)")
        rows.append({"op": op, "tool": "ours", "settings": settings, "api": "augment_batch(all records, per-record seeds)",
                     "records": len(texts), "words": words, "setup_s": round(setup_s, 3),
                     "changed": changed(texts, first_variants(out, texts)), **summarise(runs, len(texts), words),
                     "_warm": (lambda aug=aug, seeds=seeds: aug.augment_batch(texts, seeds)),
                     "_fresh": (lambda make=make, op=op: ready(make, op)), "_seeds": seeds})
    return rows


# --------------------------------------------------------------------------------------------
# the Beam pipeline


def bench_pipeline(log: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from pipelines.augmentation import augment_snapshot
    from pipelines.build import build
    from pipelines.spec import load_spec

    out = Path(tempfile.mkdtemp(dir=WORK, prefix="augment-"))
    try:
        spec = load_spec(GL_SPEC)
        print("gl-ctg: building a snapshot for the pipeline ...", flush=True)
        with stderr_to(log):
            build_s, built = timed_call(build, spec, str(out), mirror=str(MIRROR))
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
            lines.append(md_row(lang, r["op"], tool, r["api"], f"{r['setup_s']:.2f}", f"{r['best_s']:.3f}",
                                fmt(r["sentences_per_s"]), fmt(r["words_per_s"]), f"{r['changed']:.0%}", ratio, first))
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
            lines.append(md_row(lang, " + ".join(ap["modes"]), g["jobs"], f"{g['batch']}{mark}", g["calls"],
                                f"{g['best_s']:.2f}", fmt(g["sentences_per_s"]), fmt(g["words_per_s"]),
                                f"{g['cpu_s']:.1f}", fmt(g["words_per_cpu_s"])))
    return "\n".join(lines)


def stages_table(results: dict[str, Any]) -> str:
    lines = ["| language | mode | stage | CPU s | share |", "|---|---|---|---:|---:|"]
    for lang, res in results["languages"].items():
        for direction in res["apertium"]["stages"]:
            for s in sorted(direction["stages"], key=lambda s: -s["cpu_s"])[:3]:
                lines.append(md_row(lang, direction["mode"], f"`{s['stage'][:70]}`", f"{s['cpu_s']:.2f}",
                                    f"{s['share']:.0%}"))
    return "\n".join(lines)


def pipeline_table(p: dict[str, Any]) -> str:
    lines = ["| step | augmenter | inputs | produced | kept | seconds (DoFn) | sentences/s | words/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in p["augmenters"].items():
        lines.append(md_row(name, s["augmenter"], s["inputs"], s["produced"], s["kept"], f"{s['seconds']:.2f}",
                            fmt(s["sentences_per_second"]), fmt(s["words_per_second"])))
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
    # The best words per CPU-second, stages or grid; 2 cores give at most twice that.
    per_cpu = {lang: max([res["apertium"]["words_per_cpu_s_all_stages"]]
                         + [g["words_per_cpu_s"] or 0 for g in res["apertium"]["grid"]])
               for lang, res in results["languages"].items()}
    cpu_best = "; ".join(
        f"{lang} jobs={g['jobs']}, batch {g['batch']} ({g['words_per_cpu_s']:,.0f} words/CPU-s)"
        for lang, res in results["languages"].items()
        for g in [max(res["apertium"]["grid"], key=lambda g: g["words_per_cpu_s"] or 0)])
    bts = [s for s in p["augmenters"].values() if "round_trip_words_per_second" in s]
    bt_note = ("; ".join(f"{s['round_trips_per_record']} round trips per record, "
                         f"{s['round_trip_words_per_second']:,.0f} round-trip words/s" for s in bts) or "none")
    return render(
        "augment", title=SECTION, m=m, p=p, gl=gl, en=en, repeats=results["repeats"],
        apertium_repeats=results["apertium_repeats"], noise_rate=NOISE_RATE, synonym_rate=SYNONYM_RATE,
        stopwords_top=STOPWORDS_TOP, pipeline_batch=PIPELINE_BATCH, syn_note=syn_note, prof_note=prof_note,
        cpu_best=cpu_best, bt_note=bt_note, gl_per_cpu=per_cpu["gl"], en_per_cpu=per_cpu["en"],
        gl_ceiling=2 * per_cpu["gl"], en_ceiling=2 * per_cpu["en"],
        gl_best_words_per_s=fmt(gl["apertium"]["best"]["words_per_s"]),
        en_best_words_per_s=fmt(en["apertium"]["best"]["words_per_s"]),
        table=table(results), apertium_table=apertium_table(results), stages_table=stages_table(results),
        pipeline_table=pipeline_table(p), quiet=quiet_note(m["load_avg_1m"][0]))


def main(argv: list[str] | None = None) -> int:
    args = parser("augmentation benchmark: our augmenters against nlpaug").parse_args(argv)
    if readme_only(args.readme, SECTION, RESULTS, readme_section):
        return 0
    from augment.synonyms import frequent_words

    log = fresh_log(WORK / "augment-bench.log")
    load_before = load_1m()
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(), "repeats": REPEATS, "apertium_repeats": APERTIUM_REPEATS,
                               "seed": SEED, "languages": {}}
    profiles: dict[str, Any] = {}
    for lang, cfg in LANGUAGES.items():
        texts = load_records(lang)
        stopwords = frequent_words(texts, STOPWORDS_TOP)
        res: dict[str, Any] = {"corpus": cfg["corpus"], "unit": cfg["unit"], "records": len(texts),
                               "words": n_words(texts), "load_avg_1m_start": load_1m()}
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
    results["machine"]["load_avg_1m"] = [load_before, load_1m()]
    write_results(RESULTS, results, ensure_ascii=False)
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
