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
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from common.files import read_json, sha256_file, write_json
from lm.errors import CheckpointError, first_line

logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every save at INFO

RESUME_DIR, BEST_DIR = "checkpoints", "best"
CHECKSUMS = "checksums.json"


class _WriteNoise:
    """What Orbax and TensorStore print when a save fails (a full or read-only disk, a quota):
    each writer thread logs its traceback, the other writes of the save finish into Orbax's closed
    event loop ("Event loop is closed", as unraisable errors) and asyncio logs every task whose
    error nobody read, before, during and after the one error raised in the saving thread, which
    the command reports in one line. Quiet while saving; after a failed save, for good (the
    command is ending)."""

    failed = False

    def __enter__(self) -> None:
        self.levels = {n: logging.getLogger(n).level for n in ("absl", "asyncio")}
        for name in self.levels:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        self.hook = sys.unraisablehook
        sys.unraisablehook = self._drop_closed_loop

    def _drop_closed_loop(self, unraisable: Any) -> None:
        exc = unraisable.exc_value
        if not (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"):
            self.hook(unraisable)

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is not None and issubclass(kind, Exception):
            _WriteNoise.failed = True
            warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
        if _WriteNoise.failed:
            return
        sys.unraisablehook = self.hook
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)


def _os_reason(exc: BaseException) -> str:
    """The operating system's words for a failed write (TensorStore gives `os_error_code`), else
    the exception's first line."""
    text = str(exc)
    code = re.search(r"os_error_code='?(\d+)", text)
    if code:
        return os.strerror(int(code.group(1)))
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return first_line(exc, limit=160)


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
    # cleanup_tmp_directories: a save that failed or was killed leaves Orbax's temporary folder
    opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only,
                                        enable_async_checkpointing=False, cleanup_tmp_directories=not read_only)
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
        try:
            with _WriteNoise():
                mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(arrays),
                                                   meta=ocp.args.JsonSave(meta)), force=True)
                mgr.wait_until_finished()
            write_checksums(self.run_dir / which / str(step))
        except Exception as exc:  # a full or read-only disk, a quota: Orbax wraps the OS error
            self._discard(which, step)
            raise CheckpointError(f"cannot write checkpoint {self.run_dir / which / str(step)} ({_os_reason(exc)}); "
                                  "free space and re-run the same command: it resumes from the last "
                                  "checkpoint") from None

    def _discard(self, which: str, step: int) -> None:
        """Remove what a failed save of `step` left (Orbax's temporary folder, or a step folder
        without checksums): the next save or a resume starts from the previous checkpoint."""
        folder = self.run_dir / which
        for p in (folder.glob(f"{step}.orbax-checkpoint-tmp*") if folder.is_dir() else []):
            shutil.rmtree(p, ignore_errors=True)
        if (folder / str(step)).is_dir() and not (folder / str(step) / CHECKSUMS).is_file():
            shutil.rmtree(folder / str(step), ignore_errors=True)
        if which == RESUME_DIR:
            self._resume = None  # Orbax's manager keeps its view of the steps: a fresh one
        else:
            self._best = None

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
