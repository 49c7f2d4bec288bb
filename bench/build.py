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
and the "Corpus build" section of bench/README.md (template: bench/templates/build.md);
`--readme` rewrites that section from the results JSON without running anything.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (quiet_note, fresh_log, load_1m, machine, md_row, parser, readme_only, render,  # noqa: E402
                          stderr_to, timed_call, update_readme, write_results)

if TYPE_CHECKING:
    from pipelines.spec import CorpusSpec

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


def bench_spec(path: Path, folder: Path) -> CorpusSpec:
    """A copy of the spec with its [langid], [filters] and [dedup] tables replaced."""
    from pipelines.spec import load_spec

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
    from pipelines import readers
    from pipelines.fetch import resolve_sources

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
    from pipelines.build import build

    out = Path(tempfile.mkdtemp(dir=WORK, prefix="ours-"))
    try:
        seconds, built = timed_call(build, spec, str(out), mirror=str(MIRROR), beam_args=beam_args)
        stats = built["stats"]
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
            lines.append(md_row(name, r["tool"], r["mode"], r["input"], r["kept"], r["filtered"], r["duplicates"],
                                f"{r['seconds']:.2f}", f"{r['records_per_s']:.0f}", ratio))
    return "\n".join(lines)


def readme_section(results: dict[str, Any]) -> str:
    return render("build", title=SECTION, m=results["machine"], repeats=results["repeats"], table=table(results),
                  quiet=quiet_note(results["machine"]["load_avg_1m"][0]))


def main(argv: list[str] | None = None) -> int:
    args = parser("corpus build benchmark: ours against datatrove").parse_args(argv)
    if readme_only(args.readme, SECTION, RESULTS, readme_section):
        return 0
    log = fresh_log(WORK / "build-bench.log")
    load_before = load_1m()
    results = {"machine": machine("apache-beam", "datatrove"), "repeats": REPEATS,
               "corpora": {name: bench_corpus(name, path, log) for name, path in CORPORA.items()}}
    # Other work on the machine skews wall times; the 1-minute load average tells how much.
    results["machine"]["load_avg_1m"] = [load_before, load_1m()]
    write_results(RESULTS, results)
    update_readme(SECTION, readme_section(results))
    print(table(results))
    print(f"logs: {log}; results: {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
