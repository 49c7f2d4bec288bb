"""A run folder: what a training run writes besides its checkpoints, in one place.

* `run.json`: the model shape, the training settings, parameter count, devices, corpus (name,
  version, folder, separator), tokenizer (type, vocabulary size, sha256), and what the caller
  adds (`lm.distill` its phase; `lm.ship.prune` its source); `lm.loader` reads it back. Its
  `data` key (`data_record`) says what the model trained on: snapshot, version, splits, which
  records (all, or the ids of a subset) and the augmented variants (count and a hash of their
  ids), so that no one judges text with a model that has seen it (`seen_by`).
* `metrics.jsonl`: one JSON object a line, appended (`Metrics`). A resume first cuts it back to
  the checkpoint's step (`cut_metrics`): rows logged after that checkpoint by a killed process
  are logged again, and would otherwise be there twice.
* `DONE.json`: written after a model's final checkpoint and evaluation (`lm.distill`: a model
  whose folder holds it is not trained again).

`check_fixed` is the rule every resumable command follows: settings given again on resume must
equal the stored ones, or the command stops with a usage error naming the option.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import jax

from lm.errors import DataError, UsageError
from common.files import read_json, write_json, write_text_atomic
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


def cut_metrics(out: Path, step: int) -> int:
    """Keep the rows of `metrics.jsonl` up to `step` (where training resumes), atomically; also drops
    a line a kill cut short. Returns the number of lines dropped."""
    path = Path(out) / METRICS_FILE
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict) or not isinstance(row.get("step"), int) or row["step"] <= step:
            kept.append(line)
    if len(kept) == len(lines):
        return 0
    write_text_atomic(path, "".join(x + "\n" for x in kept))
    return len(lines) - len(kept)


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


def ids_sha256(ids: Any) -> str:
    """A hash of a set of record or variant ids (order-free)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()


def data_record(snapshot: Any, splits: list[str], record_ids: list[str] | None = None,
                augmented: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What a model trained on (`run.json`'s `data`): the `splits` of `snapshot`, whole
    (`record_ids` None) or only the records `record_ids`, plus the `augmented` variants (rows with
    `id` and `parent_id`) or none."""
    rec: dict[str, Any] = {"snapshot": snapshot.name, "version": snapshot.version, "splits": list(splits),
                           "records": "all" if record_ids is None else sorted(record_ids)}
    if augmented:
        rec["augmented"] = {"variants": len(augmented), "ids_sha256": ids_sha256(r["id"] for r in augmented),
                            "parents_sha256": ids_sha256({r["parent_id"] for r in augmented if r.get("parent_id")})}
    else:
        rec["augmented"] = None
    return rec


def seen_by(info: Mapping[str, Any] | None, snapshot: Any, split: str, record_ids: Any,
            variant_ids: Any = ()) -> set[str]:
    """The ids among `record_ids` (records of `snapshot`'s `split`) and `variant_ids` (its
    augmented variants) that the model of `run.json` `info` may have trained on. Conservative:
    without a `data` record, all; another version of the same corpus, every record; any augmented
    text, every variant (only a hash of their ids is kept)."""
    records, variants = set(record_ids), set(variant_ids)
    data = (info or {}).get("data")
    if not data:
        return records | variants
    if data.get("snapshot") != snapshot.name:
        return set()
    seen = set(variants) if data.get("augmented") else set()
    if split in data["splits"]:
        whole = data["records"] == "all" or data.get("version") != snapshot.version
        seen |= records if whole else records & set(data["records"])
    return seen
