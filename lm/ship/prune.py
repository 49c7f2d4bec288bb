"""`python -m lm.ship.prune RUN --sparsity S [--scope global|layer] [--finetune-steps N] --out RUN2`

Magnitude pruning with a short recovery fine-tune. The smallest-magnitude weights of every
projection matrix (attention q/k/v/o, MLP gate/up/down, an untied output layer) are set to zero:
the S fraction of all of them together (`global`, the default: layers that matter more keep
more) or of each matrix (`layer`). The embedding is kept whole: it is also the output layer
when tied, and a zeroed row would silence a token. Then the model trains N steps on the run's
corpus (`lm.trainer`: cross-entropy on real train text, the run's batch, a tenth of its peak
learning rate unless `--lr`) with the pruned weights held at zero, and the best dev checkpoint
is kept.

RUN2 is a run folder like any other (lm.evaluate, lm.generate, lm.ship.export read it) with
`prune.json`: requested and reached sparsity, nonzero parameters, and dev and test bits per
character of the dense model, the pruned one before the fine-tune and after it. Pruned weights
are stored densely: pruning alone does not shrink the files (lm.ship.deploy reports both).
Structured pruning (whole heads or neurons) is not offered yet.

RUN2 must be new, empty or an earlier prune of the same RUN (re-running replaces it); the source
run, a folder holding it and any other non-empty folder are refused (`check_out`, as
`lm.ship.export` refuses), and RUN2 is locked for the whole command (`common.lock`). Exit codes:
0 ok, 1 failure, 2 usage (including a refused RUN2), 75 RUN2 in use by another command.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from common.lock import LOCK_FILE, RunLock
from lm import parallel
from lm.checkpoint import BEST_DIR, RESUME_DIR, Checkpoints
from lm.corpus import Snapshot, open_snapshot
from lm.data import Batches
from lm.errors import UsageError, run_cli
from common.files import read_json, write_json
from lm.fit import TrainSettings, dev_set, optim_for, start_run, train_into, train_pool
from lm.loader import FlaxModel, load_model
from lm.run import RUN_FILE
from lm.scoring import evaluate
from lm.ship.export import check_place
from lm.trainer import LoopConfig

PRUNE_FILE = "prune.json"
SCOPES = ("global", "layer")


def prunable(path: tuple[str, ...]) -> bool:
    return path[-1] == "kernel"


def _leaves(tree: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], np.ndarray]]:
    if isinstance(tree, dict):
        return [x for k, v in tree.items() for x in _leaves(v, path + (str(k),))]
    return [(path, np.asarray(tree))]


def _map(tree: Any, fn, path: tuple[str, ...] = ()) -> Any:
    if isinstance(tree, dict):
        return {k: _map(v, fn, path + (str(k),)) for k, v in tree.items()}
    return fn(path, np.asarray(tree))


def _smallest(values: np.ndarray, n: int) -> np.ndarray:
    """A mask with exactly the n smallest |values| False (ties broken by position)."""
    keep = np.ones(values.size, bool)
    if n > 0:
        keep[np.argsort(np.abs(values).ravel(), kind="stable")[:n]] = False
    return keep.reshape(values.shape)


def magnitude_masks(params: Any, sparsity: float, scope: str = "global") -> Any:
    """A tree like `params` of float32 0/1 masks: 0 on the pruned weights, 1 elsewhere."""
    if not 0.0 <= sparsity < 1.0:
        raise UsageError(f"--sparsity must be in [0, 1), not {sparsity}")
    if scope not in SCOPES:
        raise UsageError(f"--scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    mats = [(p, w) for p, w in _leaves(params) if prunable(p)]
    masks: dict[tuple[str, ...], np.ndarray] = {}
    if scope == "global":
        flat = np.concatenate([w.ravel() for _, w in mats])
        keep = _smallest(flat, int(round(sparsity * flat.size)))
        start = 0
        for p, w in mats:
            masks[p] = keep[start:start + w.size].reshape(w.shape)
            start += w.size
    else:
        for p, w in mats:
            masks[p] = _smallest(w, int(round(sparsity * w.size)))
    return _map(params, lambda p, w: masks.get(p, np.ones(w.shape, bool)).astype(np.float32))


def sparsity_of(params: Any) -> tuple[float, int]:
    """(fraction of zeros among prunable weights, nonzero parameters in the whole model)."""
    leaves = _leaves(params)
    mats = [w for p, w in leaves if prunable(p)]
    zeros = sum(int((w == 0).sum()) for w in mats)
    total = sum(w.size for w in mats)
    nonzero = sum(int((w != 0).sum()) for _, w in leaves)
    return (zeros / total if total else 0.0), nonzero


def _pruned_from(folder: Path) -> Path | None:
    """The source run of an earlier prune output in `folder` (its run.json's `pruned_from`)."""
    try:
        src = read_json(folder / RUN_FILE).get("pruned_from")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(src).resolve() if isinstance(src, str) else None


def check_out(out: Path, src: Path) -> None:
    """Refuse (UsageError) an OUT holding what prune did not write: the source run (or a folder
    holding it, its state folders, a file: `export.check_place`), or a non-empty folder that is
    not an earlier prune of the same source (re-running that one replaces it)."""
    check_place(out, src, doing="pruning")
    o = out.resolve()
    if not o.is_dir() or all(p.name == LOCK_FILE for p in o.iterdir()) or _pruned_from(o) == src.resolve():
        return
    raise UsageError(f"--out {out} is not empty and not an earlier prune of {src}: refusing to overwrite it; "
                     "choose a new or empty folder")


def _clear(out: Path) -> None:
    """Empty an earlier prune output (all but the lock its re-run holds): a fresh prune, never a mix."""
    for p in out.iterdir() if out.is_dir() else ():
        if p.name != LOCK_FILE:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lm.ship.prune", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run folder (lm.train, lm.distill's models/NAME)")
    p.add_argument("--sparsity", type=float, required=True, help="fraction of projection weights set to zero")
    p.add_argument("--scope", choices=SCOPES, default="global")
    p.add_argument("--finetune-steps", type=int, default=100, help="recovery steps (0: none)")
    p.add_argument("--lr", type=float, help="peak learning rate of the fine-tune (default: the run's / 10)")
    p.add_argument("--batch", type=int, help="default: the run's")
    p.add_argument("--corpus", help="OUT/NAME or a version folder (default: the run's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the pruned run folder")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def _scores(model: Any, corpus: str) -> dict[str, float]:
    return {f"{s}_bits_per_char": evaluate(model, s, corpus)["bits_per_char"] for s in ("dev", "test")}


def _finetune(out: Path, model: FlaxModel, snap: Snapshot, settings: TrainSettings, pruned: Any, keep: Any, *,
              steps: int, quiet: bool, run_info: dict[str, Any]) -> None:
    """`steps` of cross-entropy on the train split from `pruned`, the zeros held by `keep`."""
    cfg, tok = model.cfg, model.tokenizer
    every = max(1, steps // 4)
    loop = LoopConfig(steps=steps, batch=settings.batch, eval_every=every, save_every=every, log_every=20,
                      desc="prune", quiet=quiet)
    data = Batches(train_pool(snap, tok, cfg.context), settings.batch, settings.seed)
    train_into(out, cfg, tok, snap, settings, loop, data, dev_set(snap, tok, cfg.context), start_params=pruned,
               keep=keep, run_info=run_info)


def _save_only(out: Path, params: Any) -> None:
    """No fine-tune: the pruned weights as the run's only checkpoint."""
    ckpts = Checkpoints(out)
    for which in (BEST_DIR, RESUME_DIR):
        ckpts.save(which, 0, {"params": params}, {"step": 0, "dev_loss": None})
    ckpts.close()


def prune_run(run: str | Path, *, sparsity: float, out: str | Path, scope: str = "global", finetune_steps: int = 100,
              lr: float | None = None, batch: int | None = None, corpus: str | None = None, seed: int = 0,
              quiet: bool = False) -> dict[str, Any]:
    """Prune run folder `run` into the run folder `out` (see the module docstring); returns the
    report also written to `out/prune.json`. `lr`, `batch`, `corpus`: default the run's own."""
    src, out = Path(run), Path(out)
    check_out(out, src)  # before loading: a refused OUT costs nothing
    model = load_model(src)
    if not isinstance(model, FlaxModel) or model.info.get("format") != "run":
        raise UsageError(f"{src}: lm.ship.prune needs a float run folder (not an export)")
    if finetune_steps < 0:
        raise UsageError("--finetune-steps must be at least 0")
    run_info = read_json(src / RUN_FILE)
    corpus = corpus or model.info.get("corpus", {}).get("path")
    if not corpus:
        raise UsageError(f"{src}: the run names no corpus; give --corpus")
    snap = open_snapshot(corpus)
    cfg, tok = model.cfg, model.tokenizer
    params = jax.tree.map(np.asarray, model.params)
    keep = magnitude_masks(params, sparsity, scope)
    pruned = jax.tree.map(lambda w, k: w * k, params, keep)
    report: dict[str, Any] = {"source": str(src), "checkpoint": model.info.get("checkpoint"), "scope": scope,
                              "sparsity_requested": sparsity, "finetune_steps": finetune_steps,
                              "dense": _scores(model, corpus),
                              "pruned": _scores(FlaxModel(cfg, pruned, tok, model.info), corpus)}
    steps = max(1, finetune_steps)
    settings = TrainSettings(optim=optim_for(steps, lr=lr or run_info["train"]["optim"]["lr"] / 10),
                             preset=run_info["train"].get("preset"), batch=batch or run_info["train"]["batch"],
                             seed=seed, vocab_size=tok.vocab_size, tokenizer=tok.model_type)
    run_info = {"pruned_from": str(src.resolve()), "sparsity": sparsity, "scope": scope}
    _clear(out)
    if finetune_steps:
        _finetune(out, model, snap, settings, pruned, keep, steps=steps, quiet=quiet, run_info=run_info)
    else:
        start_run(out, cfg, tok, snap, settings, steps, run_info)
        _save_only(out, pruned)
    final = load_model(out)
    report["finetuned" if finetune_steps else "final"] = _scores(final, corpus)
    report["sparsity"], report["nonzero_params"] = sparsity_of(jax.tree.map(np.asarray, final.params))
    report["params"] = cfg.n_params()
    write_json(out / PRUNE_FILE, report)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parallel.start_command()
    with RunLock(args.out):  # one command per run folder: a second exits 75 (common.lock)
        r = prune_run(args.run, sparsity=args.sparsity, scope=args.scope, finetune_steps=args.finetune_steps,
                      lr=args.lr, batch=args.batch, corpus=args.corpus, seed=args.seed, out=args.out, quiet=args.quiet)
    after = r.get("finetuned") or r.get("final")
    print(f"{args.out}: sparsity {r['sparsity']:.3f} ({r['nonzero_params']:,} of {r['params']:,} parameters nonzero); "
          f"test bits/char dense {r['dense']['test_bits_per_char']:.4f}, pruned {r['pruned']['test_bits_per_char']:.4f}, "
          f"after {args.finetune_steps} fine-tune steps {after['test_bits_per_char']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
