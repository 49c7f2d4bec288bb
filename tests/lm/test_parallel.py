"""Data parallel training: one CPU device and two forced CPU devices give the same losses.

XLA's device count is fixed when jax is imported, so each run is its own process with
XLA_FLAGS=--xla_force_host_platform_device_count=N.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, TINY, corpora
from lm.scoring import evaluate
from lm.loader import load_model


def train(devices: int, corpus: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.run([sys.executable, "-m", "lm.train", "--corpus", str(corpus), "--out", str(out),
                           *TINY, "--steps", "20", "--eval-every", "10", "--log-every", "5", *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_one_and_two_devices_give_the_same_losses(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    gl = corpora(tmp_path_factory)["gl"]
    runs = {}
    for n in (1, 2):
        proc = train(n, gl, tmp_path / f"d{n}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        info = json.loads((tmp_path / f"d{n}" / "run.json").read_text())
        assert info["devices"] == n
        runs[n] = [json.loads(x) for x in (tmp_path / f"d{n}" / "metrics.jsonl").read_text().splitlines()]
    losses = {n: [(r["step"], r.get("loss", r.get("dev_loss"))) for r in rows if "tokens_per_s" in r or "dev_loss" in r]
              for n, rows in runs.items()}
    assert [s for s, _ in losses[1]] == [s for s, _ in losses[2]]
    for (_, a), (_, b) in zip(losses[1], losses[2]):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-4)  # reductions differ in order only
    # a checkpoint saved from two devices loads and scores in a process with any device count
    scores = [evaluate(load_model(tmp_path / f"d{n}"), "dev")["bits_per_char"] for n in (1, 2)]
    assert scores[0] == pytest.approx(scores[1], rel=1e-4)


def test_batch_must_split_over_devices(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    proc = train(2, corpora(tmp_path_factory)["gl"], tmp_path / "odd", "--batch", "7")
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --batch 7 must be a multiple of the 2 local devices")
