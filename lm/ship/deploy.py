"""`python -m lm.ship.deploy RUN [--sparsity S] [--finetune-steps N] [--tokens N] [--prompt TEXT]`

What each deployable form of a trained run costs on this machine. Makes what is missing under
`RUN/deploy/` (`hf` and `int8` exports, `int8-float-emb` with the embedding left float32,
`gguf-f32` and `gguf-q8_0` for llama.cpp, `onnx-f32` and `onnx-int8` for ONNX Runtime, and a
pruned run per `--sparsity`), then measures every artefact:

* size on disk: the weights file (a run's checkpoint folder) and the whole folder;
* test bits per character (`lm.evaluate` on the run's corpus);
* generation, greedy, in a fresh process per measurement so that memory and threads are its
  own: time to first token (prompt read, first token out), tokens per second after it, and peak
  resident memory (the process's high-water mark; `runtime` is the same process before the
  model is loaded: Python, JAX or PyTorch, or only llama.cpp or ONNX Runtime for GGUF and ONNX,
  whose probes never import JAX), with one thread and with every core.

Writes `RUN/deploy/deploy.json`, `deploy.md` and `bits_vs_size.png`. Our Flax forms generate
with `lm.decode`'s key/value cache; the `hf` export runs on transformers and PyTorch with
transformers' cache (`lm.hf_model.HFDecoder`), and `--hf-generate` adds a row for
`model.generate()` itself. Exit codes: 0 ok, 1 failure, 2 usage.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common.files import read_json, write_json
from lm.errors import UsageError, run_cli
from lm.runtimes import EXPORT_FILE, NATIVE, export_format

ENGINES = {"gguf": "llama.cpp (llama-cpp-python)", "onnx": "ONNX Runtime"}

PROMPT = "A "
THREADS = ("1", "all")


def _rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory now (VmRSS) or its high-water mark (VmHWM), in MB. Not
    getrusage's ru_maxrss: Linux carries that across exec, so a probe would report the peak of
    the process that started it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def thread_env(threads: str) -> dict[str, str]:
    """Environment for a probe: one XLA device either way (batch 1), one thread or all."""
    env = {**os.environ, "SCARCE_LM_CPU_DEVICES": "1"}
    if threads == "1":
        env |= {"XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip(),
                "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                "SCARCE_LM_THREADS": "1"}
    return env


def _runtime(model_path: str, engine: str) -> Any:
    """Imports what serving needs, before the model (that memory counts as runtime); the loader."""
    if engine == "native":
        from lm.runtimes import load_native, runtime_module
        runtime_module(model_path)
        return load_native
    from lm import parallel
    parallel.use_cpu_cores()
    if os.environ.get("SCARCE_LM_THREADS") == "1":
        try:
            import torch
            torch.set_num_threads(1)
            torch.set_num_interop_threads(1)
        except (ImportError, RuntimeError):
            pass
    from lm.loader import load_model
    return load_model


def probe(model_path: str, tokens: int, prompt: str, engine: str) -> dict[str, Any]:
    """Runs inside the probe process: load, warm up, then time one greedy generation. A `native`
    engine (GGUF on llama.cpp, ONNX on ONNX Runtime) imports its runtime and NumPy, never JAX."""
    from lm.sampling import sample_next
    import numpy as np

    loader = _runtime(model_path, engine)
    runtime = _rss_mb()
    t = time.perf_counter()
    model = loader(model_path)
    load_s = time.perf_counter() - t
    ids = [model.tokenizer.eos_id] + model.tokenizer.encode(prompt)
    rng = np.random.default_rng(0)

    if engine == "hf-generate":
        torch = model.torch
        x = torch.as_tensor([ids], device=model.device)

        def run(n: int) -> list[float]:
            marks = []
            t0 = time.perf_counter()
            with torch.inference_mode():
                for n_new in (1, n):  # first token alone, then the whole generation
                    s = time.perf_counter()
                    model.model.generate(input_ids=x, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                                         pad_token_id=model.tokenizer.eos_id)
                    marks.append(time.perf_counter() - s)
            return [marks[0], marks[1] - marks[0], time.perf_counter() - t0]
        run(4)
        first, rest, _ = run(tokens)
    else:
        def run(n: int) -> tuple[float, float]:
            dec = model.decoder()
            t0 = time.perf_counter()
            logits = dec.start(ids)
            nxt = sample_next(logits, rng, 0.0)
            first = time.perf_counter() - t0
            t1 = time.perf_counter()
            for _ in range(n - 1):
                nxt = sample_next(dec.step(nxt), rng, 0.0)
            return first, time.perf_counter() - t1
        run(min(tokens, model.context + 2))  # compile every shape, the context shift included
        first, rest = run(tokens)
    return {"load_s": round(load_s, 3), "time_to_first_token_s": round(first, 4),
            "tokens_per_second": round((tokens - 1) / rest, 1) if rest > 0 else None,
            "peak_rss_mb": round(_rss_mb("VmHWM"), 1),
            "runtime_rss_mb": round(runtime, 1), "jax_loaded": "jax" in sys.modules}


def run_probe(model: Path, threads: str, tokens: int, prompt: str, engine: str = "ours") -> dict[str, Any]:
    cmd = [sys.executable, "-m", "lm.ship.deploy", "--probe", str(model), "--tokens", str(tokens), "--prompt", prompt,
           "--engine", engine]
    res = subprocess.run(cmd, env=thread_env(threads), capture_output=True, text=True)
    if res.returncode:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"generation probe of {model} ({threads} threads) failed: {tail}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def weights_bytes(path: Path) -> int:
    """The weights alone: the file an export's export.json names (model.safetensors in a foreign
    Hugging Face folder), the checkpoint read from a run."""
    from lm.checkpoint import BEST_DIR, CHECKSUMS, Checkpoints
    from lm.loader import WEIGHTS

    if (path / EXPORT_FILE).is_file():
        return (path / read_json(path / EXPORT_FILE).get("weights", WEIGHTS)).stat().st_size
    if (path / WEIGHTS).is_file():
        return (path / WEIGHTS).stat().st_size
    step = Checkpoints(path, read_only=True).latest_step(BEST_DIR)
    folder = path / BEST_DIR / str(step) if step is not None else path
    sums = folder / CHECKSUMS  # the checkpoint's checksums are not weights
    return folder_bytes(folder) - (sums.stat().st_size if sums.is_file() else 0)


def ensure_artefacts(run: Path, out: Path, sparsities: list[float], finetune_steps: int,
                     corpus: str | None) -> dict[str, Path]:
    from lm.loader import EXPORT_FILE, load_model
    from lm.ship.export import export_gguf, export_hf, export_int8, export_onnx
    from lm.ship.prune import PRUNE_FILE, prune_run

    arts: dict[str, Path] = {"float32": run}
    model = None
    for name, make in (("hf", lambda m, p: export_hf(m, p)),
                       ("int8", lambda m, p: export_int8(m, p, embeddings=True)),
                       ("int8-float-emb", lambda m, p: export_int8(m, p, embeddings=False)),
                       *((f"gguf-{q}", lambda m, p, q=q: export_gguf(m, p, q)) for q in ("f32", "q8_0")),
                       *((f"onnx-{q}", lambda m, p, q=q: export_onnx(m, p, q)) for q in ("f32", "int8"))):
        path = out / name
        if not (path / EXPORT_FILE).is_file():
            model = model or load_model(run)
            make(model, path)
        arts[name] = path
    for s in sparsities:
        path = out / f"pruned-{s:g}"
        if not (path / PRUNE_FILE).is_file():
            prune_run(run, sparsity=s, finetune_steps=finetune_steps, corpus=corpus, out=path, quiet=True)
        arts[f"pruned-{s:g}"] = path
    return arts


def measure(arts: dict[str, Path], corpus: str, tokens: int, prompt: str, hf_generate: bool,
            threads: list[str]) -> list[dict[str, Any]]:
    from lm.loader import load_model
    from lm.scoring import evaluate
    from lm.ship.prune import PRUNE_FILE

    rows = []
    jobs = [(name, path, "ours") for name, path in arts.items()]
    if hf_generate and "hf" in arts:
        jobs.append(("hf (model.generate)", arts["hf"], "hf-generate"))
    for name, path, engine in jobs:
        fmt = export_format(path)
        engine = "native" if fmt in NATIVE else engine
        label = ENGINES.get(fmt) or ("transformers + PyTorch" if name.startswith("hf") else "lm (Flax/JAX)")
        row: dict[str, Any] = {"artefact": name, "path": str(path), "weights_bytes": weights_bytes(path),
                               "folder_bytes": folder_bytes(path), "engine": label}
        if engine != "hf-generate":
            model = load_model(path)
            row["test_bits_per_char"] = round(evaluate(model, "test", corpus)["bits_per_char"], 4)
            if (path / PRUNE_FILE).is_file():
                pr = read_json(path / PRUNE_FILE)
                row["sparsity"], row["nonzero_params"] = round(pr["sparsity"], 4), pr["nonzero_params"]
        for th in threads:
            row[f"threads_{th}"] = run_probe(path, th, tokens, prompt, engine)
        row["weights_mb"] = round(row["weights_bytes"] / 1e6, 3)
        for th in threads:  # the flat figures bench/deploy.py reads
            row[f"tokens_per_s_{th}"] = row[f"threads_{th}"]["tokens_per_second"]
        row["peak_mb"] = max(row[f"threads_{th}"]["peak_rss_mb"] for th in threads)
        rows.append(row)
    return rows


def _rate(tokens_per_second: float | None) -> str:
    """A probe's tokens/s; None (the whole generation timed no longer than its first token) as "-"."""
    return "-" if tokens_per_second is None else f"{tokens_per_second:,.0f}"


def markdown(doc: dict[str, Any]) -> str:
    head = ("| artefact | engine | weights MB | folder MB | test bits/char | first token ms (1 / all) | "
            "tokens/s 1 thread | tokens/s all | peak MB (runtime) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in doc["artefacts"]:
        none = {"time_to_first_token_s": float("nan"), "tokens_per_second": float("nan"), "peak_rss_mb": float("nan"),
                "runtime_rss_mb": float("nan")}
        one, every = r.get("threads_1", none), r.get("threads_all", none)
        bpc = f"{r['test_bits_per_char']:.4f}" if r.get("test_bits_per_char") is not None else "-"
        if "sparsity" in r:
            bpc += f" (sparsity {r['sparsity']:.2f})"
        lines.append(f"| {r['artefact']} | {r['engine']} | {r['weights_bytes'] / 1e6:.2f} | {r['folder_bytes'] / 1e6:.2f} | "
                     f"{bpc} | {one['time_to_first_token_s'] * 1e3:.1f} / {every['time_to_first_token_s'] * 1e3:.1f} | "
                     f"{_rate(one['tokens_per_second'])} | {_rate(every['tokens_per_second'])} | "
                     f"{every['peak_rss_mb']:.0f} ({every['runtime_rss_mb']:.0f}) |")
    return (f"# Deployment report: {doc['run']}\n\nCorpus {doc['corpus']}; greedy generation of {doc['tokens']} tokens "
            f"after the prompt {doc['prompt']!r}, one fresh process per measurement, on {doc['cpus']} CPUs. "
            "Peak MB is the process's high-water mark; runtime is the same process before loading the model.\n\n"
            + "\n".join(lines) + "\n\n![bits per character against size](bits_vs_size.png)\n")


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for r in doc["artefacts"]:
        if r.get("test_bits_per_char") is None:
            continue
        ax.scatter(r["weights_bytes"] / 1e6, r["test_bits_per_char"])
        ax.annotate(r["artefact"], (r["weights_bytes"] / 1e6, r["test_bits_per_char"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("weights on disk (MB)")
    ax.set_ylabel("test bits per character")
    ax.set_title("size against quality")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lm.ship.deploy", description=__doc__.split("\n\n")[0])
    p.add_argument("run", nargs="?", help="a trained run folder (lm.train, or lm.distill's RUN/models/NAME)")
    p.add_argument("--out", help="where the artefacts and the report go (default RUN/deploy)")
    p.add_argument("--corpus", help="OUT/NAME or a version folder (default: the run's own)")
    p.add_argument("--sparsity", type=float, nargs="*", default=[0.5], help="pruned artefacts to make (0.5)")
    p.add_argument("--finetune-steps", type=int, default=100)
    p.add_argument("--tokens", type=int, default=128, help="tokens generated per measurement")
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--hf-generate", action="store_true", help="add transformers' model.generate() on the hf export")
    p.add_argument("--threads", nargs="+", choices=THREADS, default=list(THREADS), help="thread settings to measure (1 all)")
    p.add_argument("--probe", help=argparse.SUPPRESS)
    p.add_argument("--engine", default="ours", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tokens < 2:
        raise UsageError("--tokens must be at least 2")
    if args.probe:
        print(json.dumps(probe(args.probe, args.tokens, args.prompt, args.engine)))
        return 0
    if not args.run:
        raise UsageError("give a run folder: python -m lm.ship.deploy RUN")
    from lm import parallel
    from lm.loader import load_model
    parallel.start_command()
    run = Path(args.run)
    out = Path(args.out) if args.out else run / "deploy"
    out.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus or load_model(run).info.get("corpus", {}).get("path")
    arts = ensure_artefacts(run, out, args.sparsity, args.finetune_steps, args.corpus)
    doc = {"run": str(run), "corpus": corpus, "tokens": args.tokens, "prompt": args.prompt, "cpus": os.cpu_count(),
           "artefacts": measure(arts, corpus, args.tokens, args.prompt, args.hf_generate, args.threads)}
    write_json(out / "deploy.json", doc)
    (out / "deploy.md").write_text(markdown(doc), encoding="utf-8")
    plot(doc, out / "bits_vs_size.png")
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
