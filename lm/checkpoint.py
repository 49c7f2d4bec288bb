"""Orbax checkpoints of a run: `RUN/checkpoints/STEP` to resume, `RUN/best/STEP` to evaluate.

A resume checkpoint holds `{"params", "opt_state", "step"}` as arrays plus a JSON `meta`
item (data position, elapsed seconds, best dev loss so far). The best checkpoint holds only the
parameters and its meta (step, dev loss). Saves are synchronous and atomic (Orbax writes a
temporary folder and renames it), so a run killed mid-save leaves the previous checkpoint intact.

Orbax checks no content: a checkpoint with flipped bytes (same size) restores as NaN weights. So
every save ends by writing `STEP/checksums.json` (atomically), the sha256 and size of each file
Orbax wrote, and every load (`verify`: resume here, `lm.loader` for evaluate, export, generate,
deploy, prune) checks them first and stops with a CheckpointError naming the file. A checkpoint
without `checksums.json` (saved before this check existed, or killed between Orbax's rename and
that write) is loaded unchecked, as before.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from common.files import read_json, sha256_file, write_json
from lm.errors import CheckpointError, first_line

logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every save at INFO

RESUME_DIR, BEST_DIR = "checkpoints", "best"
CHECKSUMS = "checksums.json"


def _data_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def write_checksums(folder: Path) -> None:
    """Record the sha256 and size of every file of the checkpoint `folder` (one step)."""
    files = {str(p.relative_to(folder)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in _data_files(folder)}
    write_json(folder / CHECKSUMS, {"algorithm": "sha256", "files": files})


def verify(folder: Path) -> None:
    """Check the checkpoint `folder` (one step) against its `checksums.json`; a CheckpointError
    names the first file that is missing, resized or changed. Without the file: no check."""
    path = folder / CHECKSUMS
    if not path.is_file():
        return
    try:
        files = read_json(path)["files"]
        items = [(str(k), v["sha256"], int(v["bytes"])) for k, v in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {folder}: {path.name} cannot be read ({first_line(exc)})") from exc
    for rel, digest, size in items:
        f = folder / rel
        if not f.is_file():
            raise CheckpointError(f"checkpoint {folder}: {f} is missing (listed in {CHECKSUMS})")
        if os.path.getsize(f) != size or sha256_file(f) != digest:
            raise CheckpointError(f"checkpoint {folder}: {f} does not match its sha256 in {CHECKSUMS} "
                                  "(corrupt): restore the run from a backup or train again")


def _manager(folder: Path, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
    opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only,
                                        enable_async_checkpointing=False)
    return ocp.CheckpointManager(folder.resolve(), options=opts)


class Checkpoints:
    """The resume and best checkpoints of one run folder."""

    def __init__(self, run_dir: Path, read_only: bool = False):
        self.run_dir = run_dir
        self.read_only = read_only
        self._resume = self._best = None

    def _get(self, which: str) -> ocp.CheckpointManager:
        attr = "_resume" if which == RESUME_DIR else "_best"
        if getattr(self, attr) is None:
            folder = self.run_dir / which
            if self.read_only and not folder.is_dir():
                raise CheckpointError(f"no checkpoint in {folder}")
            setattr(self, attr, _manager(folder, keep=1, read_only=self.read_only))
        return getattr(self, attr)

    def latest_step(self, which: str = RESUME_DIR) -> int | None:
        folder = self.run_dir / which
        if not folder.is_dir():
            return None
        if self.read_only:  # a listing: Orbax's read-only manager warns on every use
            steps = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
            return max(steps, default=None)
        return self._get(which).latest_step()

    def save(self, which: str, step: int, arrays: dict[str, Any], meta: dict[str, Any]) -> None:
        mgr = self._get(which)
        if step in mgr.all_steps():
            # left by a process killed before its resume checkpoint of this step: the resumed run
            # redoes the same steps from the same state, so the new save replaces it
            mgr.delete(step)
        mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(arrays),
                                               meta=ocp.args.JsonSave(meta)), force=True)
        mgr.wait_until_finished()
        write_checksums(self.run_dir / which / str(step))

    def restore(self, which: str, abstract: dict[str, Any], step: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Arrays shaped like `abstract` (ShapeDtypeStructs, with shardings) and the meta dict."""
        step = self.latest_step(which) if step is None else step
        where = self.run_dir / which
        if step is None:
            raise CheckpointError(f"no checkpoint in {where}")
        verify(where / str(step))
        try:
            out = self._get(which).restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as exc:  # Orbax/TensorStore raise many types for a damaged folder
            raise CheckpointError(f"checkpoint {where / str(step)} is corrupt or incomplete "
                                  f"({type(exc).__name__}: {first_line(exc)})") from exc
        return out["state"], dict(out["meta"])

    def close(self) -> None:
        for mgr in (self._resume, self._best):
            if mgr is not None:
                mgr.close()


def abstract_like(tree: Any, sharding: jax.sharding.Sharding | None = None) -> Any:
    """ShapeDtypeStructs of `tree` for restoring into, placed with `sharding`."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
