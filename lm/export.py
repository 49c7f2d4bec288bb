"""`python -m lm.export RUN --format hf|int8 --out DIR [--checkpoint best|last] [--float-embeddings]`

* `hf`: a Hugging Face `LlamaForCausalLM` folder: `config.json`, `generation_config.json`,
  `model.safetensors` (float32), the tokenizer as `tokenizer.json` + `tokenizer_config.json`
  (what `AutoTokenizer` reads) and our `tokenizer.model`. transformers loads it offline with
  `AutoModelForCausalLM.from_pretrained(DIR)`; no torch is needed to write it.
* `int8`: weight-only int8 with per-channel scales (`lm.quant`) in `model.safetensors`, read by
  the project's own Flax path (`lm.evaluate`, `lm.generate`) with the int8 weights dequantised
  inside the jitted model. The embedding is quantised too unless `--float-embeddings` (measured
  in bench/deploy.py: see bench/README.md).

Both folders hold `export.json`: the format, the source run and checkpoint, the corpus, the model
shape and the sha256 of `model.safetensors`, which loading checks, so a corrupt or truncated
export stops with one line instead of producing numbers. Exit codes: 0 ok, 1 failure, 2 usage.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lm.errors import CheckpointError, UsageError, run_cli
from lm.loader import FlaxModel, load_model
from lm.model import ModelConfig
from lm.quant import dequantize, flatten, quantize_params, unflatten
from lm.tokenizer import MODEL_FILE, Tokenizer

EXPORT_FILE, WEIGHTS = "export.json", "model.safetensors"
FORMATS = ("hf", "int8")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def _provenance(model: FlaxModel, fmt: str, weights: Path, **extra: Any) -> dict[str, Any]:
    return {"format": fmt, "source": model.info.get("path"), "checkpoint": model.info.get("checkpoint"),
            "corpus": model.info.get("corpus", {}), "model": model.cfg.to_dict(),
            "tokenizer": model.tokenizer.describe(), "weights": WEIGHTS, "sha256": _sha256(weights),
            "bytes": weights.stat().st_size, **extra}


def _staging(out: Path) -> Path:
    """Write into OUT.partial and rename at the end, so OUT is complete or absent."""
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _publish(tmp: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def export_hf(model: FlaxModel, out: Path) -> Path:
    from safetensors.numpy import save_file

    from lm.hf_format import fast_tokenizer, hf_state_dict, llama_config_dict

    tmp = _staging(out)
    eos = model.tokenizer.eos_id
    save_file(hf_state_dict(jax.tree.map(np.asarray, model.params), model.cfg), str(tmp / WEIGHTS), metadata={"format": "pt"})
    _write_json(tmp / "config.json", llama_config_dict(model.cfg, eos))
    _write_json(tmp / "generation_config.json", {"bos_token_id": eos, "eos_token_id": eos, "do_sample": True,
                                                 "temperature": 0.8, "max_length": model.cfg.context})
    fast_tokenizer(model.tokenizer).save_pretrained(str(tmp))
    model.tokenizer.save(tmp / MODEL_FILE)
    _write_json(tmp / EXPORT_FILE, _provenance(model, "hf", tmp / WEIGHTS))
    _publish(tmp, out)
    return out


def export_int8(model: FlaxModel, out: Path, embeddings: bool = True) -> Path:
    from safetensors.numpy import save_file

    tmp = _staging(out)
    tree = quantize_params(jax.tree.map(np.asarray, model.params), embeddings=embeddings)
    save_file({k: np.ascontiguousarray(v) for k, v in flatten(tree).items()}, str(tmp / WEIGHTS),
              metadata={"format": "scarce-lm-int8"})
    model.tokenizer.save(tmp / MODEL_FILE)
    _write_json(tmp / EXPORT_FILE, _provenance(model, "int8", tmp / WEIGHTS, int8_embeddings=embeddings,
                                               scales="per output channel, symmetric, max |w| / 127"))
    _publish(tmp, out)
    return out


# ---- loading -------------------------------------------------------------------------------
def read_export(path: Path, fmt: str) -> dict[str, Any]:
    """export.json, with the weights checked against their sha256."""
    try:
        info = json.loads((path / EXPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path / EXPORT_FILE} cannot be read ({exc}): not a complete export") from exc
    if info.get("format") != fmt:
        raise CheckpointError(f"{path / EXPORT_FILE}: format {info.get('format')!r}, expected {fmt!r}")
    weights = path / info.get("weights", WEIGHTS)
    if not weights.is_file():
        raise CheckpointError(f"export {path}: {weights.name} is missing")
    if weights.stat().st_size != info.get("bytes") or _sha256(weights) != info.get("sha256"):
        raise CheckpointError(f"export {path}: {weights.name} does not match the sha256 in {EXPORT_FILE} "
                              "(corrupt or truncated): export it again")
    return info


def _export_format(path: Path) -> str | None:
    try:
        return json.loads((path / EXPORT_FILE).read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError):
        return None


def load_int8(path: Path, checkpoint: str = "best") -> FlaxModel:
    import jax.numpy as jnp
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    info = read_export(path, "int8")
    try:
        flat = load_file(str(path / WEIGHTS))
        cfg = ModelConfig(**info["model"])
    except (SafetensorError, OSError, TypeError, KeyError) as exc:
        raise CheckpointError(f"export {path}: cannot read {WEIGHTS} ({exc})") from exc
    tree = unflatten({k: jnp.asarray(v) for k, v in flat.items()})
    tok = Tokenizer.load(path / MODEL_FILE)
    meta = {"format": "int8", "path": str(path), "checkpoint": info.get("checkpoint"), "corpus": info.get("corpus", {}),
            "params": cfg.n_params(), "model": info["model"]}
    return FlaxModel(cfg, tree, tok, meta, prepare=dequantize)


def load_hf(path: Path, checkpoint: str = "best") -> Any:
    from lm.hf_teacher import HFTeacher

    info = read_export(path, "hf") if (path / EXPORT_FILE).is_file() else {}
    model = HFTeacher(path)
    model.info["corpus"] = info.get("corpus", {})
    return model


def load_export(path: Path, checkpoint: str = "best") -> Any:
    """An `int8` export, or a Hugging Face folder (ours, checked against export.json, or any)."""
    return load_int8(path) if _export_format(path) == "int8" else load_hf(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lm.export", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run folder (lm.train, lm.distill's models/NAME, lm.prune)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="the export folder (replaced when it exists)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--float-embeddings", action="store_true", help="int8: keep the embedding (and tied output layer) float32")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = load_model(args.run, args.checkpoint)
    if not isinstance(model, FlaxModel) or model.info.get("format") != "run":
        raise UsageError(f"{args.run}: export needs a float run folder (lm.train, lm.distill, lm.prune)")
    out = Path(args.out)
    if args.format == "hf":
        export_hf(model, out)
    else:
        export_int8(model, out, embeddings=not args.float_embeddings)
    info = json.loads((out / EXPORT_FILE).read_text(encoding="utf-8"))
    print(f"{args.format} export of {args.run} ({info['checkpoint']}): {out} ({info['bytes']:,} bytes of weights)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
