"""Benchmark: our Beam corpus build against datatrove, same records, same stages, on each runner.

`.venv/bin/python bench/build.py` (from the project root; needs `datatrove`, the `bench` extra).

Corpora: gl-ctg (its three files, one record a line), tinyshakespeare (paragraphs, as its spec
reads them) and `scale`: 1,000,000 lines made offline by bench/scale_corpus.py (gl-ctg and Tiny
Shakespeare sentences plus noised near-copies of them, so near dedup meets large clusters).

For each corpus it times, one fresh process per run:

* ours: `pipelines.build.build()` on a copy of the spec with the quality filters on, exact and
  near dedup on (word 5-gram shingles, as datatrove's) and langid off (datatrove gets no langid
  stage): on the DirectRunner (one process), and on our DaskRunner with a local dask.distributed
  cluster of 1 and of 2 single-threaded worker processes. The cluster is started before the
  clock starts, as a Dask deployment keeps one running (`--dask_client_address`); the time is
  the whole `build()` call: source resolution and staging, both pipelines, writing the snapshot.
* datatrove: JsonlReader -> GopherRepetitionFilter -> the four MinHash stages with
  LocalPipelineExecutor, 1 and 2 tasks/workers, in bench/datatrove_build.py. The records are the
  units our reader yields, written to JSONL first (not timed); its time covers every executor's
  run, worker start-up included, not its process's start and imports.

records/s = input records / wall seconds, best of the runs. peak_mb: the largest resident set
of any one process of the run (ours: the build process or a Dask worker; datatrove: its main
process or a pool worker). dedup_shuffle_mb: what near dedup moves between stages (ours: band
entries, signatures and bucket members as counted in stats.json's `near_dedup_shuffle`, see
`shuffle_mb`; datatrove: the size of its signature files). Writes bench/results/build.json and the "Corpus build" section of
bench/README.md (template: bench/templates/build.md); `--readme` rewrites that section from the
results JSON without running anything.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (fmt, fresh_log, load_1m, machine, md_row, parser, quiet_note, readme_only,  # noqa: E402
                          render, stderr_to, timed_call, update_readme, wait_for_quiet, write_results)

if TYPE_CHECKING:
    from pipelines.spec import CorpusSpec

MIRROR = ROOT.parent / "shared" / "data"
WORK = ROOT / "bench" / "work"
RESULTS = ROOT / "bench" / "results" / "build.json"
SECTION = "## Corpus build (bench/build.py)"
DATATROVE_SCRIPT = ROOT / "bench" / "datatrove_build.py"
DATATROVE_PYTHON = sys.executable  # datatrove is installed in the project's .venv (the bench extra)
SCALE_LINES = 1_000_000
CORPORA = {"gl-ctg": ROOT / "corpora" / "gl-ctg.toml",
           "tinyshakespeare": ROOT / "corpora" / "tinyshakespeare.toml",
           "scale": None}  # made by bench/scale_corpus.py
# Small corpora take a few seconds and this machine's speed varies by a third from one second to
# the next (bench/README.md): best of 5 for both tools.
REPEATS = {"gl-ctg": 5, "tinyshakespeare": 5, "scale": 1}
RUN_TIMEOUT_S = 1800
OURS = (("DaskRunner", 1), ("DaskRunner", 2), ("DirectRunner", 1))  # DirectRunner last: it may run out of memory
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
    copy = folder / f"bench-{path.name}"
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


def peak_mb(*usages: int) -> float:
    """ru_maxrss values (KiB on Linux) as MB."""
    return round(max(usages) / 1024, 1)


def one_run(spec_path: str, runner: str, workers: int) -> dict[str, Any]:
    """One timed build in this process (`--one`): seconds, stats, peak memory, dedup shuffle."""
    import resource

    from pipelines.build import build
    from pipelines.spec import load_spec

    spec = load_spec(spec_path)
    out = Path(tempfile.mkdtemp(dir=WORK, prefix="ours-"))
    args, cluster = [], None
    if runner == "DaskRunner":
        from pipelines.dask_runner import local_cluster

        cluster = local_cluster(workers)  # started before the clock, as a deployment keeps one running
        args = ["--runner", "DaskRunner", "--dask_client_address", cluster.scheduler_address]
    try:
        seconds, built = timed_call(build, spec, str(out), mirror=str(MIRROR), beam_args=args)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    usages = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]
    if cluster is not None:
        from distributed import Client

        with Client(cluster, set_as_default=False) as client:
            usages += client.run(lambda: __import__("resource").getrusage(0).ru_maxrss).values()
    stats = built["stats"]
    return {"seconds": seconds, "input": stats["input"], "kept": stats["kept"],
            "filtered": sum(stats["stages"].get("quality", {}).values()), "rejected": stats["rejected"],
            "duplicates": stats["duplicates"], "peak_mb": peak_mb(*usages),
            "dedup_shuffle_mb": shuffle_mb(stats.get("near_dedup_shuffle", {}), spec.dedup.num_perm)}


def shuffle_mb(moved: dict[str, int], num_perm: int) -> float:
    """The payload near dedup moves (stats.json's counts): a band entry is a band hash and an id
    (8 + 8 bytes); a signature travels with its id (16 characters) to its shard, and again with
    its bucket key (8 bytes) to each multi-member bucket that holds it."""
    sig = 4 * num_perm
    return round((moved.get("band_entries", 0) * 16 + moved.get("signatures", 0) * (sig + 16)
                  + moved.get("bucket_members", 0) * (sig + 16 + 8)) / 1e6, 1)


def run_ours(spec_path: Path, runner: str, workers: int, log: Path) -> dict[str, Any]:
    """One build in a fresh process, so that its peak memory is its own. A run that dies (the
    kernel kills it when memory runs out) is a result too: its row says how it ended."""
    with open(log, "a", encoding="utf-8") as err:
        try:
            done = subprocess.run([sys.executable, __file__, "--one", str(spec_path), runner, str(workers)],
                                  stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT, timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"failed": f"stopped after {RUN_TIMEOUT_S} s"}
    if done.returncode:
        how = "killed (SIGKILL: out of memory)" if done.returncode == -9 else f"exit {done.returncode}"
        return {"failed": how}
    return json.loads(done.stdout.strip().splitlines()[-1])


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
            "filtered": len(texts) - run["filtered_in"], "duplicates": run["filtered_in"] - run["kept"],
            "peak_mb": run["peak_mb"], "dedup_shuffle_mb": run["signature_mb"]}


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    if any("failed" in r for r in runs):
        return {"failed": next(r["failed"] for r in runs if "failed" in r), "seconds": None, "records_per_s": None}
    best = min(runs, key=lambda r: r["seconds"])
    return {**best, "runs_s": [round(r["seconds"], 3) for r in runs],
            "peak_mb": max(r["peak_mb"] for r in runs), "records_per_s": best["input"] / best["seconds"]}


def spec_path_of(name: str, folder: Path) -> Path:
    """The bench copy of a corpus's spec (written beside the original, whose relative paths it keeps)."""
    if CORPORA[name] is None:
        from bench.scale_corpus import make_scale_corpus

        original = make_scale_corpus(WORK / "scale", SCALE_LINES)
        return Path(bench_spec(original, original.parent).path)
    return Path(bench_spec(CORPORA[name], folder).path)


def bench_corpus(name: str, log: Path) -> dict[str, Any]:
    from pipelines.spec import load_spec

    folder = Path(tempfile.mkdtemp(dir=WORK, prefix="spec-"))
    spec_path = spec_path_of(name, folder)
    texts = units(load_spec(spec_path))
    rows: list[dict[str, Any]] = []
    wait_for_quiet(60)
    for tasks in DATATROVE_TASKS:
        print(f"{name}: datatrove, {tasks} worker(s) ...", flush=True)
        with stderr_to(log):
            rows.append({"corpus": name, "tool": "datatrove", "runner": "LocalPipelineExecutor", "workers": tasks,
                         **best_of([run_datatrove(texts, tasks) for _ in range(REPEATS[name])])})
    for runner, workers in OURS:
        print(f"{name}: ours, {runner} x{workers} ...", flush=True)
        rows.append({"corpus": name, "tool": "ours", "runner": runner, "workers": workers,
                     **best_of([run_ours(spec_path, runner, workers, log) for _ in range(REPEATS[name])])})
    shutil.rmtree(folder, ignore_errors=True)
    theirs = {r["workers"]: r["records_per_s"] for r in rows if r["tool"] == "datatrove"}
    for r in rows:
        r["records"] = len(texts)
        r["vs_datatrove"] = (r["records_per_s"] / theirs[r["workers"]]
                             if r["tool"] == "ours" and r["records_per_s"] else None)
    return {"records": len(texts), "rows": rows}


def table(results: dict[str, Any]) -> str:
    lines = ["| corpus | tool | runner | workers | records | kept | filtered | duplicates | best s | records/s "
             "| vs datatrove | peak MB | dedup shuffle MB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, corpus in results["corpora"].items():
        for r in corpus["rows"]:
            if "failed" in r:
                lines.append(md_row(name, r["tool"], r["runner"], r["workers"], fmt(r["records"]),
                                    f"**{r['failed']}**", "", "", "", "", "", "", ""))
                continue
            lines.append(md_row(name, r["tool"], r["runner"], r["workers"], fmt(r["records"]), fmt(r["kept"]),
                                fmt(r["filtered"]), fmt(r["duplicates"]), f"{r['seconds']:.2f}",
                                fmt(r["records_per_s"]), fmt(r["vs_datatrove"], 2), fmt(r["peak_mb"]),
                                fmt(r["dedup_shuffle_mb"])))
    return "\n".join(lines)


def verdicts(results: dict[str, Any]) -> str:
    """Sentences computed from the rows: ours against datatrove, and 2 workers against 1."""
    out = []
    for name, corpus in results["corpora"].items():
        rows = corpus["rows"]
        ours = {(r["runner"], r["workers"]): r for r in rows if r["tool"] == "ours"}
        parts = [f"{runner} x{w}: {r['vs_datatrove']:.2f}x datatrove at {w} worker{'s' * (w > 1)}"
                 if r["records_per_s"] else f"{runner} x{w}: {r['failed']}" for (runner, w), r in ours.items()]
        d1, d2 = ours.get(("DaskRunner", 1)), ours.get(("DaskRunner", 2))
        if d1 and d2 and d1["records_per_s"] and d2["records_per_s"]:
            parts.append(f"Dask with 2 workers is {d2['records_per_s'] / d1['records_per_s']:.2f}x Dask with 1")
        theirs = {r["workers"]: r["records_per_s"] for r in rows if r["tool"] == "datatrove" and r["records_per_s"]}
        if 1 in theirs and 2 in theirs:
            parts.append(f"datatrove with 2 workers is {theirs[2] / theirs[1]:.2f}x datatrove with 1")
        out.append(f"- **{name}** ({fmt(corpus['records'])} records): " + "; ".join(parts) + ".")
    return "\n".join(out)


TARGETS = {"10 GB": 10e9, "1 TB": 1e12}
WORKER_RAM_GB = 32  # a common cloud worker; the in-memory shuffle must fit in the workers' RAM


def scaling(results: dict[str, Any]) -> str:
    """The scaling model: the scale corpus's measured Dask rates and dedup shuffle, extrapolated
    linearly in records to 10 GB and 1 TB of text (sentences the size of the scale corpus's)."""
    scale = results["corpora"].get("scale")
    if not scale:
        return "(no scale run in the results)"
    from bench.scale_corpus import make_scale_corpus

    folder = make_scale_corpus(WORK / "scale", SCALE_LINES).parent
    text_bytes = sum(p.stat().st_size for p in folder.glob("*.txt"))
    rows = {(r["tool"], r["runner"], r["workers"]): r for r in scale["rows"]}
    one, two = rows[("ours", "DaskRunner", 1)], rows[("ours", "DaskRunner", 2)]
    if not (one["records_per_s"] and two["records_per_s"]):
        return "(a Dask run of the scale corpus did not finish: see the table)"
    per_worker = two["records_per_s"] / 2
    efficiency = two["records_per_s"] / (2 * one["records_per_s"])
    shuffle_ratio = two["dedup_shuffle_mb"] * 1e6 / text_bytes
    lines = [f"Measured on the scale corpus ({fmt(text_bytes / 1e6, 0)} MB of text, {fmt(text_bytes / scale['records'], 0)} "
             f"bytes a record): one Dask worker builds {fmt(one['records_per_s'])} records/s, two build "
             f"{fmt(two['records_per_s'])} ({fmt(per_worker)} per worker, {efficiency:.0%} of twice one); near dedup "
             f"shuffles {fmt(two['dedup_shuffle_mb'])} MB, {shuffle_ratio:.0f} times the text. Extrapolated linearly in "
             f"records at {fmt(per_worker)} records/s per worker:", "",
             "| text | records | worker-hours | workers for 4 hours | dedup shuffle | workers whose RAM holds it |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, size in TARGETS.items():
        records = size / (text_bytes / scale["records"])
        hours = records / per_worker / 3600
        shuffle_gb = size * shuffle_ratio / 1e9
        lines.append(md_row(name, fmt(records / 1e6, 0) + " M", fmt(hours, 0), fmt(math.ceil(hours / 4)),
                            f"{fmt(shuffle_gb, 0)} GB", fmt(math.ceil(shuffle_gb / WORKER_RAM_GB))))
    return "\n".join(lines)


def readme_section(results: dict[str, Any]) -> str:
    repeats = " / ".join(f"{max(len(r.get('runs_s') or [1]) for r in corpus['rows'])} ({name})"
                         for name, corpus in results["corpora"].items())
    return render("build", title=SECTION, m=results["machine"], table=table(results), verdicts=verdicts(results),
                  repeats=repeats,
                  quiet=quiet_note(results["machine"]["load_avg_1m"][0]), scale_lines=fmt(SCALE_LINES),
                  scaling=scaling(results))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--one"]:
        print(json.dumps(one_run(argv[1], argv[2], int(argv[3]))))
        return 0
    p = parser("corpus build benchmark: ours against datatrove")
    p.add_argument("--corpus", action="append", choices=sorted(CORPORA), help="only these corpora")
    args = p.parse_args(argv)
    if readme_only(args.readme, SECTION, RESULTS, readme_section):
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    log = fresh_log(WORK / "build-bench.log")
    load_before = wait_for_quiet(600)
    results = {"machine": machine("apache-beam", "datatrove", "dask", "distributed"), "corpora": {}}
    for name in args.corpus or CORPORA:
        results["corpora"][name] = bench_corpus(name, log)
        # Other work on the machine skews wall times; the 1-minute load average tells how much.
        results["machine"]["load_avg_1m"] = [load_before, load_1m()]
        write_results(RESULTS, results)  # after each corpus: a later crash keeps what was measured
    update_readme(SECTION, readme_section(results))
    print(table(results))
    print(verdicts(results))
    print(f"logs: {log}; results: {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
