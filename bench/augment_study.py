"""Benchmark (untimed): does augmentation pay for a language model where data is the limit?

`.venv/bin/python bench/augment_study.py` (from the project root; about an hour on two cores).
Writes bench/results/augment_study.json, bench/results/augment_study.png and the "Augmentation
where data is the limit" section of bench/README.md; `--readme` rewrites the section from the
results without running anything.

1. Builds gl-ctg and tinyshakespeare from ../shared/data (`pipelines.build`).
2. For each planned (corpus, fraction): a snapshot whose train split keeps the records whose id
   hash falls below the fraction (nested: the 25% set is inside the 50% one; dev and test are the
   corpus's own), augmented by `pipelines.augment` from those sentences only.
3. `python -m lm.distill --preset study --ablations [--study-arms] --seeds 3` on it: every model
   trains until dev stops improving (`best_step` < `steps` says it did); arms share paired seeds.
4. Per arm, the ratio of its dev bits per character to the baseline's, seed pair by seed pair,
   with a 95% t-interval over the pairs (`lm.distill.paired.ratio_interval`): every verdict, aim
   and default the README states reads dev (choose on dev); the same ratio on test is recorded
   and shown beside it for display only (report on test). The verdicts, aims, defaults and the
   README section are read from the rows by bench/augment_study_findings.py.

The students' dropout is chosen on dev per corpus at its smallest fraction (`lm.train` on real
text, the study student's shape and schedule, one seed per value), then used by every arm of
every fraction of that corpus.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.augment_study_findings import (DECIDE, LABELS, PLAN, SECTION, SHOW, figures,  # noqa: E402
                                         findings, readme_section)
from bench.common import (load_1m, machine, parser, preset_only, read_results, readme_only, publish,  # noqa: E402
                          timed_command)
from lm.distill.paired import ratio_interval  # noqa: E402

WORK = ROOT / "bench" / "work" / "augment_study"
RESULTS = ROOT / "bench" / "results" / "augment_study.json"
PLOT = ROOT / "bench" / "results" / "augment_study.png"
MIRROR = ROOT.parent / "shared" / "data"
PY = sys.executable
SEEDS = 3
DROPOUTS = (0.0, 0.1, 0.2)


def in_fraction(record_id: str, fraction: float) -> bool:
    """Whether a record belongs to the `fraction` subset: its id's hash, so subsets are nested."""
    h = int.from_bytes(hashlib.sha256(record_id.encode()).digest()[:8], "big")
    return h < fraction * 2 ** 64


def subset(corpus: Path, fraction: float) -> Path:
    """OUT/NAME-fPCT: the snapshot with train cut to `fraction` (dev and test whole); its manifest
    carries the new train shard's rows and sha256."""
    version = (corpus / "LATEST").read_text(encoding="utf-8").strip()
    src = corpus / version
    pct = round(fraction * 100)
    out = corpus.parent / f"{corpus.name}-f{pct}"
    vdir = out / version
    shutil.rmtree(out, ignore_errors=True)
    vdir.mkdir(parents=True)
    for name in ("dev", "test"):
        shutil.copytree(src / name, vdir / name)
    shutil.copy2(src / "spec.toml", vdir / "spec.toml")
    manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    table = pq.read_table(src / "train")
    keep = [in_fraction(i, fraction) for i in table.column("id").to_pylist()]
    table = table.filter(pa.array(keep))
    (vdir / "train").mkdir()
    shard = vdir / "train" / "train-00000-of-00001.parquet"
    pq.write_table(table, shard)
    shards = [s for s in manifest["shards"] if not s["path"].startswith("train/")]
    shards.append({"path": "train/train-00000-of-00001.parquet", "rows": table.num_rows,
                   "sha256": hashlib.sha256(shard.read_bytes()).hexdigest()})
    manifest["shards"] = shards
    manifest["characters"]["train"] = sum(len(t) for t in table.column("text").to_pylist())
    manifest["subset"] = {"of": f"{corpus.name}/{version}", "fraction": fraction, "rule": "sha256(id) < fraction"}
    (vdir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    (out / "LATEST").write_text(version + "\n", encoding="utf-8")
    return out


def build(name: str) -> Path:
    out = WORK / "corpora"
    if not (out / name / "LATEST").is_file():
        timed_command([PY, "-m", "pipelines.build", f"corpora/{name}.toml", "--out", str(out), "--mirror", str(MIRROR)],
                      WORK / f"build-{name}.log")
    return out / name


def distil(corpus: Path, out: Path, seeds: int, dropout: float, extra: list[str], log: Path) -> dict[str, Any]:
    cmd = [PY, "-m", "lm.distill", "--corpus", str(corpus), "--out", str(out), "--preset", "study", "--quiet",
           "--seeds", str(seeds), "--student-dropout", str(dropout), *extra]
    timed_command(cmd, log)
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def choose_dropout(corpus: Path) -> float:
    """The dropout whose study student has the best dev bits per character (`lm.train`, real
    text, one seed, the study preset's shape and schedule, early stopping; `tuned` reads them)."""
    from lm.distill.config import PRESETS
    pre = PRESETS["study"].defaults()
    shape = PRESETS["study"].student_shape[1]
    dev: dict[float, float] = {}
    for d in DROPOUTS:
        out = WORK / "tune" / f"{corpus.name}-d{d}"
        shutil.rmtree(out, ignore_errors=True)
        timed_command([PY, "-m", "lm.train", "--corpus", str(corpus), "--out", str(out), "--preset", "student",
                       "--dim", str(shape["dim"]), "--layers", str(shape["n_layers"]), "--heads", str(shape["n_heads"]),
                       "--hidden", str(shape["hidden_dim"]), "--context", str(shape["context"]), "--dropout", str(d),
                       "--batch", str(pre.batch), "--lr", str(pre.student_lr), "--steps", str(pre.student_steps),
                       "--warmup", str(pre.student_steps // 10), "--decay-steps", str(pre.student_steps),
                       "--eval-every", str(pre.eval_every), "--patience", str(pre.patience), "--quiet"],
                      WORK / f"tune-{corpus.name}-d{d}.log")
        dev[d] = best_dev(out)
        (out / "tuned.json").write_text(json.dumps({"dropout": d, "dev_bits_per_char": dev[d]}), encoding="utf-8")
    return min(DROPOUTS, key=dev.get)


def best_dev(run: Path) -> float:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return round(min(x["dev_bpc"] for x in lines if "dev_bpc" in x), 4)


def tuned() -> dict[str, Any]:
    """The dropout search's results, read back from its runs under bench/work."""
    out = {}
    for name in dict.fromkeys(c for c, _, _ in PLAN):
        smallest = min(f for c, f, _ in PLAN if c == name)
        dev = {}
        for d in DROPOUTS:
            path = WORK / "tune" / f"{name}-f{round(smallest * 100)}-d{d}" / "tuned.json"
            if path.is_file():
                dev[str(d)] = json.loads(path.read_text(encoding="utf-8"))["dev_bits_per_char"]
        if len(dev) == len(DROPOUTS):
            out[name] = {"fraction": smallest, "dev_bits_per_char": dev, "chosen": float(min(dev, key=dev.get))}
    return out


def rows_of(corpus: str, fraction: float, report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per arm: per split (dev, test), the mean bits/char over seeds, the per-seed figures
    and the paired ratio to the baseline."""
    models = report["models"]
    base = models["baseline"]["per_seed"]
    out = []
    for arm, m in models.items():
        if "per_seed" not in m:
            continue
        n = min(len(m["per_seed"]), len(base))
        row = {"corpus": corpus, "fraction": fraction, "arm": arm, "seeds": n,
               "best_steps": [s["best_step"] for s in m["per_seed"]], "steps": [s["steps"] for s in m["per_seed"]]}
        for split in (DECIDE, SHOW):
            key = f"{split}_bits_per_char"
            vals = [s[key] for s in m["per_seed"][:n]]
            r = ratio_interval(vals, [s[key] for s in base[:n]])
            row[split] = {"mean": round(m[key], 4), "ratio_to_baseline": r["mean"], "ci95": r["ci95"],
                          "per_seed": [round(v, 6) for v in vals]}
        out.append(row)
    return out


def run_one(corpus_name: str, fraction: float, every_arm: bool, dropout: float) -> dict[str, Any]:
    corpus = subset(build(corpus_name), fraction)
    timed_command([PY, "-m", "pipelines.augment", str(corpus)], WORK / f"augment-{corpus.name}.log")
    extra = ["--ablations"] + (["--study-arms"] if every_arm else [])
    distil(corpus, WORK / "runs" / corpus.name, SEEDS, dropout, extra, WORK / f"distill-{corpus.name}.log")
    return collect(corpus_name, fraction)


def collect(corpus_name: str, fraction: float) -> dict[str, Any]:
    """One planned entry's results, read from its run's report.json and its snapshot's manifest."""
    corpus = WORK / "corpora" / f"{corpus_name}-f{round(fraction * 100)}"
    rep = json.loads((WORK / "runs" / corpus.name / "report.json").read_text(encoding="utf-8"))
    stats = json.loads((corpus / (corpus / "LATEST").read_text().strip() / "manifest.json").read_text())
    return {"corpus": corpus_name, "fraction": fraction, "train_chars": stats["characters"]["train"],
            "train_records": next(s["rows"] for s in stats["shards"] if s["path"].startswith("train/")),
            "dropout": rep["settings"]["student_dropout"], "augmenters": rep["augmenters"], "ngram": rep["models"]["ngram"],
            "teacher": rep["models"].get("teacher"), "settings": recorded_settings(rep),
            # lm.distill's own paired differences read test: kept for display, never for a verdict
            "paired_test": {k: {x: v[x] for x in ("seeds", "mean", "ci95")} for k, v in rep["paired"].items()},
            "rows": rows_of(corpus_name, fraction, rep)}


def recorded_settings(rep: dict[str, Any]) -> dict[str, Any]:
    """The run's settings, for the README's prose: the report's options (no machine path), the
    student's shape, and the study preset's preset-only values (the report does not store those:
    read from `lm.distill.config` when the run is collected, just after it ran)."""
    options = {k: v for k, v in rep["settings"].items() if k != "corpus"}
    return {**options, "student_model": rep.get("student_model"),
            "student_params": rep["models"].get("student", {}).get("params"), "preset_only": preset_only("study")}


def plot(res: dict[str, Any]) -> None:
    """Left: gain over the baseline against the train share (gl-ctg's main arms); right: every
    arm at each corpus's smallest share. Gains in % of the baseline's bits/char, 95% intervals, on
    dev (what decides) when every row has it, else on test (older results)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = DECIDE if all(figures(r, DECIDE) for r in res["rows"]) else SHOW

    def gain(row: dict[str, Any]) -> tuple[float, list[float]]:
        r = figures(row, split)
        g = (1 - r["ratio_to_baseline"]) * 100
        lo, hi = r["ci95"] or (r["ratio_to_baseline"],) * 2
        return g, [g - (1 - hi) * 100, (1 - lo) * 100 - g]

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1, 1.3]})
    main = ("student_no_kd", "student_no_aug", "student")
    for k, arm in enumerate(main):
        pts = sorted((r for r in res["rows"] if r["corpus"] == "gl-ctg" and r["arm"] == arm), key=lambda r: r["fraction"])
        if pts:
            g = [gain(r) for r in pts]
            left.errorbar([r["fraction"] * 100 * (1 + 0.03 * (k - 1)) for r in pts], [x for x, _ in g],
                          yerr=list(zip(*[e for _, e in g])), marker="o", capsize=3, label=LABELS[arm])
    left.axhline(0, color="grey", lw=0.8)
    left.set_xticks([25, 50, 100], ["25%", "50%", "100%"])
    left.set_xlim(15, 110)
    left.set_xlabel("share of gl-ctg train (augmentation made from it alone)")
    left.set_ylabel(f"gain over the baseline, % of its {split} bits/char")
    left.set_title("gl-ctg: gain against data size", fontsize=9)
    left.legend(fontsize=7)
    small = [(c, min(r["fraction"] for r in res["rows"] if r["corpus"] == c)) for c in dict.fromkeys(r["corpus"] for r in res["rows"])]
    bars = [r for c, f in small for r in res["rows"] if (r["corpus"], r["fraction"]) == (c, f) and r["arm"] != "baseline"]
    g = [gain(r) for r in bars]
    right.barh(range(len(bars)), [x for x, _ in g], xerr=list(zip(*[e for _, e in g])), capsize=2,
               color=["tab:blue" if r["corpus"] == "gl-ctg" else "tab:orange" for r in bars])
    right.set_yticks(range(len(bars)), [f"{r['corpus']} {r['fraction']:.0%}: {LABELS.get(r['arm'], r['arm'])}" for r in bars],
                     fontsize=6)
    right.invert_yaxis()
    right.axvline(0, color="grey", lw=0.8)
    right.set_xlabel(f"gain over the baseline on {split}, % (95% interval over the paired seeds)")
    right.set_title("every arm at the smallest share", fontsize=9)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = parser("augmentation where data is the limit (untimed study)")
    p.add_argument("--entries", help="comma-separated indices into PLAN to run (default: all); two processes "
                                     "with disjoint entries use both cores better than one")
    p.add_argument("--collect", action="store_true", help="only re-read the finished runs under bench/work")
    args = p.parse_args(argv)
    if readme_only(args.readme, SECTION, RESULTS, lambda r: readme_section(r)):
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    old = read_results(RESULTS) if RESULTS.exists() else {}
    load = load_1m()
    picked = range(len(PLAN)) if not args.entries else [int(x) for x in args.entries.split(",")]
    for i in ([] if args.collect else picked):
        name, fraction, every = PLAN[i]
        dropout = tuned().get(name, {}).get("chosen")
        if dropout is None:  # chosen once per corpus, at its smallest fraction
            smallest = min(f for c, f, _ in PLAN if c == name)
            corpus = subset(build(name), smallest)
            timed_command([PY, "-m", "pipelines.augment", str(corpus)], WORK / f"augment-{corpus.name}.log")
            dropout = choose_dropout(corpus)
            print(f"{name}: dropout {dropout}", flush=True)
        run_one(name, fraction, every, dropout)
        print(f"{name} {fraction:.0%}: done", flush=True)
    runs = [collect(c, f) for c, f, _ in PLAN if (WORK / "runs" / f"{c}-f{round(f * 100)}" / "report.json").is_file()]
    return finish({"machine": machine(), "load_avg_1m": old.get("load_avg_1m") if args.collect else load,
                   "dropout_dev": tuned(), "runs": runs})


def finish(res: dict[str, Any]) -> int:
    """Rows and findings from the runs; the results JSON, the README section and the plot."""
    res["rows"] = [row for r in res["runs"] for row in r["rows"]]
    res["findings"] = findings(res)
    publish(RESULTS, SECTION, res, readme_section)
    plot(res)
    print(json.dumps(res["findings"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
