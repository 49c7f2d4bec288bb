"""The runbooks' commands are real: every local command line in them runs here and succeeds.

Lines in ```sh blocks that start with `.venv/bin/python -m pipelines.`, `SCARCE_LM_MIRROR=`,
`.venv/bin/pip wheel` or `echo ` (the rollback) run with `out` pointed at a temporary folder;
cloud and systemd commands are marked in the runbooks as not run here.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path


from conftest import ROOT

RUNNABLE = (".venv/bin/python -m pipelines.", "SCARCE_LM_MIRROR=", ".venv/bin/pip wheel", "echo ")


def commands(name: str) -> list[str]:
    text = (ROOT / "runbooks" / name).read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines()
            if line.strip().startswith(RUNNABLE) and not line.rstrip().endswith("\\")]


def run(line: str, out: Path) -> subprocess.CompletedProcess:
    line = line.replace(" out/", f" {out}/").replace("--out out", f"--out {out}").replace("-w dist", f"-w {out}/dist")
    env = dict(os.environ)
    words = shlex.split(line)
    while "=" in words[0] and not words[0].startswith(("-", ".")):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if words[0] == ".venv/bin/python":
        words[0] = sys.executable
    elif words[0] == ".venv/bin/pip":
        words[:1] = [sys.executable, "-m", "pip"]
    if "&&" in words or ">" in words:
        return subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    return subprocess.run(words, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_runbook_commands_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    lines = commands("first-run.md") + commands("offline.md") + commands("scheduled-refresh.md")
    assert len(lines) >= 5
    for line in lines:
        done = run(line, out)
        assert done.returncode == 0, (line, done.stderr[-2000:])
    refreshed = [json.loads(x) for x in done.stdout.splitlines()]
    assert {r["name"]: r["status"] for r in refreshed} == {"gl-ctg": "unchanged", "tinyshakespeare": "unchanged"}
    # rollback.md: point LATEST at an earlier version, atomically, as the runbook does.
    versions = (out / "gl-ctg" / "HISTORY").read_text().split()
    rollback = [c for c in commands("rollback.md") if c.startswith("echo ")]
    assert rollback
    done = run(rollback[0].replace("PREVIOUS_VERSION", versions[0]), out)
    assert done.returncode == 0 and (out / "gl-ctg" / "LATEST").read_text().strip() == versions[0]


def test_wheel_for_remote_runners_builds(tmp_path: Path) -> None:
    (line,) = [c for c in commands("runners.md") if "pip wheel" in c]
    done = run(line, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list((tmp_path / "dist").glob("scarce_lm-*.whl"))
