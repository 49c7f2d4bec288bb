"""Benchmark: where one training step's time goes, operation by operation (issue: throughput).

`.venv/bin/python bench/profile_step.py` (from the project root). Writes bench/results/profile.json
and the "Where a training step's time goes" section of bench/README.md.

The step is the product's own (`lm.objective.make_step`, AdamW, clipping, donation) on the demo
preset's shapes (`lm.distill --preset demo`): the student with its distillation loss against a
cached teacher's top-k (as lm.distill trains it) and the teacher with cross-entropy (dropout
on), random tokens, float32 and bfloat16 compute. One worker process per device count (it is
fixed when JAX starts): 2 devices is how the commands run on two cores (one per core, data
parallel); 1 device with both threads is what the trace is taken on, because tracing two devices
slows the step 2x and the shares with it. Each worker times STEPS steps untraced (median of
ROUNDS rounds), then traces TRACE_STEPS more with `jax.profiler` and adds the time of every XLA
operation (summed over threads) by what it computes: the model's named scopes (`embed`,
`attention`, `norm`, `mlp`, `head`, and `loss`, `optimizer` in the step), forward or backward
(`transpose(` in the name: autodiff's backward pass), and kind (a matrix product, or a fusion
around one, versus everything else: element-wise work, reductions, layout copies). The top
operations are kept with their shapes, so a change can be aimed at the largest line and
measured by rerunning this.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import fmt, load_1m, machine, md_row, parser, publish, readme_only, render, wait_for_quiet  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "profile.json"
SECTION = "## Where a training step's time goes (bench/profile_step.py)"
MODELS, DTYPES, DEVICES = ("student", "teacher"), ("float32", "bfloat16"), (2, 1)
STEPS, ROUNDS, TRACE_STEPS, TOP = 5, 5, 5, 12
SCOPES = ("embed", "attention", "rope", "attend", "norm", "mlp", "head", "loss", "optimizer")
VOCAB = 512


def shape(model: str, dtype: str) -> tuple[Any, int]:
    """(ModelConfig, batch) of the demo preset's student or teacher."""
    from lm.distill.config import PRESETS
    from lm.model import preset

    p = PRESETS["demo"]
    name, over = p.student_shape if model == "student" else p.teacher_shape
    return preset(name, **over, vocab_size=VOCAB, dtype=dtype), p.defaults().batch


def stepper(model: str, dtype: str) -> tuple[Callable[[], None], Callable[[], str], int]:
    """(run one step, the compiled step's HLO text, tokens per step) for the product's step."""
    import jax
    import numpy as np

    from lm import parallel
    from lm.distill.config import DEFAULT_CACHE_K
    from lm.losses import LossConfig
    from lm.model import init_params
    from lm.objective import CachedTeacher, CrossEntropy, make_step
    from lm.trainer import OptimConfig, make_optimizer

    cfg, batch = shape(model, dtype)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCAB, (batch, cfg.context + 1)).astype(np.int32)
    b = {"x": tokens[:, :-1], "y": tokens[:, 1:], "m": np.ones((batch, cfg.context), np.float32)}
    if model == "student":  # the student's objective in lm.distill: KL to a cached top-k teacher
        loss, objective = LossConfig(alpha=0.2, top_k=DEFAULT_CACHE_K), CachedTeacher(cache=None)
        b["idx"] = np.argsort(rng.random((batch, cfg.context, VOCAB)), axis=-1)[..., :DEFAULT_CACHE_K].astype(np.int32)
        b["vals"] = np.full((batch, cfg.context, DEFAULT_CACHE_K), np.log(0.9 / DEFAULT_CACHE_K), np.float16)
    else:
        loss, objective = LossConfig(), CrossEntropy()
    tx, _ = make_optimizer(OptimConfig(decay_steps=10_000, warmup=100))
    mesh = parallel.make_mesh()
    step = make_step(cfg, loss, tx, mesh, objective)
    repl = parallel.replicated(mesh)
    params = parallel.put(init_params(cfg, 0), repl)
    state = {"params": params, "opt": parallel.put(tx.init(params), repl),
             "extra": {"key": parallel.put(jax.random.key_data(jax.random.key(0)), repl)} if cfg.dropout else {}}
    arrays = jax.device_put(b, parallel.batch_sharded(mesh))

    def run() -> None:
        state["params"], state["opt"], out = step(state["params"], state["opt"], state["extra"], arrays, np.int32(0))
        out[0].block_until_ready()

    def hlo() -> str:
        return step.lower(state["params"], state["opt"], state["extra"], arrays, np.int32(0)).compile().as_text()
    return run, hlo, batch * cfg.context


def operations(hlo: str) -> dict[str, dict[str, Any]]:
    """Per instruction of the compiled module: its JAX op name, shape and whether it is (or fuses)
    a matrix product."""
    bodies: dict[str, str] = {}
    name = None
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if head:
            name, bodies[head.group(1)] = head.group(1), ""
        elif name:
            bodies[name] += line
    ops = {}
    for line in hlo.splitlines():
        m = re.match(r"^\s+(?:ROOT )?%?([\w.\-]+) = (\S+) ([\w\-]+)\(", line)
        if not m:
            continue
        calls = re.search(r"calls=%?([\w.\-]+)", line)
        body = bodies.get(calls.group(1), "") if calls else ""
        op_name = re.search(r'op_name="([^"]*)"', line)
        ops[m.group(1)] = {"op_name": op_name.group(1) if op_name else "", "shape": m.group(2),
                           "matmul": m.group(3) == "dot" or " dot(" in body}
    return ops


def category(op: dict[str, Any]) -> tuple[str, str, str]:
    """(scope, pass, kind) of one operation."""
    path = op["op_name"]
    found = [(m.start(), s) for s in SCOPES for m in re.finditer(rf"(?<![\w]){s}(?![\w])", path)]
    scope = max(found)[1] if found else "unscoped"  # the innermost scope: the last one named
    return scope, "backward" if "transpose(" in path else "forward", "matmul" if op["matmul"] else "non-matmul"


def traced(run: Callable[[], None], hlo: str) -> dict[str, Any]:
    """Trace TRACE_STEPS steps; operation time per category and the top operations, ms per step."""
    import jax

    ops = operations(hlo)
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        for _ in range(TRACE_STEPS):
            run()
        jax.profiler.stop_trace()
        trace = next(Path(tmp).rglob("*.trace.json.gz"))
        events = json.load(gzip.open(trace))["traceEvents"]
    by_cat: Counter = Counter()
    by_op: Counter = Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in ops:
            ms = e["dur"] / 1000 / TRACE_STEPS
            by_cat["/".join(category(ops[e["name"]]))] += ms
            by_op[e["name"]] += ms
    top = [{"op": n, "ms": ms, "shape": ops[n]["shape"], "category": "/".join(category(ops[n])),
            "op_name": ops[n]["op_name"]} for n, ms in by_op.most_common(TOP)]
    return {"op_ms": sum(by_cat.values()), "categories": dict(by_cat.most_common()), "top_ops": top}


def worker(devices: int) -> list[dict[str, Any]]:
    """In a process with `devices` XLA devices: every (model, dtype) timed, and traced on 1 device."""
    import jax

    rows = []
    for model in MODELS:
        for dtype in DTYPES:
            run, hlo, tokens = stepper(model, dtype)
            for _ in range(3):
                run()  # compile and warm up: not timed
            rounds = []
            for _ in range(ROUNDS):
                t = time.perf_counter()
                for _ in range(STEPS):
                    run()
                rounds.append((time.perf_counter() - t) / STEPS)
            ms = 1000 * statistics.median(rounds)
            row = {"model": model, "dtype": dtype, "devices": jax.device_count(), "tokens_per_step": tokens,
                   "ms_per_step": ms, "tokens_per_s": tokens / ms * 1000, "load_before": load_1m()}
            if devices == 1:
                row |= traced(run, hlo())
            rows.append(row)
            print(f"  {model} {dtype} x{devices} device(s): {ms:.1f} ms/step", file=sys.stderr, flush=True)
    return rows


def measure() -> dict[str, Any]:
    load = wait_for_quiet()
    rows = []
    for n in DEVICES:
        # no compile cache: an executable compiled before the scopes were named carries old names
        env = {**os.environ, "SCARCE_LM_CPU_DEVICES": str(n), "SCARCE_LM_NO_COMPILE_CACHE": "1"}
        out = subprocess.run([sys.executable, __file__, "--worker", str(n)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, check=True, text=True).stdout
        rows += json.loads(out)
    import jax

    return {"rows": rows, "load_at_start": load, "steps": STEPS, "rounds": ROUNDS, "trace_steps": TRACE_STEPS,
            "machine": machine("flax", "optax") | {"jax": jax.__version__}}


def shares(row: dict[str, Any]) -> dict[str, float]:
    """Share of traced operation time by scope, by pass and by kind."""
    out: Counter = Counter()
    for cat, ms in row["categories"].items():
        scope, pas, kind = cat.split("/")
        for key in (scope, pas, kind):
            out[key] += ms / row["op_ms"]
    return dict(out)


def verdict(r: dict[str, Any]) -> str:
    """The profile's conclusion, computed: where the time goes on the traced rows."""
    parts = []
    for row in (x for x in r["rows"] if "categories" in x and x["dtype"] == "float32"):
        s = shares(row)
        scope = max((k for k in s if k in (*SCOPES, "unscoped")), key=s.get)
        parts.append(f"{row['model']}: matrix products {100 * s.get('matmul', 0):.0f}% of operation time, "
                     f"everything else {100 * s.get('non-matmul', 0):.0f}%; the backward pass "
                     f"{100 * s.get('backward', 0):.0f}%; the largest scope is `{scope}` ({100 * s[scope]:.0f}%)")
    speed = {(x["model"], x["dtype"]): x["tokens_per_s"] for x in r["rows"] if x["devices"] == max(DEVICES)}
    gains = ", ".join(f"{m} {speed[(m, 'bfloat16')] / speed[(m, 'float32')]:.2f}x" for m in MODELS)
    return "; ".join(parts) + f". bfloat16 compute over float32 at {max(DEVICES)} devices: {gains}."


def readme_section(r: dict[str, Any]) -> str:
    speed_rows = "\n".join(md_row(x["model"], x["dtype"], x["devices"], f"{x['ms_per_step']:.1f}",
                                  fmt(x["tokens_per_s"]), x["load_before"]) for x in r["rows"])
    traced_rows = [x for x in r["rows"] if "categories" in x]
    scope_rows = "\n".join(
        md_row(x["model"], x["dtype"], f"{x['op_ms']:.1f}",
               *(f"{100 * shares(x).get(s, 0):.0f}%" for s in (*SCOPES, "unscoped", "backward", "matmul")))
        for x in traced_rows)
    top_rows = "\n".join(md_row(x["model"], o["op"], o["category"], f"`{o['shape']}`", f"{o['ms']:.2f}",
                                f"`{o['op_name'][-60:]}`")
                         for x in traced_rows if x["dtype"] == "float32" for o in x["top_ops"][:8])
    return render("profile", title=SECTION, m=r["machine"], r=r, speed_rows=speed_rows, scope_rows=scope_rows,
                  top_rows=top_rows, verdict=verdict(r))


def main(argv: list[str] | None = None) -> int:
    p = parser("where a training step's time goes")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # the per-device-count child
    args = p.parse_args(argv)
    if args.worker:
        from lm import parallel

        parallel.start_command()
        print(json.dumps(worker(args.worker)))
        return 0
    if readme_only(args.readme, SECTION, RESULTS, readme_section):
        return 0
    results = measure()
    publish(RESULTS, SECTION, results, readme_section)
    print(verdict(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
