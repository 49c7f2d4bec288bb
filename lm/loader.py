"""Load a trained model for scoring and sampling, whatever form MODEL takes.

`load_model(PATH)` looks at PATH and picks a loader from `LOADERS`: a run folder made by
`lm.train` or `lm.distill` (run.json + tokenizer.model + Orbax checkpoints), or an export made
by `lm.ship.export` (`int8`, read into our Flax model; `gguf` on llama.cpp and `onnx` on ONNX
Runtime: `lm.runtimes`; `hf`, or any Hugging Face causal LM folder, read by transformers on
PyTorch: `lm.hf_model`). An export's `export.json` holds the
sha256 of its weights, checked on loading, so a corrupt or truncated export stops with one line.
Each returns an object with this small interface:

* `tokenizer`: an `lm.tokenizer.Tokenizer` (encode, decode, eos_id);
* `context`: the longest input it scores at once;
* `info`: a dict for reports (`corpus` with `name`, `version`, `path` when known);
* `nll(inputs, targets)`: [B, T] int32 each -> [B, T] float32 nats of each target token;
* `next_logits(tokens)`: a 1-D prefix (at most `context` long) -> [vocab] float32 logits;
* `decoder()`: an object with `start(tokens)` and `step(token)` returning next-token logits,
  which keeps a key/value cache between calls (`lm.generate`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from common.files import read_json
from lm import parallel
from lm.decode import CachedDecoder, make_runner
from lm.checkpoint import BEST_DIR, RESUME_DIR, Checkpoints, verify
from lm.errors import CheckpointError, UsageError, first_line
from lm.hf_model import HFModel
from lm.losses import token_nll
from lm.model import ModelConfig, abstract_params, make_apply
from lm.quant import dequantize, unflatten
from lm.runtimes import EXPORT_FILE, NATIVE, WEIGHTS, export_format, load_native, read_export
from lm.scoring import ScoredModel
from lm.tokenizer import MODEL_FILE, Tokenizer


class LanguageModel(ScoredModel, Protocol):
    """What scoring reads (`lm.scoring.ScoredModel`), and what sampling needs besides."""

    def next_logits(self, tokens: np.ndarray) -> np.ndarray: ...

    def decoder(self) -> Any: ...


class FlaxModel:
    """Our Llama with its parameters; both entry points are jitted once per input shape."""

    def __init__(self, cfg: ModelConfig, params: dict[str, Any], tokenizer: Tokenizer, info: dict[str, Any],
                 prepare: Callable[[Any], Any] = lambda p: p):
        # `prepare` maps stored parameters to float ones inside the jitted functions (int8 exports)
        self.cfg, self.params, self.tokenizer, self.info, self.prepare = cfg, params, tokenizer, info, prepare
        self.context = cfg.context
        apply = make_apply(cfg)
        self._nll = jax.jit(lambda p, x, y: token_nll(apply(prepare(p), x), y))
        # scoring batches are split over every local device (one per core on a CPU), as training is
        self._mesh = parallel.make_mesh()
        self._rows = parallel.batch_sharded(self._mesh)
        self._params = None
        self._runner = None
        # a fixed [1, context] buffer: one compilation serves every prefix length
        self._logits = jax.jit(lambda p, x, i: apply(prepare(p), x)[0, i])

    def nll(self, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        x, y = np.asarray(inputs, np.int32), np.asarray(targets, np.int32)
        if len(x) % self._mesh.devices.size:
            return np.asarray(self._nll(self.params, jnp.asarray(x), jnp.asarray(y)))
        if self._params is None:
            self._params = parallel.put(self.params, parallel.replicated(self._mesh))
        return np.asarray(self._nll(self._params, *parallel.put((x, y), self._rows)))

    def decoder(self) -> CachedDecoder:
        """Key/value-cached generation (lm.decode)."""
        if self._runner is None:
            self._runner = make_runner(self.cfg, self.prepare)
        return CachedDecoder(self.cfg, self.params, self._runner)

    def next_logits(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens, np.int32)[-self.context:]
        buf = np.full((1, self.context), self.tokenizer.eos_id, np.int32)
        buf[0, :len(tokens)] = tokens  # causal: what follows the prefix cannot change its logits
        return np.asarray(self._logits(self.params, buf, len(tokens) - 1))


def _match(abstract: Any, restored: Any, where: str) -> Any:
    """Restored arrays in the abstract tree's structure (Orbax gives dict keys back as strings)."""
    if isinstance(abstract, dict):
        if not isinstance(restored, dict):
            raise CheckpointError(f"checkpoint {where} does not hold this model's parameters")
        out = {}
        for k, v in abstract.items():
            if str(k) not in restored and k not in restored:
                raise CheckpointError(f"checkpoint {where} lacks parameter {k!r}: not this model's checkpoint")
            out[k] = _match(v, restored.get(str(k), restored.get(k)), where)
        return out
    arr = np.asarray(restored)
    if arr.shape != tuple(abstract.shape):
        raise CheckpointError(f"checkpoint {where} has a parameter of shape {arr.shape}, the model wants {abstract.shape}")
    return jnp.asarray(arr, abstract.dtype)


def is_run_dir(path: Path) -> bool:
    return (path / "run.json").is_file()


def load_run_dir(path: Path, checkpoint: str = "best") -> FlaxModel:
    try:
        info = read_json(path / "run.json")
        cfg = ModelConfig(**info["model"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path / 'run.json'} is not a valid run description ({exc})") from exc
    tokenizer = Tokenizer.load(path / MODEL_FILE)
    tokenizer.model_type = tokenizer.model_type or info.get("tokenizer", {}).get("type")
    ckpts = Checkpoints(path, read_only=True)
    which = {"best": BEST_DIR, "last": RESUME_DIR}.get(checkpoint)
    if which is None:
        raise UsageError(f"--checkpoint must be best or last, not {checkpoint!r}")
    if which == BEST_DIR and ckpts.latest_step(BEST_DIR) is None:
        which = RESUME_DIR  # a run stopped before its first evaluation: use its last state
    step = ckpts.latest_step(which)
    if step is None:
        raise CheckpointError(f"no checkpoint in {path / which}: train first (python -m lm.train ... --out {path})")
    folder = path / which / str(step)
    verify(folder)
    # restore only the parameters, onto this process's first device, whatever the mesh that
    # saved them (a run trained on two devices loads on one)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = {"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                                     abstract_params(cfg))}
    try:
        restored = ocp.PyTreeCheckpointer().restore(
            (folder / "state").resolve(), args=ocp.args.PyTreeRestore(
                item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                partial_restore=True))
    except Exception as exc:  # a damaged folder surfaces as many exception types
        msg = first_line(exc)
        raise CheckpointError(f"checkpoint {folder} is corrupt or incomplete ({type(exc).__name__}: {msg})") from exc
    params = _match(abstract_params(cfg), restored.get("params") if isinstance(restored, dict) else None, str(folder))
    info = {"format": "run", "path": str(path), "checkpoint": f"{which}/{step}", "step": step,
            "corpus": info.get("corpus", {}), "params": info.get("params"), "model": info["model"]}
    return FlaxModel(cfg, params, tokenizer, info)


# ---- exports (written by lm.ship.export) ----------------------------------------------------
def is_export(path: Path) -> bool:
    """An `lm.ship.export` folder (export.json) or any Hugging Face model folder with safetensors."""
    return (path / EXPORT_FILE).is_file() or ((path / "config.json").is_file() and any(path.glob("*.safetensors")))


def load_int8(path: Path, checkpoint: str = "best") -> FlaxModel:
    """An `int8` export in our Flax model; the weights stay int8, dequantised inside the jit."""
    from safetensors import SafetensorError  # only when an export is read
    from safetensors.numpy import load_file

    info = read_export(path, "int8")
    try:
        flat = load_file(str(path / WEIGHTS))
        cfg = ModelConfig(**info["model"])
    except (SafetensorError, OSError, TypeError, KeyError) as exc:
        raise CheckpointError(f"export {path}: cannot read {WEIGHTS} ({first_line(exc)})") from exc
    tree = unflatten({k: jnp.asarray(v) for k, v in flat.items()})
    tok = Tokenizer.load(path / MODEL_FILE)
    meta = {"format": "int8", "path": str(path), "checkpoint": info.get("checkpoint"), "corpus": info.get("corpus", {}),
            "params": cfg.n_params(), "model": info["model"]}
    return FlaxModel(cfg, tree, tok, meta, prepare=dequantize)


def load_hf(path: Path, checkpoint: str = "best") -> HFModel:
    """A Hugging Face folder on transformers: an `hf` export (checked against export.json) or any."""
    info = read_export(path, "hf") if (path / EXPORT_FILE).is_file() else {}
    model = HFModel(path)
    model.info["corpus"] = info.get("corpus", {})
    return model


def load_export(path: Path, checkpoint: str = "best") -> LanguageModel:
    """An `int8` export in Flax, a `gguf` or `onnx` one on its runtime (`lm.runtimes`), or a
    Hugging Face folder (ours, checked against export.json, or any)."""
    fmt = export_format(path)
    return load_int8(path) if fmt == "int8" else load_native(path) if fmt in NATIVE else load_hf(path)


LOADERS: list[tuple[Callable[[Path], bool], Callable[..., LanguageModel]]] = [
    (is_run_dir, load_run_dir), (is_export, load_export)]


def check_finite(model: LanguageModel, where: Path) -> None:
    """Refuse a Flax model with a NaN or infinite weight (a checkpoint loaded unchecked, without
    checksums.json, or saved from a diverged state): it would score NaN, never a number."""
    if not isinstance(model, FlaxModel):
        return  # transformers' weights: the export's sha256 is their check
    for path, leaf in jax.tree_util.tree_leaves_with_path(model.params):
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
            raise CheckpointError(f"checkpoint {where / str(model.info.get('checkpoint') or '')} holds non-finite "
                                  f"weights (NaN or inf) in {name}: restore the run from a backup or train again")


def load_model(path: str | Path, checkpoint: str = "best") -> LanguageModel:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"model {p} does not exist")
    for detect, load in LOADERS:
        if detect(p):
            model = load(p, checkpoint)
            check_finite(model, p)  # every loader's model: the one place weights are checked
            return model
    raise CheckpointError(f"{p} is not a model: expected a run folder with run.json (python -m lm.train --out {p}) "
                          "or an export (python -m lm.ship.export)")
