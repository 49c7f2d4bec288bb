"""One engine at one thread count, timing training steps on request: the worker process of
bench/train.py's speed test.

`python bench/speed_worker.py ENGINE THREADS` with ENGINE `jax` (ours: the jitted step `lm.train`
runs, AdamW, clipping, donation, one XLA device per allowed core), `jax_1dev` (the same on one
device with every allowed thread: what the per-core split buys), `jax_paired` (two models of the
shape, as a student and its baseline, in one vmapped step: tokens/s is both arms'), `eager` (PyTorch
`transformers.LlamaForCausalLM` of the same shape, its faster attention of `sdpa` and `eager`)
or `compile` (the same under `torch.compile`). THREADS 1 pins the process to one core (ours: one
device; PyTorch: one thread); 2 gives it two. The thread count must be fixed before the framework
starts, hence one process per (engine, threads); the parent keeps all of them alive and sends
one JSON request a line, `{"model": "student"|"teacher", "batch": B, "steps": S}`, so rounds of
different engines alternate on the machine. A request first builds and warms the stepper for
its shape (compilation is not timed), then times S steps and answers `{"tokens_per_s": ...}`.
A request `{"peak": true}` answers the best float32 2048 x 2048 matmul rate in GFLOP/s.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VOCAB = 512
ARMS = {"jax_paired": 2}  # engines training several models in one step; tokens/s is their total
WARMUP = 3
MATMUL_N, MATMUL_REPEATS = 2048, 10


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def config(model: str) -> Any:
    from lm.model import preset

    return preset(model, vocab_size=VOCAB)


def tokens_for(cfg: Any, batch: int) -> Any:
    import numpy as np

    return np.random.default_rng(1).integers(0, VOCAB, (batch, cfg.context + 1)).astype(np.int32)


def jax_stepper(cfg: Any, tokens: Any, arms: int = 1) -> Callable[[], None]:
    """One training step of ours: the jitted step of `lm.trainer` with the cross-entropy loss; with
    `arms` 2, the same update vmapped over two stacked models (seeds 0 and 1), each with its own
    batch and optimiser state: paired arms trained together in one compiled step."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P

    from lm import parallel
    from lm.losses import LossConfig
    from lm.model import init_params
    from lm.objective import make_update
    from lm.trainer import OptimConfig, make_optimizer, make_step

    tx, _ = make_optimizer(OptimConfig(decay_steps=10_000, warmup=100))
    mesh = parallel.make_mesh()
    repl, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    batches = [{"x": t[:, :-1], "y": t[:, 1:], "m": np.ones(t[:, 1:].shape, np.float32)}
               for t in [tokens] + [np.roll(tokens, i, axis=0) for i in range(1, arms)]]
    models = [init_params(cfg, seed) for seed in range(arms)]
    if arms == 1:
        step = make_step(cfg, LossConfig(), tx, mesh)
        params, arrays = parallel.put(models[0], repl), jax.device_put(batches[0], data)
        opt = parallel.put(tx.init(params), repl)
    else:
        stack = lambda trees: jax.tree.map(lambda *xs: np.stack(xs), *trees)  # noqa: E731
        data = NamedSharding(mesh, P(None, *data.spec))  # arms first, each arm's batch split
        step = jax.jit(jax.vmap(make_update(cfg, LossConfig(), tx), in_axes=(0, 0, None, 0, None)),
                       in_shardings=(repl, repl, repl, data, repl), out_shardings=(repl, repl, repl),
                       donate_argnums=(0, 1))
        params, arrays = parallel.put(stack(models), repl), jax.device_put(stack(batches), data)
        opt = parallel.put(jax.vmap(tx.init)(params), repl)
    state = {"params": params, "opt": opt}

    def run() -> None:
        state["params"], state["opt"], losses = step(state["params"], state["opt"], {}, arrays, np.int32(0))
        losses[0].block_until_ready()
    return run


def torch_stepper(cfg: Any, tokens: Any, attn: str, compiled: bool) -> Callable[[], None]:
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads,
        max_position_embeddings=cfg.context, rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, mlp_bias=False,
        attn_implementation=attn))
    assert sum(p.numel() for p in model.parameters()) == cfg.n_params(), "not the same shape as ours"
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=2e-3, betas=(0.9, 0.99))
    x = torch.from_numpy(tokens[:, :-1].astype(np.int64))
    y = torch.from_numpy(tokens[:, 1:].astype(np.int64))

    def loss_of(x: Any, y: Any) -> Any:
        logits = model(input_ids=x).logits
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    forward = torch.compile(loss_of) if compiled else loss_of

    def run() -> None:
        forward(x, y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return run


def fastest_torch(cfg: Any, tokens: Any, compiled: bool) -> tuple[Callable[[], None], str]:
    """PyTorch's faster attention for this shape (a short timing of each)."""
    best = None
    for attn in ("sdpa",) if compiled else ("sdpa", "eager"):  # compiling both would double a long compile
        run = torch_stepper(cfg, tokens, attn, compiled)
        for _ in range(WARMUP):
            run()
        t = best_time(run, 3)
        if best is None or t < best[0]:
            best = (t, run, attn)
    return best[1], best[2]


def matmul_gflops(engine: str) -> float:
    import numpy as np

    a = np.random.default_rng(0).standard_normal((MATMUL_N, MATMUL_N), np.float32)
    if engine.startswith("jax"):
        import jax
        import jax.numpy as jnp

        x = jnp.asarray(a)
        f = jax.jit(lambda p, q: p @ q)
        t = best_time(lambda: f(x, x).block_until_ready(), MATMUL_REPEATS)
    else:
        import torch

        x = torch.from_numpy(a)
        t = best_time(lambda: torch.mm(x, x), MATMUL_REPEATS)
    return 2 * MATMUL_N ** 3 / t / 1e9


def main() -> int:
    engine, threads = sys.argv[1], int(sys.argv[2])
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
    if engine == "jax_1dev":  # ours on one XLA device with every allowed thread: the cost of sharding
        os.environ["SCARCE_LM_CPU_DEVICES"] = "1"
    if engine.startswith("jax"):
        from lm import parallel

        parallel.start_command()  # one device per allowed core, the compile cache: as lm.train
    else:
        import torch

        torch.set_num_threads(threads)
    steppers: dict[tuple[str, int], tuple[Callable[[], None], str]] = {}
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("peak"):
            print(json.dumps({"gflops": matmul_gflops(engine)}), flush=True)
            continue
        key = (req["model"], req["batch"])
        if key not in steppers:
            cfg = config(req["model"])
            tokens = tokens_for(cfg, req["batch"])
            if engine.startswith("jax"):
                steppers[key] = (jax_stepper(cfg, tokens, arms=ARMS.get(engine, 1)), "")
            else:
                steppers[key] = fastest_torch(cfg, tokens, engine == "compile")
            for _ in range(WARMUP):
                steppers[key][0]()
        run, attn = steppers[key]
        t = time.perf_counter()
        for _ in range(req["steps"]):
            run()
        seconds = time.perf_counter() - t
        cfg = config(req["model"])
        tokens = req["steps"] * req["batch"] * cfg.context * ARMS.get(engine, 1)  # every arm's
        print(json.dumps({"tokens_per_s": tokens / seconds, "attn": attn}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
