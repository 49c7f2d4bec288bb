"""The distillation report: `report.json`, `report.md` (the same as tables) and two PNG plots.

`report.json` = {"corpus", "version", "preset", "rounds": [...], "models": {NAME: {"params",
"dev_bits_per_char", "test_bits_per_char", "train_seconds", "tokens_per_second"}}, "augmenters":
{NAME: {"variants", "kept", "kept_fraction"}}} plus a few extra keys (settings, teacher cache,
wall time). Plots: `dev_bpc.png` (dev bits per character against step for every model, from
each model's metrics.jsonl) and `kept_fraction.png` (kept fraction per augmenter and round).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lm.files import write_json
from lm.run import read_done

MODEL_ORDER = ("ngram", "teacher", "student", "baseline", "student_no_kd", "student_no_aug")
MODEL_FIELDS = ("params", "dev_bits_per_char", "test_bits_per_char", "train_seconds", "tokens_per_second")


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def models_table(report: dict[str, Any]) -> str:
    models = report["models"]
    names = [n for n in MODEL_ORDER if n in models] + sorted(set(models) - set(MODEL_ORDER))
    base = (models.get("baseline") or {}).get("test_bits_per_char")
    lines = ["| model | params | dev bits/char | test bits/char | test / baseline | train s | tokens/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        m = models[n]
        ratio = m["test_bits_per_char"] / base if base and m.get("test_bits_per_char") else None
        label = f"{n} (order {m['order']})" if "order" in m else n
        lines.append(f"| {label} | {_fmt(m['params'])} | {_fmt(m['dev_bits_per_char'])} | {_fmt(m['test_bits_per_char'])} | "
                     f"{_fmt(ratio, 3)} | {_fmt(m['train_seconds'], 1)} | {_fmt(m['tokens_per_second'], 0)} |")
    return "\n".join(lines)


def augmenters_table(report: dict[str, Any]) -> str:
    lines = ["| augmenter | variants | kept | kept fraction |", "|---|---:|---:|---:|"]
    for name, a in sorted(report["augmenters"].items()):
        lines.append(f"| {name} | {a['variants']:,} | {a['kept']:,} | {a['kept_fraction']:.3f} |")
    return "\n".join(lines)


def rounds_table(report: dict[str, Any]) -> str:
    lines = ["| round | seed | new variants | kept | threshold bits/char | mixture weights | dev gains | student dev bits/char | student test bits/char |",
             "|---:|---:|---:|---:|---:|---|---|---:|---:|"]
    for r in report["rounds"]:
        w = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["weights"].items()))
        g = ", ".join(f"{k} {v:+.3f}" for k, v in sorted(r.get("gains", {}).items()))
        lines.append(f"| {r['round']} | {r['seed']} | {r['new_variants']:,} | {r['kept_variants']:,} | "
                     f"{_fmt(r['threshold_bits_per_char'])} | {w} | {g} | {_fmt(r['dev_bits_per_char'])} | "
                     f"{_fmt(r['test_bits_per_char'])} |")
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    s = report.get("settings", {})
    head = (f"# Distillation report: {report['corpus']} {report['version']} (preset {report['preset']})\n\n"
            f"Teacher: {report.get('teacher_source', 'trained here')}. Loss: alpha {s.get('alpha')} x CE + "
            f"(1 - alpha) x T^2 x KL ({s.get('kl')}), T = {s.get('temperature')}; keep quantile "
            f"{s.get('keep_quantile')}; teacher logits: {report.get('teacher_logits', '-')}. "
            f"Bits per character as `lm.evaluate` (sliding windows, stride context/2) on real dev and test text. "
            f"Wall time {report.get('wall_seconds', 0):.0f} s.\n")
    return "\n".join([head, "## Models\n", models_table(report), "", "## Augmenters (all rounds)\n",
                      augmenters_table(report), "", "## Rounds\n", rounds_table(report), "",
                      "![dev bits per character](dev_bpc.png)\n", "![kept fraction](kept_fraction.png)\n"])


def _curve(model_dir: Path) -> list[tuple[int, float]]:
    path = model_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if "dev_bpc" in entry:
            out.append((entry["step"], entry["dev_bpc"]))
    return out


def plot(run: Path, curves: dict[str, list[Path]], report: dict[str, Any]) -> None:
    """curves: model name -> its phase folders in order (steps of later phases continue the count)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, dirs in curves.items():
        xs, ys, offset = [], [], 0
        for d in dirs:
            pts = _curve(d)
            xs += [offset + s for s, _ in pts]
            ys += [v for _, v in pts]
            if pts:
                offset += pts[-1][0]
        if xs:
            ax.plot(xs, ys, marker="o", markersize=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("dev bits per character (block windows)")
    ax.set_title(f"{report['corpus']}: dev bits per character")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(run / "dev_bpc.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.8))
    names = sorted({a for r in report["rounds"] for a in r["augmenters"]})
    width = 0.8 / max(1, len(report["rounds"]))
    for i, r in enumerate(report["rounds"]):
        vals = [r["augmenters"].get(a, {}).get("kept_fraction", 0.0) for a in names]
        ax.bar([j + i * width for j in range(len(names))], vals, width, label=f"round {r['round']}")
    ax.set_xticks([j + width * (len(report["rounds"]) - 1) / 2 for j in range(len(names))], names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("kept fraction")
    ax.set_title("variants kept by the teacher's judgement")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run / "kept_fraction.png", dpi=110)
    plt.close(fig)


def assemble(models_dir: Path, rounds: list[dict[str, Any]], best_round: dict[str, Any],
             ngram: dict[str, Any] | None = None, **head: Any) -> tuple[dict[str, Any], dict[str, list[Path]]]:
    """The report of a finished run (`head`: corpus, version, preset, ... first) and the curves to
    plot, from the rounds, every model's DONE.json under `models_dir` and the n-gram anchor
    (`lm.ngram.anchor`)."""
    models: dict[str, dict] = {}
    if ngram:
        models["ngram"] = {k: ngram.get(k) for k in MODEL_FIELDS} | {"order": ngram["order"]}
    curves: dict[str, list[Path]] = {}

    def add(name: str, folder: str, dirs: list[Path]) -> None:
        done = read_done(models_dir / folder)
        if done:
            models[name] = {k: done.get(k) for k in MODEL_FIELDS}
            curves[name] = dirs

    add("teacher", "teacher", [models_dir / "judge", models_dir / "teacher"])
    add("student", best_round["model"], [models_dir / best_round["model"]])
    extra = [p.name for p in sorted(models_dir.glob("student_*")) if p.name.startswith(("student_renorm", "student_bucket"))]
    for name in ("baseline", "student_no_kd", "student_no_aug", *extra):
        add(name, name, [models_dir / name])
    for rec in rounds:
        if rec["model"] != best_round["model"]:
            curves[rec["model"]] = [models_dir / rec["model"]]
    augmenters: dict[str, dict] = {}
    for rec in rounds:
        for a, v in rec["augmenters"].items():
            acc = augmenters.setdefault(a, {"variants": 0, "kept": 0})
            acc["variants"] += v["variants"]
            acc["kept"] += v["kept"]
    for a in augmenters.values():
        a["kept_fraction"] = round(a["kept"] / a["variants"], 4) if a["variants"] else 0.0
    base = models.get("baseline", {}).get("test_bits_per_char")
    ratio = round(models["student"]["test_bits_per_char"] / base, 4) if base else None
    corpus, version, preset = head.pop("corpus"), head.pop("version"), head.pop("preset")
    report = {"corpus": corpus, "version": version, "preset": preset, "rounds": rounds, "models": models,
              "augmenters": augmenters, "best_round": best_round["round"], "student_over_baseline": ratio, **head}
    return report, curves


def write(run: Path, report: dict[str, Any], curves: dict[str, list[Path]]) -> None:
    write_json(run / "report.json", report)
    (run / "report.md").write_text(markdown(report), encoding="utf-8")
    plot(run, curves, report)
