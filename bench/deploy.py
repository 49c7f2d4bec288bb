"""Benchmark: what the gl-ctg `demo` student costs to deploy (`python -m lm.ship.deploy`).

`.venv/bin/python bench/deploy.py` (from the project root). Takes the student of bench/distill.py's
gl-ctg run (bench/work/distill/runs/gl-ctg; the distillation runs first when it is missing) and
runs `python -m lm.ship.deploy` on it with `--hf-generate`: float32 run, `hf` export on transformers
and PyTorch (our cached loop, and `model.generate()` itself), int8 with the embedding quantised
and left float32, GGUF (f32, q8_0) on llama.cpp and ONNX (f32, int8) on ONNX Runtime, and magnitude-pruned runs at 30%, 50% and 70% after a 100-step recovery
fine-tune. Writes bench/results/deploy.json and the "Deployment" section of bench/README.md, with
generation speed as a ratio to the same model on transformers + PyTorch, measured in the same run
(template: bench/templates/deploy.md). `--readme` rewrites that section from the results JSON
without running anything.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (quiet_note, load_1m, machine, md_row, parser, readme_only, render, update_readme,  # noqa: E402
                          write_results)

WORK = ROOT / "bench" / "work" / "distill"
RUN = WORK / "runs" / "gl-ctg"
RESULTS = ROOT / "bench" / "results" / "deploy.json"
SECTION = "## Deployment (bench/deploy.py)"
PY = sys.executable
TOKENS = 128
FINETUNE_STEPS = 100  # the pruned runs' recovery fine-tune


def student() -> Path:
    """The demo student of gl-ctg (the best round's model of bench/distill.py's run)."""
    if not (RUN / "report.json").is_file():
        subprocess.run([PY, "bench/distill.py", "--only", "gl-ctg"], cwd=ROOT, check=True)
    report = json.loads((RUN / "report.json").read_text())
    return RUN / "models" / report["rounds"][report["best_round"] - 1]["model"]


def pruned_note(doc: dict[str, Any]) -> str:
    """The pruned runs' caveat, computed: their fine-tune length and which of them score below
    float32 on test (display: results/deploy.json records no dev figure)."""
    steps = doc.get("finetune_steps")
    tune = f"The {steps}-step recovery fine-tune" if steps else "The recovery fine-tune (its length not recorded)"
    f32 = next(r["test_bits_per_char"] for r in doc["artefacts"] if r["artefact"] == "float32")
    below = [f"{r['sparsity']:.0%}" for r in doc["artefacts"]
             if "sparsity" in r and r.get("test_bits_per_char") and r["test_bits_per_char"] < f32]
    why = (f", which may be why {' and '.join(below)} sparsity score{'s' if len(below) == 1 else ''} below float32 "
           "on test" if below else "")
    return (f"{tune} is also more steps for a student that the demo left undertrained{why}: compare pruned "
            "runs with each other, not with float32")


NATIVE_PAIRS = (("gguf-f32", "gguf-q8_0"), ("onnx-f32", "onnx-int8"))  # (float, 8-bit) per runtime


def l3_cache_mb() -> float | None:
    """This CPU's last-level cache (MB), from sysfs; None where it is not there."""
    try:
        size = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
    except OSError:
        return None
    return int(size[:-1]) / 1024 if size.endswith("K") else float(size.rstrip("M"))


def native_notes(doc: dict[str, Any]) -> str:
    """The GGUF and ONNX rows in sentences, computed: size against float32, quality, the serving
    process's memory, speed against Flax, and whether 8-bit beats float in either runtime."""
    rows = {r["artefact"]: r for r in doc["artefacts"]}
    if not all(n in rows for pair in NATIVE_PAIRS for n in pair):
        return "- No GGUF or ONNX rows in this run."
    f32, hf = rows["float32"], rows["hf"]
    eight = [rows[q] for _, q in NATIVE_PAIRS]
    share = " and ".join(f"{r['artefact']} stores {r['weights_bytes'] / hf['weights_bytes']:.1%}" for r in eight)
    quality = ", ".join(f"{r['artefact']} {r['test_bits_per_char']:.4f} "
                        f"({r['test_bits_per_char'] / f32['test_bits_per_char'] - 1:+.2%})" for r in eight)
    native = [rows[n] for pair in NATIVE_PAIRS for n in pair]
    peaks = [r["peak_mb"] for r in native]
    fast = max(native, key=lambda r: r["tokens_per_s_1"])
    ratios = {q: rows[q]["tokens_per_s_1"] / rows[f]["tokens_per_s_1"] for f, q in NATIVE_PAIRS}
    wins = [q for q, r in ratios.items() if r > 1.0]
    flops = 2 * (doc.get("params") or 0)  # multiply-adds of one token's matrix products
    per_token = ", ".join(f"{1e6 / rows[f]['tokens_per_s_1']:.0f} µs on {rows[f]['engine'].split(' (')[0]}"
                          + (f" ({flops * rows[f]['tokens_per_s_1'] / 1e9:.1f} GFLOP/s)" if flops else "")
                          for f, _ in NATIVE_PAIRS)
    l3 = doc.get("l3_cache_mb")
    fits = (f"the float32 weights ({hf['weights_bytes'] / 1e6:.1f} MB) fit in this CPU's {l3:g} MB last-level "
            "cache, so 8-bit weights save no memory traffic, and " if l3 and hf["weights_bytes"] / 1e6 < l3 else "")
    speed8 = ", ".join(f"{q} {r:.2f}x its float" for q, r in ratios.items())
    work = f" for {flops / 1e6:.1f} MFLOP of matrix products" if flops else ""
    verdict = (f"8-bit is faster than float at one thread in {' and '.join(wins)} ({speed8})." if wins else
               f"8-bit is not faster than float at one thread in either runtime ({speed8}): {fits}a float32 token "
               f"costs {per_token}{work}: fixed costs per call, not arithmetic, set the rate at this size.")
    return (f"- GGUF and ONNX: {share} of the float32 safetensors; test bits/char {quality} against "
            f"{f32['test_bits_per_char']:.4f} for Flax float32.\n"
            f"- A process serving one of them (the runtime, NumPy and the tokenizer; no JAX) peaks at "
            f"{min(peaks):.0f}-{max(peaks):.0f} MB, against {f32['peak_mb']:.0f} MB for Flax float32.\n"
            f"- At one thread the fastest, {fast['artefact']} ({fast['engine']}), generates "
            f"{fast['tokens_per_s_1']:,.0f} tokens/s: {fast['tokens_per_s_1'] / f32['tokens_per_s_1']:.2f}x Flax "
            f"float32 in this run.\n- {verdict}")


def section(doc: dict[str, Any], m: dict[str, Any]) -> str:
    rows = {r["artefact"]: r for r in doc["artefacts"]}
    torch_row = rows.get("hf (model.generate)") or rows["hf"]
    lines = []
    f32 = rows["float32"]
    for r in doc["artefacts"]:
        one, every = r["threads_1"], r["threads_all"]
        bpc = r.get("test_bits_per_char")
        rel = f"{bpc / f32['test_bits_per_char']:.3f}" if bpc else "-"
        ratio = (f"{one['tokens_per_second'] / torch_row['threads_1']['tokens_per_second']:.2f}x / "
                 f"{every['tokens_per_second'] / torch_row['threads_all']['tokens_per_second']:.2f}x")
        name = r["artefact"] + (f" (sparsity {r['sparsity']:.2f})" if "sparsity" in r else "")
        lines.append(md_row(name, r["engine"], f"{r['weights_bytes'] / 1e6:.2f}", bpc if bpc else "-", rel,
                            f"{one['time_to_first_token_s'] * 1e3:.1f} / {every['time_to_first_token_s'] * 1e3:.1f}",
                            f"{one['tokens_per_second']:,.0f}", f"{every['tokens_per_second']:,.0f}", ratio,
                            f"{r.get('peak_mb', every['peak_rss_mb']):.0f} ({every['runtime_rss_mb']:.0f})"))
    int8, emb = rows.get("int8"), rows.get("int8-float-emb")
    speed = [int8[t]["tokens_per_second"] / f32[t]["tokens_per_second"] for t in ("threads_1", "threads_all")]
    int8_speed = (f"int8 generates at {speed[0]:.2f}x (one thread) and {speed[1]:.2f}x (every core) the tokens/s of "
                  "float32 (its weights are dequantised inside every step); one run, so ratios near 1 are noise.")
    return render("deploy", title=SECTION, m=m, doc=doc, rows="\n".join(lines), f32=f32, int8=int8, int8_emb=emb,
                  quiet=quiet_note(doc["load_avg_1m"][0]), int8_speed=int8_speed, pruned=pruned_note(doc),
                  int8_share=int8["weights_bytes"] / rows["hf"]["weights_bytes"], native=native_notes(doc),
                  int8_emb_share=emb["weights_bytes"] / rows["hf"]["weights_bytes"])


def main(argv: list[str] | None = None) -> int:
    args = parser("deployment benchmark of the gl-ctg demo student").parse_args(argv)
    if readme_only(args.readme, SECTION, RESULTS, lambda res: section(res, res["machine"])):
        return 0
    run = student()
    out = WORK / "deploy"
    shutil.rmtree(out, ignore_errors=True)
    load = load_1m()
    cmd = [PY, "-m", "lm.ship.deploy", str(run), "--out", str(out), "--sparsity", "0.3", "0.5", "0.7",
           "--finetune-steps", str(FINETUNE_STEPS), "--tokens", str(TOKENS), "--hf-generate"]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    doc = json.loads((out / "deploy.json").read_text())
    doc["load_avg_1m"] = [load, load_1m()]
    doc["finetune_steps"] = FINETUNE_STEPS
    doc["l3_cache_mb"] = l3_cache_mb()
    doc["params"] = json.loads((run / "run.json").read_text()).get("params")
    doc["run"] = str(run.relative_to(ROOT))
    doc = json.loads(json.dumps(doc).replace(str(ROOT) + "/", ""))  # no machine paths in the results
    m = machine("transformers", "jax", "torch")
    write_results(RESULTS, {"machine": m, **doc})
    update_readme(SECTION, section(doc, m))
    print(section(doc, m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
