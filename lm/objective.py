"""What a training step minimises, and the one jitted step that minimises it.

An objective is one of three (`objective_for` picks it from a `Teacher` and a `LossConfig`):

* `CrossEntropy`: the labels alone;
* `LiveTeacher`: CE plus KL to a Flax teacher whose forward runs inside the step on the clean
  inputs (`batch["xc"]`; noised text is the student's input, its clean parent the teacher's);
* `CachedTeacher`: CE plus KL to the teacher's top-k outputs read from a cache (any object with
  `prepare`, `fill`, `lookup` and `flush`: `lm.distill.teacher_cache`), filled before the loop.

Each says which arrays a batch carries for it (`arrays`), what the step receives besides the
parameters (`extra`), which soft targets the loss reads inside the step (`soft_targets`), and
what must happen before training and before a checkpoint (`prepare`, `before_save`). `make_step`
is the update every objective shares, so a new objective never means a new step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lm import parallel
from lm.data import Batch, Batches, Packed, Pool
from lm.losses import LossConfig, TopK, distill_loss, token_nll, topk_of
from lm.model import ModelConfig, make_apply, make_train_apply


class SoftTargetCache(Protocol):
    def prepare(self, pools: list[Pool]) -> None: ...
    def fill(self, pools: list[Pool], rows: dict[int, np.ndarray], width: int, quiet: bool = True) -> None: ...
    def lookup(self, batch: Batch, pools: list[Pool]) -> TopK: ...
    def flush(self) -> None: ...


@dataclass(frozen=True)
class Teacher:
    """Where soft targets come from: a Flax model run inside the step, or a top-k cache."""

    cfg: ModelConfig | None = None
    params: Any = None
    cache: SoftTargetCache | None = None


class Objective:
    """The base: cross-entropy on the labels, nothing else in a batch, nothing to prepare."""

    name = "ce"
    alpha_of = staticmethod(lambda loss: 1.0)

    def arrays(self, b: Batch, pools: list[Pool]) -> dict[str, np.ndarray]:
        return {}

    def extra(self, sharding: Any) -> dict[str, Any]:
        return {}

    def soft_targets(self, loss: LossConfig, extra: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        return {}

    def prepare(self, data: Batches, steps: int, batch: int, quiet: bool) -> None:
        pass

    def before_save(self) -> None:
        pass


class CrossEntropy(Objective):
    """The labels alone (also a loss whose teacher weight is zero)."""


@dataclass(frozen=True)
class LiveTeacher(Objective):
    """KL to a Flax teacher's forward on the clean inputs, inside the step."""

    cfg: ModelConfig
    params: Any
    name = "live"
    alpha_of = staticmethod(lambda loss: loss.alpha)

    def arrays(self, b: Batch, pools: list[Pool]) -> dict[str, np.ndarray]:
        return {"xc": b.clean_inputs}

    def extra(self, sharding: Any) -> dict[str, Any]:
        return {"teacher": parallel.put(self.params, sharding)}

    def soft_targets(self, loss: LossConfig, extra: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        logits = jax.lax.stop_gradient(make_apply(self.cfg)(extra["teacher"], b["xc"]))
        if loss.top_k:
            return {"teacher_topk": topk_of(logits, loss.top_k, loss.temperature)}
        return {"teacher_logits": logits}


@dataclass(frozen=True)
class CachedTeacher(Objective):
    """KL to the teacher's top-k outputs from a cache, filled for every sequence the run reads."""

    cache: SoftTargetCache
    name = "cached"
    alpha_of = staticmethod(lambda loss: loss.alpha)

    def arrays(self, b: Batch, pools: list[Pool]) -> dict[str, np.ndarray]:
        top = self.cache.lookup(b, pools)
        return {"idx": top.indices, "vals": top.logprobs}

    def soft_targets(self, loss: LossConfig, extra: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        return {"teacher_topk": TopK(b["idx"], b["vals"])}

    def prepare(self, data: Batches, steps: int, batch: int, quiet: bool) -> None:
        self.cache.prepare(data.pools)  # teacher outputs for every sequence the run will read, in full batches
        self.cache.fill(data.pools, data.plan(steps), batch, quiet)

    def before_save(self) -> None:
        self.cache.flush()  # stored rows and their flags before the checkpoint that relies on them


def objective_for(teacher: Teacher | None, loss: LossConfig) -> Objective:
    if teacher is None or not loss.uses_teacher:
        return CrossEntropy()
    if teacher.cache is not None:
        return CachedTeacher(teacher.cache)
    return LiveTeacher(teacher.cfg, teacher.params)


def make_step(cfg: ModelConfig, loss: LossConfig, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh,
              objective: Objective = CrossEntropy(), masked: bool = False):
    """`make_update` jitted on the mesh: parameters and optimiser state replicated and donated, the
    batch split over the devices; XLA all-reduces the gradients."""
    repl, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    return jax.jit(make_update(cfg, loss, tx, objective, masked), in_shardings=(repl, repl, repl, data, repl),
                   out_shardings=(repl, repl, repl), donate_argnums=(0, 1))


def make_update(cfg: ModelConfig, loss: LossConfig, tx: optax.GradientTransformation,
                objective: Objective = CrossEntropy(), masked: bool = False):
    """The update `(params, opt_state, extra, batch, step) -> (params, opt_state, (loss, ce, kl))`,
    not jitted (bench/speed_worker.py vmaps it over paired arms); `batch` has "x", "y", "m" plus
    the objective's arrays. Dropout (`cfg.dropout`) draws from `extra["key"]` folded with the step
    number; `masked`: the parameters are multiplied by `extra["keep"]` after the update (pruned
    weights stay zero)."""
    apply = make_train_apply(cfg)
    alpha = objective.alpha_of(loss)

    def loss_fn(params, extra, b, step):
        key = jax.random.fold_in(jax.random.wrap_key_data(extra["key"]), step) if cfg.dropout else None
        logits = apply(params, b["x"], key)
        with jax.named_scope("loss"):  # the names `bench/profile_step.py` groups operations by
            value, parts = distill_loss(logits, b["y"], b["m"], alpha=alpha, temperature=loss.temperature,
                                        kind=loss.kl, tail=loss.tail, **objective.soft_targets(loss, extra, b))
        return value, (parts["ce"], parts["kl"])

    def step(params, opt_state, extra, b, step_no):
        (value, (ce, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, extra, b, step_no)
        with jax.named_scope("optimizer"):
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
        if masked:
            params = jax.tree.map(lambda p, k: p * k, params, extra["keep"])
        return params, opt_state, (value, ce, kl)
    return step


def make_eval_step(cfg: ModelConfig, mesh: jax.sharding.Mesh):
    apply = make_apply(cfg)

    def nll_sum(params, x, y, m):
        return jnp.sum(token_nll(apply(params, x), y) * m)

    repl, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    return jax.jit(nll_sum, in_shardings=(repl, data, data, data), out_shardings=repl)


def block_eval(eval_step, params, packed: Packed, batch: int) -> tuple[float, float]:
    """(sum of NLL in nats, tokens scored) over packed sequences, each scored on its own."""
    total, count = 0.0, 0.0
    for i in range(0, len(packed), batch):
        toks, mask = packed.tokens[i:i + batch], packed.mask[i:i + batch]
        if len(toks) < batch:  # pad to a full, evenly sharded batch; padding weighs nothing
            pad = batch - len(toks)
            toks = np.concatenate([toks, np.zeros((pad, toks.shape[1]), toks.dtype)])
            mask = np.concatenate([mask, np.zeros((pad, mask.shape[1]), mask.dtype)])
        total += float(eval_step(params, toks[:, :-1], toks[:, 1:], mask))
        count += float(mask.sum())
    return total, count
