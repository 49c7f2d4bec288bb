"""Benchmark: what the gl-ctg `demo` student costs to deploy (`python -m lm.deploy`).

`.venv/bin/python bench/deploy.py` (from the project root). Takes the student of bench/distill.py's
gl-ctg run (bench/work/distill/runs/gl-ctg; the distillation runs first when it is missing) and
runs `python -m lm.deploy` on it with `--hf-generate`: float32 run, `hf` export on transformers
and PyTorch (our cached loop, and `model.generate()` itself), int8 with the embedding quantised
and left float32, and magnitude-pruned runs at 30%, 50% and 70% after a 100-step recovery
fine-tune. Writes bench/results/deploy.json and the "Deployment" section of bench/README.md, with
generation speed as a ratio to the same model on transformers + PyTorch, measured in the same run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, update_readme  # noqa: E402

WORK = ROOT / "bench" / "work" / "distill"
RUN = WORK / "runs" / "gl-ctg"
RESULTS = ROOT / "bench" / "results" / "deploy.json"
SECTION = "## Deployment (bench/deploy.py)"
PY = sys.executable
TOKENS = 128


def student() -> Path:
    """The demo student of gl-ctg (the best round's model of bench/distill.py's run)."""
    if not (RUN / "report.json").is_file():
        subprocess.run([PY, "bench/distill.py", "--only", "gl-ctg"], cwd=ROOT, check=True)
    report = json.loads((RUN / "report.json").read_text())
    return RUN / "models" / report["rounds"][report["best_round"] - 1]["model"]


def section(doc: dict[str, Any], m: dict[str, Any]) -> str:
    rows = {r["artefact"]: r for r in doc["artefacts"]}
    torch_row = rows.get("hf (model.generate)") or rows["hf"]
    lines = ["| artefact | engine | weights MB | test bits/char | vs float32 | first token ms (1 thread / all) | "
             "tokens/s 1 thread | tokens/s all | vs transformers (1 / all) | peak MB (runtime) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    f32 = rows["float32"]
    for r in doc["artefacts"]:
        one, every = r["threads_1"], r["threads_all"]
        bpc = r.get("test_bits_per_char")
        rel = f"{bpc / f32['test_bits_per_char']:.3f}" if bpc else "-"
        ratio = (f"{one['tokens_per_second'] / torch_row['threads_1']['tokens_per_second']:.2f}x / "
                 f"{every['tokens_per_second'] / torch_row['threads_all']['tokens_per_second']:.2f}x")
        name = r["artefact"] + (f" (sparsity {r['sparsity']:.2f})" if "sparsity" in r else "")
        lines.append(f"| {name} | {r['engine']} | {r['weights_bytes'] / 1e6:.2f} | {bpc if bpc else '-'} | {rel} | "
                     f"{one['time_to_first_token_s'] * 1e3:.1f} / {every['time_to_first_token_s'] * 1e3:.1f} | "
                     f"{one['tokens_per_second']:,.0f} | {every['tokens_per_second']:,.0f} | {ratio} | "
                     f"{every['peak_rss_mb']:.0f} ({every['runtime_rss_mb']:.0f}) |")
    int8, emb = rows.get("int8"), rows.get("int8-float-emb")
    return f"""{SECTION}

One run of `.venv/bin/python bench/deploy.py` on {m['cpu_count']} CPUs ({m['cpu']}), load average
{doc['load_avg_1m'][0]} before and {doc['load_avg_1m'][1]} after: `python -m lm.deploy` on the gl-ctg demo
student of bench/distill.py ({doc['run']}). Greedy generation of {doc['tokens']} tokens after the prompt
{doc['prompt']!r}, each measurement in a fresh process (one XLA device; one thread, or every core).
Speed ratios are against the same weights on transformers {m['transformers']} + PyTorch
(`model.generate()`, greedy, its own key/value cache) measured in this run.

{chr(10).join(lines)}

- int8 stores {int8['weights_bytes'] / rows['hf']['weights_bytes']:.1%} of the float32 safetensors
  with the embedding quantised ({emb['weights_bytes'] / rows['hf']['weights_bytes']:.1%} with it float32), for
  test bits/char {int8['test_bits_per_char']} and {emb['test_bits_per_char']} against {f32['test_bits_per_char']}:
  `lm.export --format int8` quantises the embedding by default (`--float-embeddings` keeps it).
- Pruned runs keep the dense layout; their size is the run's Orbax checkpoint, which compresses
  the zeros. The 100-step recovery fine-tune is also 100 more steps for a student that the
  15-minute demo left undertrained, which is why 30% sparsity can score better than float32:
  compare pruned runs with each other, not with float32 (nonzero parameters in results/deploy.json).
- int8 generates slower than float32 here: the weights are dequantised inside every step, and
  at this size a step is bound by overheads, not by memory traffic.
- Peak MB is the whole process (its high-water mark, JAX and PyTorch both imported, compilation
  included); runtime is the same process after the imports, before the model is loaded and the
  backend starts: at this model size the runtimes dominate, not the weights.
"""


def main() -> int:
    if sys.argv[1:] == ["--readme"]:  # rewrite the README section from results/deploy.json
        res = json.loads(RESULTS.read_text())
        update_readme(SECTION, section(res, res["machine"]))
        return 0
    run = student()
    out = WORK / "deploy"
    shutil.rmtree(out, ignore_errors=True)
    load = os.getloadavg()[0]
    cmd = [PY, "-m", "lm.deploy", str(run), "--out", str(out), "--sparsity", "0.3", "0.5", "0.7",
           "--finetune-steps", "100", "--tokens", str(TOKENS), "--hf-generate"]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    doc = json.loads((out / "deploy.json").read_text())
    doc["load_avg_1m"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    doc["run"] = str(run.relative_to(ROOT))
    doc = json.loads(json.dumps(doc).replace(str(ROOT) + "/", ""))  # no machine paths in the results
    m = machine("transformers", "jax", "torch")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": m, **doc}, indent=2) + "\n", encoding="utf-8")
    update_readme(SECTION, section(doc, m))
    print(section(doc, m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
