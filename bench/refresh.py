"""Refresh benchmark: an unchanged refresh and a refresh after one source of several changed,
against a full rebuild of the same corpus, all in one run on this machine.

The corpus is gl-ctg cut into six local sources (train in four parts, dev, test). Times are wall
seconds of the whole command as a scheduler would run it (`pipelines.refresh` in-process,
`pipelines.build` into an empty folder for the full rebuild). Writes bench/results/refresh.json
and the "Refresh" section of bench/README.md (template: bench/templates/refresh.md); `--readme`
rewrites that section from the results JSON without running anything.
"""
from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (quiet_note, load_1m, parser, readme_only, render, timed_call, update_readme,  # noqa: E402
                          write_results)

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


def measure() -> dict[str, Any]:
    from pipelines.build import build
    from pipelines.refresh import refresh
    from pipelines.spec import load_spec

    load_before = load_1m()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec_path = make_corpus(tmp)
        out = tmp / "out"
        first, _ = timed_call(refresh, load_spec(spec_path), str(out))
        unchanged = min(timed_call(refresh, load_spec(spec_path), str(out))[0] for _ in range(3))
        with open(tmp / "dev.txt", "a", encoding="utf-8") as f:  # the dev source grows by 60 sentences
            f.write("\n".join(lines("dev")[-60:]) + "\n")
        incremental, result = timed_call(refresh, load_spec(spec_path), str(out))
        full, _ = timed_call(build, load_spec(spec_path), str(tmp / "fresh"))
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_before": load_before, "load_average_after": load_1m()},
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


def readme_section(numbers: dict[str, Any]) -> str:
    return render("refresh", title=SECTION, processed=", ".join(numbers["processed_sources"]),
                  quiet=quiet_note(numbers["machine"]["load_average_before"]), **numbers)


def main(argv: list[str] | None = None) -> None:
    args = parser("refresh benchmark: incremental refresh against a full rebuild").parse_args(argv)
    if readme_only(args.readme, SECTION, RESULTS, readme_section):
        return
    numbers = measure()
    write_results(RESULTS, numbers)
    section = readme_section(numbers)
    update_readme(SECTION, section)
    print(section)


if __name__ == "__main__":
    main()
