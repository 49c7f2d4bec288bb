"""Weight-only int8 with per-channel scales.

Every matrix is stored as int8 `q` plus one float32 scale per output channel (symmetric,
`scale = max |w| / 127` over the channel, `w ~ q * scale`): a kernel `[in, out]` has a scale
per output column; the embedding `[vocab, dim]` one per token row, which is also its output
channel when the embedding is tied to the output layer. Norm weights stay float32. Matrices are
dequantised inside the jitted model (`dequantize`), so the parameters stay int8 in memory.

In a parameter tree a quantised matrix is the dict `{"q": int8 array, "scale": float32 array}`
where the float matrix was. `lm.ship.export` writes int8 exports (`quantize_params`, `flatten`);
`lm.loader` reads them back (`unflatten`, `dequantize`).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

QKEYS = frozenset({"q", "scale"})


def quantize_matrix(w: np.ndarray, axis: int) -> dict[str, np.ndarray]:
    """int8 values and float32 scales along `axis` (the output-channel axis)."""
    w = np.asarray(w, np.float32)
    reduce = 1 - axis  # 2-D: the other axis
    scale = np.max(np.abs(w), axis=reduce, keepdims=True) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return {"q": q, "scale": scale}  # scale keeps its axis: [1, out] or [vocab, 1]


def quantize_params(params: dict[str, Any], embeddings: bool = True) -> dict[str, Any]:
    """The tree with every kernel (and the embedding when `embeddings`) int8 per channel."""
    def walk(tree: Any, name: str) -> Any:
        if isinstance(tree, dict):
            return {k: walk(v, str(k)) for k, v in tree.items()}
        arr = np.asarray(tree)
        if name == "kernel":
            return quantize_matrix(arr, axis=1)
        if name == "embedding" and embeddings:
            return quantize_matrix(arr, axis=0)
        return arr
    return walk(params, "")


def is_quantized(tree: Any) -> bool:
    return isinstance(tree, dict) and set(tree) == QKEYS


def dequantize(tree: Any) -> Any:
    """Float32 parameters from a (partly) quantised tree; works inside jax.jit."""
    if is_quantized(tree):
        return tree["q"].astype(jnp.float32) * tree["scale"]
    if isinstance(tree, dict):
        return {k: dequantize(v) for k, v in tree.items()}
    return tree


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Dotted names -> arrays (layer numbers become name parts)."""
    out: dict[str, np.ndarray] = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "."))
        else:
            out[name] = np.asarray(v)
    return out


def unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    """The inverse of `flatten`; numeric parts become int keys, as in the model's tree."""
    tree: dict[Any, Any] = {}
    for name, arr in flat.items():
        node = tree
        parts = [int(p) if p.isdigit() else p for p in name.split(".")]
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = arr
    return tree


def nbytes(tree: Any) -> int:
    return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree)))
