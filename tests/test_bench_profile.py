"""bench/profile_step.py groups a compiled step's operations by the model's named scopes: the
scopes must reach the compiled step (a renamed or dropped scope would silently fold its time
into `unscoped`), and the grouping must read the innermost scope and the backward pass."""
from __future__ import annotations

from bench.profile_step import SCOPES, category, operations


def test_category_reads_the_innermost_scope_and_the_pass() -> None:
    op = {"op_name": "jit(step)/transpose(jvp(attention))/attend/bqhd,bkhd->bhqk/dot_general", "matmul": True}
    assert category(op) == ("attend", "backward", "matmul")
    op = {"op_name": "jit(step)/jvp(mlp)/jit(silu)/logistic", "matmul": False}
    assert category(op) == ("mlp", "forward", "non-matmul")
    assert category({"op_name": "jit(step)/optimizer/mul", "matmul": False})[0] == "optimizer"
    # a scope's name inside another word is not that scope
    assert category({"op_name": "jit(step)/normalize_thing/add", "matmul": False})[0] == "unscoped"


def test_every_scope_reaches_the_compiled_step() -> None:
    import jax
    import numpy as np

    from lm import parallel
    from lm.losses import LossConfig
    from lm.model import init_params, preset
    from lm.objective import make_step
    from lm.trainer import OptimConfig, make_optimizer

    cfg = preset("tiny", vocab_size=64)
    tx, _ = make_optimizer(OptimConfig(decay_steps=10))
    mesh = parallel.make_mesh()
    step = make_step(cfg, LossConfig(), tx, mesh)
    params = init_params(cfg, 0)
    tokens = np.zeros((len(jax.devices()), cfg.context + 1), np.int32)
    batch = {"x": tokens[:, :-1], "y": tokens[:, 1:], "m": np.ones((len(tokens), cfg.context), np.float32)}
    hlo = step.lower(params, tx.init(params), {}, batch, np.int32(0)).compile().as_text()
    found = {category(op)[0] for op in operations(hlo).values()}
    assert set(SCOPES) <= found, f"scopes missing from the compiled step: {set(SCOPES) - found}"
    assert {category(op)[1] for op in operations(hlo).values()} == {"forward", "backward"}
