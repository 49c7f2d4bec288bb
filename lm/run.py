"""A run folder: what a training run writes besides its checkpoints, in one place.

* `run.json`: the model shape, the training settings, parameter count, devices, corpus (name,
  version, folder, separator), tokenizer (type, vocabulary size, sha256), and what the caller
  adds (`lm.distill` its phase; `lm.ship.prune` its source); `lm.loader` reads it back.
* `metrics.jsonl`: one JSON object a line, appended (`Metrics`).
* `DONE.json`: written after a model's final checkpoint and evaluation (`lm.distill`: a model
  whose folder holds it is not trained again).

`check_fixed` is the rule every resumable command follows: settings given again on resume must
equal the stored ones, or the command stops with a usage error naming the option.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

import jax

from lm.errors import DataError, UsageError
from lm.files import read_json, write_json
from lm.model import ModelConfig

RUN_FILE, METRICS_FILE, DONE_FILE = "run.json", "metrics.jsonl", "DONE.json"


def read_run(out: Path) -> dict[str, Any] | None:
    """The run's `run.json`, or None for a new folder; a damaged one is a DataError."""
    path = Path(out) / RUN_FILE
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} cannot be read ({exc}); it is not a valid run") from exc


def write_run(out: Path, cfg: ModelConfig, train: Mapping[str, Any], tokenizer: dict[str, Any], snapshot: Any,
              steps: int, **extra: Any) -> dict[str, Any]:
    """Write `run.json` (atomically) and return it. `snapshot` is an `lm.corpus.Snapshot`."""
    info = {
        "model": cfg.to_dict(), "train": dict(train), "steps": steps, "params": cfg.n_params(),
        "devices": len(jax.local_devices()), "platform": jax.devices()[0].platform,
        "device_kind": jax.devices()[0].device_kind,
        "corpus": {"name": snapshot.name, "version": snapshot.version, "path": str(snapshot.root.resolve()),
                   "separator": snapshot.separator},
        "tokenizer": tokenizer, "jax": jax.__version__, **extra,
    }
    write_json(Path(out) / RUN_FILE, info)
    return info


def check_fixed(where: Path, stored: Mapping[str, Any], given: Mapping[str, Any],
                flag: Callable[[str], str] = lambda k: f"--{k.replace('_', '-')}") -> None:
    """Every setting in `given` must equal the stored one: a run's settings are fixed."""
    for k, v in given.items():
        if stored.get(k) != v:
            raise UsageError(f"{where} was created with {flag(k)} {stored.get(k)!r}; a run's settings are fixed "
                             f"(re-run with the same options, or start a new --out)")


class Metrics:
    """`metrics.jsonl`, appended a line at a time and flushed (a killed run keeps what it logged)."""

    def __init__(self, out: Path):
        Path(out).mkdir(parents=True, exist_ok=True)
        self._f = open(Path(out) / METRICS_FILE, "a", encoding="utf-8")

    def write(self, entry: dict[str, Any]) -> None:
        self._f.write(json.dumps(entry) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_metrics(out: Path) -> list[dict[str, Any]]:
    path = Path(out) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def read_done(out: Path) -> dict[str, Any] | None:
    path = Path(out) / DONE_FILE
    return read_json(path) if path.is_file() else None


def mark_done(out: Path, info: dict[str, Any]) -> dict[str, Any]:
    write_json(Path(out) / DONE_FILE, info)
    return info
