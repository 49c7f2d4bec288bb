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
4. Per arm, the ratio of its test bits per character to the baseline's, seed pair by seed pair,
   with a 95% t-interval over the pairs (`lm.distill.paired.ratio_interval`).

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

from bench.common import fmt, load_1m, machine, md_row, parser, read_results, readme_only, render, publish, timed_command  # noqa: E402
from lm.distill.paired import paired_difference, ratio_interval  # noqa: E402

WORK = ROOT / "bench" / "work" / "augment_study"
RESULTS = ROOT / "bench" / "results" / "augment_study.json"
PLOT = ROOT / "bench" / "results" / "augment_study.png"
SECTION = "## Augmentation where data is the limit (bench/augment_study.py)"
MIRROR = ROOT.parent / "shared" / "data"
PY = sys.executable
SEEDS = 3
DROPOUTS = (0.0, 0.1, 0.2)
# (corpus, fraction of train, every arm?): every arm where data is scarcest, the main ones elsewhere
PLAN = (("gl-ctg", 0.25, True), ("gl-ctg", 0.5, False), ("gl-ctg", 1.0, False), ("tinyshakespeare", 0.25, False))
LABELS = {"baseline": "baseline (real text, CE)", "student_no_kd": "+ augmentation, judged (no teacher)",
          "aug_random": "+ augmentation, random filter at the judge's kept fraction",
          "aug_unfiltered": "+ augmentation, unfiltered", "student_no_aug": "KD (real text)",
          "student": "KD + augmentation", "aug-backtranslate": "+ back-translation alone",
          "aug-synonyms": "+ synonyms alone", "aug-noise": "+ noise alone (noised input)",
          "aug-teacher-sample": "+ teacher samples alone"}


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
    """One row per arm: mean test bits/char over seeds and the paired ratio to the baseline."""
    models = report["models"]
    base = [s["test_bits_per_char"] for s in models["baseline"]["per_seed"]]
    out = []
    for arm, m in models.items():
        if "per_seed" not in m:
            continue
        vals = [s["test_bits_per_char"] for s in m["per_seed"]]
        n = min(len(vals), len(base))
        r = ratio_interval(vals[:n], base[:n])
        out.append({"corpus": corpus, "fraction": fraction, "arm": arm, "seeds": n, "mean": round(m["test_bits_per_char"], 4),
                    "ratio_to_baseline": r["mean"], "ci95": r["ci95"], "per_seed": [round(v, 6) for v in vals],
                    "best_steps": [s["best_step"] for s in m["per_seed"]], "steps": [s["steps"] for s in m["per_seed"]]})
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
            "teacher": rep["models"].get("teacher"),
            "paired": {k: {x: v[x] for x in ("seeds", "mean", "ci95")} for k, v in rep["paired"].items()},
            "rows": rows_of(corpus_name, fraction, rep)}


def plot(res: dict[str, Any]) -> None:
    """Left: gain over the baseline against the train share (gl-ctg's main arms); right: every
    arm at each corpus's smallest share. Gains in % of the baseline's bits/char, 95% intervals."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def gain(r: dict[str, Any]) -> tuple[float, list[float]]:
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
    left.set_ylabel("gain over the baseline, % of its test bits/char")
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
    right.set_xlabel("gain over the baseline, % (95% interval over 3 paired seeds)")
    right.set_title("every arm at the smallest share", fontsize=9)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)
    plt.close(fig)


def table(res: dict[str, Any]) -> str:
    lines = []
    for r in res["rows"]:
        ci = f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]" if r["ci95"] else "-"
        steps = ", ".join(f"{b}/{s}" for b, s in zip(r["best_steps"], r["steps"]))
        lines.append(md_row(r["corpus"], f"{r['fraction']:.0%}", LABELS.get(r["arm"], r["arm"]), r["seeds"],
                            f"{r['mean']:.4f}", f"{r['ratio_to_baseline']:.3f}", ci, steps))
    return "\n".join(lines)


def findings(res: dict[str, Any]) -> dict[str, Any]:
    """The verdicts the README states, computed from the rows: per setting, each arm's ratio to
    the baseline and the paired differences that decide the defaults."""
    def row(c: str, f: float, arm: str) -> dict[str, Any] | None:
        return next((r for r in res["rows"] if (r["corpus"], r["fraction"], r["arm"]) == (c, f, arm)), None)

    def pair(c: str, f: float, a: str, b: str) -> dict[str, Any] | None:
        x, y = row(c, f, a), row(c, f, b)
        if not x or not y:
            return None
        n = min(len(x["per_seed"]), len(y["per_seed"]))
        d = paired_difference(x["per_seed"][:n], y["per_seed"][:n])
        return {"seeds": d["seeds"], "mean": d["mean"], "ci95": d["ci95"]}

    out: dict[str, Any] = {"per_setting": []}
    for run in res["runs"]:
        c, f = run["corpus"], run["fraction"]
        arms = {r["arm"]: r for r in res["rows"] if (r["corpus"], r["fraction"]) == (c, f)}
        aug = arms.get("student_no_kd")
        kd_aug = pair(c, f, "student", "student_no_aug")
        out["per_setting"].append({
            "corpus": c, "fraction": f,
            "ratio": {a: {"mean": r["ratio_to_baseline"], "ci95": r["ci95"], "verdict": verdict(r["ci95"])}
                      for a, r in arms.items() if a != "baseline"},
            "aim_aug_at_most_0.97": bool(aug and aug["ratio_to_baseline"] <= 0.97 and verdict(aug["ci95"]) == "helps"),
            "kd_aug_minus_kd": kd_aug,
            "aim_kd_aug_below_kd": bool(kd_aug and kd_aug["ci95"] and kd_aug["ci95"][1] < 0),
            "judged_minus_random": pair(c, f, "student_no_kd", "aug_random"),
            "judged_minus_unfiltered": pair(c, f, "student_no_kd", "aug_unfiltered"),
            "dropped_by_the_loop": sorted(a for a, v in run["augmenters"].items() if v.get("dropped"))})
    return out


def verdict(ci: list[float] | None) -> str:
    """A ratio's 95% interval: below 1 helps, above 1 hurts, else not decided."""
    if not ci:
        return "one seed"
    return "helps" if ci[1] < 1 else "hurts" if ci[0] > 1 else "not decided"


def difference(p: dict[str, Any] | None) -> str:
    if not p:
        return "-"
    ci = f", 95% CI [{p['ci95'][0]:+.4f}, {p['ci95'][1]:+.4f}]" if p["ci95"] else ""
    return f"{p['mean']:+.4f} bits/char{ci}"


def readme_section(res: dict[str, Any]) -> str:
    f = findings(res)
    lines = []
    for s in f["per_setting"]:
        ratios = "; ".join(f"{LABELS.get(a, a)} {v['mean']:.4f} ({v['verdict']})" for a, v in s["ratio"].items())
        lines.append(f"- **{s['corpus']} at {s['fraction']:.0%}**: ratio to the baseline: {ratios}.")
        lines.append(f"  KD + augmentation - KD: {difference(s['kd_aug_minus_kd'])}"
                     + (f"; judged - random filter: {difference(s['judged_minus_random'])}; judged - unfiltered: "
                        f"{difference(s['judged_minus_unfiltered'])}" if s["judged_minus_random"] else "")
                     + (f"; dropped by the loop's dev-gain screen: {', '.join(s['dropped_by_the_loop'])}"
                        if s["dropped_by_the_loop"] else "") + ".")
    gl = next((x for x in f["per_setting"] if (x["corpus"], x["fraction"]) == ("gl-ctg", 0.25)), None)
    if gl:
        best = min(("student_no_kd", "aug_random", "aug_unfiltered"), key=lambda a: gl["ratio"].get(a, {}).get("mean", 9))
        r = gl["ratio"].get(best)
        lines.append(f"- Aim, gl-ctg 25%: real + augmented text without a teacher at most 0.97 x the baseline with "
                     f"the interval below 1: judged {'met' if gl['aim_aug_at_most_0.97'] else 'not met'} "
                     f"({gl['ratio']['student_no_kd']['mean']:.3f}); the best filtering, {LABELS[best]}, "
                     f"{r['mean']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]. KD + augmentation below KD alone: "
                     + ", ".join(f"{x['corpus']} {x['fraction']:.0%} {'yes' if x['aim_kd_aug_below_kd'] else 'no'}"
                                 for x in f["per_setting"]) + ".")
        alone = {a: v for a, v in gl["ratio"].items() if a.startswith("aug-")}
        hurt = [a for a, v in alone.items() if v["verdict"] == "hurts"]
        lines.append(f"- The loop's dev-gain screen (gradient cosine on the teacher) dropped "
                     f"{', '.join(gl['dropped_by_the_loop']) or 'nothing'} at gl-ctg 25%, while alone "
                     f"{', '.join(LABELS[a] for a in hurt) or 'none'} hurt: a positive gain there does not "
                     "predict a positive effect." if hurt and not set(gl["dropped_by_the_loop"]) >= {a[4:] for a in hurt}
                     else f"- The loop's dev-gain screen dropped {', '.join(gl['dropped_by_the_loop']) or 'nothing'} at gl-ctg 25%.")
    runs = [md_row(r["corpus"], f"{r['fraction']:.0%}", f"{r['train_records']:,}", f"{r['train_chars']:,}", r["dropout"],
                   f"{r['ngram']['test_bits_per_char']:.4f}", fmt((r.get('teacher') or {}).get('test_bits_per_char'), 4),
                   "; ".join(f"{a} {v['kept']}/{v['variants']}, {fmt(v.get('dev_gain'), 3, none='-')}"
                             + (" (dropped)" if v.get("dropped") else "") for a, v in sorted(r["augmenters"].items())))
            for r in res["runs"]]
    dropout = "; ".join(f"{c}: {v['chosen']} (dev bits/char " + ", ".join(f"{k}: {x:.4f}" for k, x in v["dev_bits_per_char"].items()) + ")"
                        for c, v in res.get("dropout_dev", {}).items())
    ran = {(r["corpus"], r["fraction"]) for r in res["runs"]}
    shares = ", ".join(f"{c} {f:.0%}{' (every arm)' if every else ''}" for c, f, every in PLAN if (c, f) in ran)
    missing = [f"{c} {f:.0%} (`--entries {i}`)" for i, (c, f, _) in enumerate(PLAN) if (c, f) not in ran]
    missing_note = (f"Planned but not run in these results: {', '.join(missing)}." if missing else "")
    return render("augment_study", title=SECTION, m=res["machine"], table=table(res), runs="\n".join(runs),
                  findings="\n".join(lines), dropout=dropout, shares=shares, missing=missing_note)


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
