"""`python -m lm.ship.export RUN --format hf|int8|gguf|onnx --out DIR [--quant Q] [--checkpoint best|last] [--float-embeddings] [--force]`

* `hf`: a Hugging Face `LlamaForCausalLM` folder: `config.json`, `generation_config.json`,
  `model.safetensors` (float32), the tokenizer as `tokenizer.json` + `tokenizer_config.json`
  (what `AutoTokenizer` reads), our `tokenizer.model` and a model card, `README.md`
  (`lm.ship.model_card`: Hub front matter, test bits per character when recorded, usage).
  transformers loads it offline with `AutoModelForCausalLM.from_pretrained(DIR)`; no torch is
  needed to write it.
* `int8`: weight-only int8 with per-channel scales (`lm.quant`) in `model.safetensors`, read by
  the project's own Flax path (`lm.evaluate`, `lm.generate`) with the int8 weights dequantised
  inside the jitted model. The embedding is quantised too unless `--float-embeddings` (measured
  in bench/deploy.py: see bench/README.md).
* `gguf` (`--quant f32|f16|q8_0`, default q8_0): `model.gguf` for llama.cpp, weights,
  hyper-parameters and tokenizer in its metadata (`lm.ship.gguf_format`), and a model card
  with the llama.cpp command that runs it.
* `onnx` (`--quant f32|int8`, default f32): `model.onnx`, the forward with a key/value cache
  (`lm.ship.onnx_format`), for ONNX Runtime; int8 by ONNX Runtime's own dynamic quantisation.

Every folder holds `export.json`: the format, the source run and checkpoint, the corpus, the
model shape and the sha256 of its weights file, which loading (`lm.loader`) checks, so a corrupt or
truncated export stops with one line instead of producing numbers.

OUT is replaced only when it is absent, empty or an earlier export (it holds `export.json`);
any other folder needs `--force`, and the run folder, a folder holding it or its checkpoints,
a folder holding any run (`run.json`) or any corpus snapshot (`common.snapshot_format`: a
corpus folder's `LATEST` or `HISTORY`, a version's `manifest.json`) is refused even then
(`check_out`), so an export never deletes what it did not write. Exit codes: 0 ok, 1 failure
(missing or corrupt checkpoint), 2 usage (including a refused OUT).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np

from common.files import read_json, sha256_file, write_json
from common.snapshot_format import LATEST, MANIFEST
from lm.errors import UsageError, run_cli
from lm.loader import EXPORT_FILE, WEIGHTS, FlaxModel, load_model
from lm.quant import flatten, quantize_params
from lm.runtimes import export_format
from lm.ship.gguf_format import QUANTS as GGUF_QUANTS
from lm.ship.onnx_format import QUANTS as ONNX_QUANTS
from lm.tokenizer import MODEL_FILE

FORMATS = ("hf", "int8", "gguf", "onnx")
GGUF, ONNX = "model.gguf", "model.onnx"
CARD = "README.md"  # every export's model card but int8's
RUN_STATE = ("checkpoints", "best", "models")  # a run's own folders: never an export's home



def check_place(out: Path, run: Path, doing: str = "exporting") -> None:
    """Refuse (UsageError) an OUT that is the run, holds it, lies in its state folders or is a
    file: what export and `lm.ship.prune` refuse whatever OUT holds."""
    o, r = out.resolve(), run.resolve()
    if o == r or o in r.parents:
        raise UsageError(f"--out {out} is the run folder {run} or holds it: {doing} there would delete the run; "
                         "choose another folder")
    if r in o.parents and o.relative_to(r).parts[0] in RUN_STATE:
        raise UsageError(f"--out {out} is inside the run's own {o.relative_to(r).parts[0]}/ folder: choose another folder")
    if o.exists() and not o.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder: choose another path")


def check_out(out: Path, run: Path, force: bool = False) -> None:
    """Refuse (UsageError) an OUT whose replacement would delete what the export did not write."""
    check_place(out, run)
    o = out.resolve()
    if not o.is_dir() or not any(o.iterdir()):
        return
    if not force and export_format(o) not in FORMATS:  # an earlier export of ours
        raise UsageError(f"--out {out} is not empty and not an earlier export (no {EXPORT_FILE}): refusing to "
                         "replace it; give --force to replace it, or choose another folder")
    found = next(irreplaceable(o), None)  # an export.json does not vouch for what else the folder holds
    if found is not None:
        what, held = found
        raise UsageError(f"--out {out} {'is' if held == o else 'holds'} {what} ({held}): refusing to replace it, "
                         "even with --force; choose another folder")


SNAPSHOT_MARKS = (LATEST, "HISTORY")  # a corpus folder's files (pipelines.snapshot)


def irreplaceable(folder: Path) -> Iterator[tuple[str, Path]]:
    """(what, where) for each run (`run.json`) and corpus snapshot (a corpus folder's LATEST or
    HISTORY, a version's manifest.json listing shards) in `folder` or under it."""
    for path in sorted(folder.rglob("*")):
        if path.name == "run.json" and path.is_file():
            yield "a run folder", path.parent
        elif path.name in SNAPSHOT_MARKS and path.is_file():
            yield "a corpus snapshot", path.parent
        elif path.name == MANIFEST and path.is_file() and _lists_shards(path):
            yield "a corpus snapshot version", path.parent


def _lists_shards(path: Path) -> bool:
    try:
        return isinstance(read_json(path).get("shards"), list)
    except (OSError, ValueError, AttributeError):
        return True  # unreadable: keep it, as if it were one


def _provenance(model: FlaxModel, fmt: str, weights: Path, **extra: Any) -> dict[str, Any]:
    return {"format": fmt, "source": model.info.get("path"), "checkpoint": model.info.get("checkpoint"),
            "corpus": model.info.get("corpus", {}), "model": model.cfg.to_dict(),
            "tokenizer": model.tokenizer.describe(), "weights": weights.name, "sha256": sha256_file(weights),
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

    from lm.ship.hf_format import fast_tokenizer, hf_state_dict, llama_config_dict
    from lm.ship.model_card import model_card

    tmp = _staging(out)
    eos = model.tokenizer.eos_id
    save_file(hf_state_dict(jax.tree.map(np.asarray, model.params), model.cfg), str(tmp / WEIGHTS), metadata={"format": "pt"})
    write_json(tmp / "config.json", llama_config_dict(model.cfg, eos))
    write_json(tmp / "generation_config.json", {"bos_token_id": eos, "eos_token_id": eos, "do_sample": True,
                                                "temperature": 0.8, "max_length": model.cfg.context})
    fast_tokenizer(model.tokenizer).save_pretrained(str(tmp))
    model.tokenizer.save(tmp / MODEL_FILE)
    (tmp / CARD).write_text(model_card(model.info, model.cfg, str(out)), encoding="utf-8")
    write_json(tmp / EXPORT_FILE, _provenance(model, "hf", tmp / WEIGHTS))
    _publish(tmp, out)
    return out


def export_int8(model: FlaxModel, out: Path, embeddings: bool = True) -> Path:
    from safetensors.numpy import save_file

    tmp = _staging(out)
    tree = quantize_params(jax.tree.map(np.asarray, model.params), embeddings=embeddings)
    save_file({k: np.ascontiguousarray(v) for k, v in flatten(tree).items()}, str(tmp / WEIGHTS),
              metadata={"format": "scarce-lm-int8"})
    model.tokenizer.save(tmp / MODEL_FILE)
    write_json(tmp / EXPORT_FILE, _provenance(model, "int8", tmp / WEIGHTS, int8_embeddings=embeddings,
                                              scales="per output channel, symmetric, max |w| / 127"))
    _publish(tmp, out)
    return out


def _describe(model: FlaxModel, tmp: Path, export: dict[str, Any]) -> None:
    """export.json and the model card of a runtime's export."""
    from lm.ship.runtime_card import runtime_card

    write_json(tmp / EXPORT_FILE, export)
    (tmp / CARD).write_text(runtime_card(model.info, model.cfg, export), encoding="utf-8")


def export_gguf(model: FlaxModel, out: Path, quant: str = "q8_0") -> Path:
    from lm.ship.gguf_format import write_gguf
    from lm.ship.hf_format import hf_state_dict

    tmp = _staging(out)
    state = hf_state_dict(jax.tree.map(np.asarray, model.params), model.cfg)
    kept = write_gguf(tmp / GGUF, state, model.cfg, model.tokenizer, quant, Path(str(model.info.get("path"))).name)
    model.tokenizer.save(tmp / MODEL_FILE)
    _describe(model, tmp, _provenance(model, "gguf", tmp / GGUF, quant=quant, kept_f16=kept))
    _publish(tmp, out)
    return out


def export_onnx(model: FlaxModel, out: Path, quant: str = "f32") -> Path:
    from lm.ship.hf_format import hf_state_dict
    from lm.ship.onnx_format import write_onnx

    tmp = _staging(out)
    write_onnx(tmp / ONNX, hf_state_dict(jax.tree.map(np.asarray, model.params), model.cfg), model.cfg, quant)
    model.tokenizer.save(tmp / MODEL_FILE)
    _describe(model, tmp, _provenance(model, "onnx", tmp / ONNX, quant=quant))
    _publish(tmp, out)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lm.ship.export", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run folder (lm.train, lm.distill's models/NAME, lm.ship.prune)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True,
                   help="the export folder: new, empty or an earlier export (replaced); anything else needs --force")
    p.add_argument("--force", action="store_true",
                   help="replace a non-empty --out that is not an earlier export (never the run or a folder holding one)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--float-embeddings", action="store_true", help="int8: keep the embedding (and tied output layer) float32")
    p.add_argument("--quant", help=f"gguf: {'|'.join(GGUF_QUANTS)} (default q8_0); onnx: {'|'.join(ONNX_QUANTS)} (default f32)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quants = {"gguf": (GGUF_QUANTS, "q8_0"), "onnx": (ONNX_QUANTS, "f32")}.get(args.format)
    if args.quant and (not quants or args.quant not in quants[0]):
        raise UsageError(f"--quant {args.quant} is not one of {args.format}'s: "
                         f"{', '.join(quants[0]) if quants else 'none (only gguf and onnx take --quant)'}")
    args.quant = args.quant or (quants[1] if quants else None)
    out = Path(args.out)
    check_out(out, Path(args.run), args.force)  # before loading: a refused OUT costs nothing
    model = load_model(args.run, args.checkpoint)
    if not isinstance(model, FlaxModel) or model.info.get("format") != "run":
        raise UsageError(f"{args.run}: export needs a float run folder (lm.train, lm.distill, lm.ship.prune)")
    if args.format == "hf":
        export_hf(model, out)
    elif args.format == "int8":
        export_int8(model, out, embeddings=not args.float_embeddings)
    elif args.format == "gguf":
        export_gguf(model, out, args.quant)
    else:
        export_onnx(model, out, args.quant)
    info = read_json(out / EXPORT_FILE)
    print(f"{args.format} export of {args.run} ({info['checkpoint']}): {out} ({info['bytes']:,} bytes of weights)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
