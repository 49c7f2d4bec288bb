"""Training losses: next-token cross-entropy and distillation,
`alpha * CE + (1 - alpha) * T^2 * KL(teacher_T || student_T)`.

* CE is the usual next-token cross-entropy on the hard labels, at temperature 1.
* `teacher_T` and `student_T` are the softmax of logits / T. The T^2 factor keeps the gradient of
  the soft term about as large as at T = 1 (Hinton et al. 2015): the gradient of KL at
  temperature T with respect to the logits shrinks as 1/T^2 for large T.
* `kl="reverse"` swaps the arguments: KL(student_T || teacher_T) (mode seeking).
* Top-k: the teacher is known only on its K most likely tokens (the cache stores their indices
  and log-probabilities at T). `tail="renorm"` renormalises both distributions over those K
  tokens and drops the rest; `tail="bucket"` keeps the rest of the mass as one extra outcome,
  so teacher and student both have K + 1 outcomes that sum to one. With K = vocabulary both
  equal the full KL.

Every function takes float logits [B, T, V] (or top-k [B, T, K]) and a mask [B, T] of target
weights and returns a scalar: the masked mean over tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lm.errors import UsageError

KL_KINDS = ("forward", "reverse")
TAILS = ("renorm", "bucket")
_TINY = 1e-12


@dataclass(frozen=True)
class LossConfig:
    """What a training step minimises. alpha 1 (the default) is plain cross-entropy."""

    alpha: float = 1.0
    temperature: float = 1.0
    kl: str = "forward"
    top_k: int = 0                 # 0: the teacher's full distribution
    tail: str = "bucket"

    def __post_init__(self) -> None:
        if self.kl not in KL_KINDS:
            raise UsageError(f"--kl must be one of {', '.join(KL_KINDS)}, not {self.kl!r}")
        if self.tail not in TAILS:
            raise UsageError(f"--tail must be one of {', '.join(TAILS)}, not {self.tail!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise UsageError(f"--alpha must be in [0, 1], not {self.alpha}")
        if self.temperature <= 0:
            raise UsageError(f"--temperature must be positive, not {self.temperature}")
        if self.top_k < 0:
            raise UsageError(f"--top-k must be at least 1, not {self.top_k}")

    @property
    def uses_teacher(self) -> bool:
        return self.alpha < 1.0


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Negative log-likelihood in nats of each target under float32 logits: [B, T]."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


class TopK(NamedTuple):
    """The teacher's K most likely tokens per position: ids and log-probabilities at temperature T."""

    indices: jax.Array   # [B, T, K] int
    logprobs: jax.Array  # [B, T, K] float (float16 in the cache), log softmax(logits / T)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    return masked_mean(token_nll(logits, targets), mask)


def topk_of(teacher_logits: jax.Array, k: int, temperature: float) -> TopK:
    """The teacher's top-k ids and their log-probabilities at `temperature` (full softmax)."""
    logp = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
    vals, idx = jax.lax.top_k(logp, k)
    return TopK(idx.astype(jnp.int32), vals)


def _kl(p_log: jax.Array, q_log: jax.Array) -> jax.Array:
    """sum p (log p - log q) over the last axis; outcomes with p = 0 add nothing."""
    p = jnp.exp(p_log)
    return jnp.sum(jnp.where(p > 0, p * (p_log - q_log), 0.0), axis=-1)


def kl_full(teacher_logits: jax.Array, student_logits: jax.Array, mask: jax.Array,
            temperature: float = 1.0, kind: str = "forward") -> jax.Array:
    """Masked mean of KL(teacher_T || student_T) per token (reverse: the arguments swapped)."""
    t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
    s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    per_token = _kl(t, s) if kind == "forward" else _kl(s, t)
    return masked_mean(per_token, mask)


def _rest_logmass(logp_topk: jax.Array) -> jax.Array:
    """log(1 - sum exp(logp_topk)): the log of the mass outside the K tokens, clipped at _TINY."""
    mass = jnp.sum(jnp.exp(logp_topk.astype(jnp.float32)), axis=-1, keepdims=True)
    return jnp.log(jnp.clip(1.0 - mass, _TINY, 1.0))


def kl_topk(top: TopK, student_logits: jax.Array, mask: jax.Array, temperature: float = 1.0,
            kind: str = "forward", tail: str = "bucket") -> jax.Array:
    """KL on the teacher's top-k tokens (module doc: renorm or bucket tail)."""
    s_all = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    s_k = jnp.take_along_axis(s_all, top.indices, axis=-1)
    t_k = top.logprobs.astype(jnp.float32)
    if tail == "renorm":
        t = jax.nn.log_softmax(t_k, axis=-1)
        s = jax.nn.log_softmax(s_k, axis=-1)
    else:
        # the student's mass outside the teacher's K tokens, from its full distribution: a
        # logsumexp over the vocabulary with the K tokens masked out (no 1 - sum rounding);
        # a large finite fill instead of -inf keeps gradients finite when K = vocabulary
        vocab = student_logits.shape[-1]
        flat = top.indices.reshape(-1, top.indices.shape[-1])
        hit = jax.vmap(lambda i: jnp.zeros((vocab,), bool).at[i].set(True))(flat).reshape(s_all.shape)
        s_rest = jax.nn.logsumexp(jnp.where(hit, -1e30, s_all), axis=-1, keepdims=True)
        s_rest = jnp.maximum(s_rest, jnp.log(_TINY))
        t = jnp.concatenate([t_k, _rest_logmass(t_k)], axis=-1)
        s = jnp.concatenate([s_k, s_rest], axis=-1)
    per_token = _kl(t, s) if kind == "forward" else _kl(s, t)
    return masked_mean(per_token, mask)


def distill_loss(student_logits: jax.Array, targets: jax.Array, mask: jax.Array, *,
                 alpha: float, temperature: float, kind: str = "forward",
                 teacher_logits: jax.Array | None = None, teacher_topk: TopK | None = None,
                 tail: str = "bucket") -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss, {"ce", "kl"}): alpha * CE + (1 - alpha) * T^2 * KL; CE only without a teacher."""
    ce = cross_entropy(student_logits, targets, mask)
    if teacher_logits is None and teacher_topk is None:
        return ce, {"ce": ce, "kl": jnp.zeros(())}
    if teacher_topk is not None:
        kl = kl_topk(teacher_topk, student_logits, mask, temperature, kind, tail)
    else:
        kl = kl_full(jax.lax.stop_gradient(teacher_logits), student_logits, mask, temperature, kind)
    loss = alpha * ce + (1.0 - alpha) * temperature ** 2 * kl
    return loss, {"ce": ce, "kl": kl}
