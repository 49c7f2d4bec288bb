"""Refresh benchmark: an unchanged refresh and a refresh after one source of several changed,
against a full rebuild of the same corpus, all in one run on this machine.

The corpus is gl-ctg cut into six local sources (train in four parts, dev, test). Times are wall
seconds of the whole command as a scheduler would run it (`pipelines.refresh` in-process,
`pipelines.build` into an empty folder for the full rebuild). Writes bench/results/refresh.json
and the "Refresh" section of bench/README.md.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.build import build  # noqa: E402
from pipelines.refresh import refresh  # noqa: E402
from pipelines.spec import load_spec  # noqa: E402
from bench.common import update_readme  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "gl-ctg"
RESULTS = ROOT / "bench" / "results" / "refresh.json"
SECTION = "## Refresh (bench/refresh.py)"


def lines(split: str) -> list[str]:
    return [x for x in (SHARED / f"{split}.txt").read_text(encoding="utf-8").split("\n") if x.strip()]


def make_corpus(folder: Path) -> Path:
    train = lines("train")
    quarter = len(train) // 4
    parts = {f"train{i}": train[i * quarter:(i + 1) * quarter if i < 3 else None] for i in range(4)}
    parts |= {"dev": lines("dev")[:-60], "test": lines("test")}
    body = 'name = "glbench"\nlanguage = "gl"\n'
    for name, rows in parts.items():
        (folder / f"{name}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
        split = "train" if name.startswith("train") else name
        body += f'[[sources]]\npath = "{name}.txt"\nformat = "lines"\nsplit = "{split}"\n'
    spec = folder / "glbench.toml"
    spec.write_text(body + '[split]\nmethod = "source"\n', encoding="utf-8")
    return spec


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def main() -> None:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec_path = make_corpus(tmp)
        out = tmp / "out"
        first, _ = timed(refresh, load_spec(spec_path), str(out))
        unchanged = min(timed(refresh, load_spec(spec_path), str(out))[0] for _ in range(3))
        with open(tmp / "dev.txt", "a", encoding="utf-8") as f:  # the dev source grows by 60 sentences
            f.write("\n".join(lines("dev")[-60:]) + "\n")
        incremental, result = timed(refresh, load_spec(spec_path), str(out))
        full, _ = timed(build, load_spec(spec_path), str(tmp / "fresh"))
    numbers = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2)},
        "corpus": "gl-ctg as 6 local sources (train in 4 parts, dev, test)",
        "first_refresh_s": round(first, 2),
        "unchanged_refresh_s": round(unchanged, 3),
        "one_source_changed_refresh_s": round(incremental, 2),
        "full_rebuild_s": round(full, 2),
        "incremental_over_full": round(incremental / full, 3),
        "unchanged_over_full": round(unchanged / full, 4),
        "changed_sources": result["changed_sources"], "processed_sources": result["processed_sources"],
        "added": result["added"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(numbers, indent=2) + "\n", encoding="utf-8")
    table = "\n".join([
        SECTION, "",
        f"gl-ctg as six local sources; one run on {numbers['machine']['cpus']} CPUs, load average "
        f"{numbers['machine']['load_average_before']} before and {numbers['machine']['load_average_after']} after. "
        "Run: `.venv/bin/python bench/refresh.py`; numbers in `results/refresh.json`.", "",
        "| run | wall s | vs full rebuild |", "|---|---:|---:|",
        f"| full rebuild (empty folder) | {numbers['full_rebuild_s']} | 1.00 |",
        f"| refresh, nothing changed | {numbers['unchanged_refresh_s']} | {numbers['unchanged_over_full']:.3f} |",
        f"| refresh, one source of six grew (+{numbers['added']} records) | {numbers['one_source_changed_refresh_s']} "
        f"| {numbers['incremental_over_full']:.2f} |",
        "",
        f"The incremental refresh reprocessed only {', '.join(numbers['processed_sources'])}; the other sources came from",
        "the per-source cache, and dedup, split and writing ran over the whole corpus.", "",
    ])
    update_readme(SECTION, table)
    print(table)


if __name__ == "__main__":
    main()
