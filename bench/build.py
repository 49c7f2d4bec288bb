"""Benchmark: our Beam corpus build against datatrove, same records, same stages.

`.venv/bin/python bench/build.py` (from the project root; needs `datatrove`, the `bench` extra).

For each corpus (gl-ctg: its three files, one record a line; tinyshakespeare: paragraphs, as its
spec reads them) it times:

* ours: `pipelines.build.build()` in-process on a copy of the spec with the quality filters on,
  exact and near dedup on (word 5-gram shingles, as datatrove's) and langid off (datatrove gets
  no langid stage), once with the default DirectRunner and once with
  `--direct_running_mode=multi_processing --direct_num_workers=2`.
  The time covers the whole call: source resolution, pipeline start-up, the run and writing the
  snapshot, as in a real build.
* datatrove: JsonlReader -> GopherRepetitionFilter -> the four MinHash stages (signature,
  buckets, cluster, filter) with LocalPipelineExecutor, with 1 and with 2 tasks/workers. The
  records are the units our own reader yields, written to JSONL first (not timed). It runs in a
  subprocess, bench/datatrove_build.py; the time covers every executor's run there, worker
  start-up included, not the subprocess's own start and imports.

records/s = input records / wall seconds, best of REPEATS runs. Writes bench/results/build.json
and the "Corpus build" section of bench/README.md.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines import readers  # noqa: E402
from pipelines.build import build  # noqa: E402
from pipelines.fetch import resolve_sources  # noqa: E402
from pipelines.spec import CorpusSpec, load_spec  # noqa: E402
from bench.common import machine, update_readme  # noqa: E402

MIRROR = ROOT.parent / "shared" / "data"
WORK = ROOT / "bench" / "work"
RESULTS = ROOT / "bench" / "results" / "build.json"
SECTION = "## Corpus build (bench/build.py)"
DATATROVE_SCRIPT = ROOT / "bench" / "datatrove_build.py"
DATATROVE_PYTHON = sys.executable  # datatrove is installed in the project's .venv (the bench extra)
CORPORA = {"gl-ctg": ROOT / "corpora" / "gl-ctg.toml",
           "tinyshakespeare": ROOT / "corpora" / "tinyshakespeare.toml"}
REPEATS = 2
BEAM_MODES = {"DirectRunner": [],
              "DirectRunner multi_processing x2": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]}
DATATROVE_TASKS = (1, 2)
# The stages both tools run: quality filters with our defaults, exact + near dedup on word 5-grams
# (datatrove shingles words; our default is character 5-grams), no langid.
BENCH_TABLES = {"langid", "filters", "dedup"}
BENCH_SPEC_TAIL = """
[langid]
action = "off"

[filters]
enabled = true

[dedup]
exact = true
near = "drop"
threshold = 0.7
shingle = "word"
"""


@contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Send fd 2 (Beam's and datatrove's logs, child processes included) to a file."""
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


def bench_spec(path: Path, folder: Path) -> CorpusSpec:
    """A copy of the spec with its [langid], [filters] and [dedup] tables replaced."""
    kept, drop = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        header = re.match(r"^\[([A-Za-z_]+)\]\s*(#.*)?$", line)
        if header or line.startswith("[["):
            drop = bool(header) and header.group(1) in BENCH_TABLES
        if not drop:
            kept.append(line)
    copy = folder / path.name
    copy.write_text("\n".join(kept) + "\n" + BENCH_SPEC_TAIL, encoding="utf-8")
    return load_spec(copy)


def units(spec: CorpusSpec) -> list[str]:
    """The texts of the units our reader yields: the records both tools get."""
    infos = [readers.source_info(r, spec) for r in resolve_sources(spec, str(MIRROR))]
    return [item["text"] for info in infos for kind, item in readers.read_source(info) if kind == "ok"]


def write_jsonl(texts: list[str], folder: Path, shards: int) -> None:
    """`shards` JSONL files of contiguous records (datatrove gives each task whole files)."""
    folder.mkdir(parents=True)
    size = -(-len(texts) // shards)
    for s in range(shards):
        with open(folder / f"{s:05d}.jsonl", "w", encoding="utf-8") as f:
            for i in range(s * size, min(len(texts), (s + 1) * size)):
                f.write(json.dumps({"id": str(i), "text": texts[i]}, ensure_ascii=False) + "\n")


def run_ours(spec: CorpusSpec, beam_args: list[str]) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(dir=WORK, prefix="ours-"))
    try:
        start = time.perf_counter()
        stats = build(spec, str(out), mirror=str(MIRROR), beam_args=beam_args)["stats"]
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)
    quality = sum(stats["stages"].get("quality", {}).values())
    return {"seconds": seconds, "input": stats["input"], "kept": stats["kept"], "filtered": quality,
            "rejected": stats["rejected"], "duplicates": stats["duplicates"]}


def run_datatrove(texts: list[str], tasks: int) -> dict[str, Any]:
    """One datatrove run in its own process (see bench/datatrove_build.py for why)."""
    tmp = Path(tempfile.mkdtemp(dir=WORK, prefix="datatrove-"))
    try:
        write_jsonl(texts, tmp / "input", tasks)
        done = subprocess.run([DATATROVE_PYTHON, str(DATATROVE_SCRIPT), str(tmp / "input"), str(tmp), str(tasks)],
                              check=True, stdout=subprocess.PIPE, text=True)
        run = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"seconds": run["seconds"], "input": len(texts), "kept": run["kept"],
            "filtered": len(texts) - run["filtered_in"], "duplicates": run["filtered_in"] - run["kept"]}


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    best = min(runs, key=lambda r: r["seconds"])
    return {**best, "runs_s": [round(r["seconds"], 3) for r in runs],
            "records_per_s": best["input"] / best["seconds"]}


def bench_corpus(name: str, spec_path: Path, log: Path) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(dir=WORK, prefix="spec-"))
    spec = bench_spec(spec_path, folder)
    texts = units(spec)
    rows: list[dict[str, Any]] = []
    for mode, args in BEAM_MODES.items():
        print(f"{name}: ours, {mode} ...", flush=True)
        with stderr_to(log):
            rows.append({"tool": "ours", "mode": mode,
                         **best_of([run_ours(spec, args) for _ in range(REPEATS)])})
    for tasks in DATATROVE_TASKS:
        mode = f"LocalPipelineExecutor tasks={tasks} workers={tasks}"
        print(f"{name}: datatrove, {mode} ...", flush=True)
        with stderr_to(log):
            rows.append({"tool": "datatrove", "mode": mode,
                         **best_of([run_datatrove(texts, tasks) for _ in range(REPEATS)])})
    shutil.rmtree(folder, ignore_errors=True)
    # Ours with N workers against datatrove with N tasks: DirectRunner ~ 1, multi_processing x2 ~ 2.
    for ours, theirs in zip(rows[:len(BEAM_MODES)], rows[len(BEAM_MODES):]):
        ours["ratio_vs_datatrove"] = ours["records_per_s"] / theirs["records_per_s"]
    return {"records": len(texts), "rows": rows}


def table(results: dict[str, Any]) -> str:
    lines = ["| corpus | tool | mode | input | kept | filtered | duplicates | best s | records/s | ours/datatrove |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, corpus in results["corpora"].items():
        for r in corpus["rows"]:
            ratio = f"{r['ratio_vs_datatrove']:.2f}" if "ratio_vs_datatrove" in r else ""
            lines.append(f"| {name} | {r['tool']} | {r['mode']} | {r['input']} | {r['kept']} | {r['filtered']} "
                         f"| {r['duplicates']} | {r['seconds']:.2f} | {r['records_per_s']:.0f} | {ratio} |")
    return "\n".join(lines)


def readme_section(results: dict[str, Any]) -> str:
    m = results["machine"]
    return f"""{SECTION}

Our Beam build (`pipelines.build.build`, in-process) against datatrove {m['datatrove']} on the same
records and stages, best of {REPEATS} runs, on {m['cpu_count']} CPUs ({m['cpu']}), Python {m['python']},
apache-beam {m['apache-beam']}. Run: `.venv/bin/python bench/build.py`; numbers in
`results/build.json`. The 1-minute load average was {m['load_avg_1m'][0]} before the run and
{m['load_avg_1m'][1]} after it: with other work on the machine, wall times are noisy.

{table(results)}

- Records: gl-ctg is its three files, one record a line; tinyshakespeare is paragraphs (its spec,
  tail split). Both tools get the units our reader yields.
- Ours runs a copy of each spec with the quality filters on (our defaults), exact and near dedup
  on (`near = "drop"`, threshold 0.7, word 5-gram shingles like datatrove's rather than our
  default character 5-grams) and langid off. Its time is the whole `build()` call: source
  resolution, Beam pipeline start-up, the run and writing the Parquet snapshot. "filtered" is
  its quality stage's rejections, "duplicates" its exact and near duplicates.
- datatrove runs JsonlReader, GopherRepetitionFilter (defaults), JsonlWriter and the four MinHash
  stages (word 5-grams, 14 buckets x 8 hashes, 32-bit sha1 shingle hashes, whitespace words)
  with LocalPipelineExecutor (buckets stage: 14 tasks) in its own process
  (`bench/datatrove_build.py`). Its time covers the four executors, worker start-up included,
  but not writing the input JSONL nor that process's start and imports.
- ours/datatrove compares records/s: DirectRunner with datatrove at 1 task, multi_processing x2
  with datatrove at 2 tasks; above 1 means ours is faster.
- The stages are close, not identical. Our quality stage also has length, symbol, digit and
  alpha rules, and applies the Gopher repetition rules only from 50 words and only to n-grams
  that repeat; datatrove's filter applies them to every record and counts the top n-gram even
  when it occurs once, so most short records (a sentence, a short speech) fail its top 2-, 3- or
  4-gram rule: hence its large "filtered" count, and fewer records reach its dedup. Our near
  dedup confirms bucket candidates by estimated Jaccard >= 0.7 and keeps one copy per cluster by
  split; datatrove's drops every bucket match but one.
"""


def main() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "build-bench.log"
    log.write_text("")
    load_before = os.getloadavg()[0]
    results = {"machine": machine("apache-beam", "datatrove"), "repeats": REPEATS,
               "corpora": {name: bench_corpus(name, path, log) for name, path in CORPORA.items()}}
    # Other work on the machine skews wall times; the 1-minute load average tells how much.
    results["machine"]["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    update_readme(SECTION, readme_section(results))
    print(table(results))
    print(f"logs: {log}; results: {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
