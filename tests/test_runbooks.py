"""The runbooks' commands are real: every local command in them runs here and succeeds.

Every command of every ```sh block is collected (backslash continuations joined, comments
kept for the shell) and either run, with `out` pointed at a temporary folder, or left out by
one of the NOT_RUN rules below, each with its reason; a command that neither runs nor matches a
rule fails the test, so a new runbook command cannot be skipped silently.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

RUNBOOKS = ("first-run.md", "offline.md", "scheduled-refresh.md", "runners.md", "rollback.md")
# (pattern searched in the command, why it is not run here). Everything else runs.
NOT_RUN: tuple[tuple[str, str], ...] = (
    (r"^make demo\b", "sets up .venv and runs the whole demo with its 15-minute distillation; its build "
                      "is the pipelines.build command that runs below"),
    (r"\bpip (download|install)\b", "needs the package index (and installs into the environment)"),
    (r"--runner (DataflowRunner|FlinkRunner|SparkRunner)\b|\b(gs|s3)://", "needs a cloud project or a cluster"),
    (r"^(sudo |systemctl |journalctl )", "needs systemd and root"),
    (r"\bpip wheel\b", "run by test_wheel_for_remote_runners_builds, offline"),
    (r"PREVIOUS_VERSION", "the rollback: run below with a real version in place of PREVIOUS_VERSION"),
    (r"^\.venv/bin/dask (scheduler|worker)\b|--dask_client_address tcp://SCHEDULER",
     "starts, or needs, a long-running Dask cluster on other machines"),
)


def commands(name: str) -> list[str]:
    """The commands of a runbook's ```sh blocks, backslash-continued lines joined into one."""
    text = (ROOT / "runbooks" / name).read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for command in re.sub(r"\\\n\s*", "", block).splitlines():
            if command.strip():
                out.append(" ".join(command.split()) if "'" not in command and '"' not in command else command.strip())
    return out


def not_run(command: str) -> str | None:
    """The reason a command is not run here, or None when it runs."""
    return next((why for pattern, why in NOT_RUN if re.search(pattern, command)), None)


def run(line: str, out: Path) -> subprocess.CompletedProcess:
    """A runbook command, from the project folder, with `out` (and `dist`) under `out`."""
    line = re.sub(r"(?<=[\s'(])out/", f"{out}/", line)
    line = line.replace("--out out", f"--out {out}").replace("-w dist", f"-w {out}/dist")
    line = re.sub(r"(?<![\w/.])\.venv/bin/(python|pip)\b",
                  lambda m: sys.executable + (" -m pip" if m.group(1) == "pip" else ""), line)
    return subprocess.run(["bash", "-c", line], cwd=ROOT, env=dict(os.environ), capture_output=True, text=True,
                          timeout=900)


def test_every_runbook_command_is_run_or_excluded_by_a_rule() -> None:
    """Continuations and `python -c` lines are commands too; only the NOT_RUN rules leave any out."""
    every = {name: commands(name) for name in RUNBOOKS}
    joined = [c for c in every["first-run.md"] if "--direct_running_mode=multi_processing" in c]
    assert joined and not any(c.endswith("\\") for cs in every.values() for c in cs)
    assert any(c.startswith(".venv/bin/python -c ") for c in every["first-run.md"])
    cloud = [c for c in every["runners.md"] if not_run(c) == "needs a cloud project or a cluster"]
    assert len(cloud) == 3 and all("--runner" in c and "--extra_package" in c for c in cloud)
    local = [c for c in every["runners.md"] if not not_run(c)]
    assert len(local) == 3 and all(c.startswith(".venv/bin/python -m pipelines.") for c in local)
    assert sum("--runner DaskRunner --dask_workers 2" in c for c in local) == 1


def test_runbook_commands_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done_already: set[str] = set()
    results: dict[str, subprocess.CompletedProcess] = {}
    for name in RUNBOOKS:
        for line in commands(name):
            if not_run(line) or line in done_already:  # the same command twice proves nothing more
                continue
            done_already.add(line)
            results[line] = done = run(line, out)
            assert done.returncode == 0, (name, line, done.stderr[-2000:])
    assert len(results) >= 12
    by_start = lambda prefix: [r for line, r in results.items() if line.startswith(prefix)]
    # first-run.md: LATEST names a version whose card is printed; the snapshot loads with datasets.
    (cat_latest,) = by_start("cat out/gl-ctg/LATEST")
    version = cat_latest.stdout.strip()
    assert (out / "gl-ctg" / version / "manifest.json").exists()
    (card,) = by_start("cat out/gl-ctg/$(cat out/gl-ctg/LATEST)/README.md")
    assert "# gl-ctg (" in card.stdout
    (loaded,) = by_start(".venv/bin/python -c ")
    assert "DatasetDict" in loaded.stdout and "validation" in loaded.stdout
    # scheduled-refresh.md: both corpora were built above, so both are unchanged.
    (both,) = [results[c] for c in commands("scheduled-refresh.md") if "tinyshakespeare.toml" in c]
    refreshed = [json.loads(x) for x in both.stdout.splitlines()]
    assert {r["name"]: r["status"] for r in refreshed} == {"gl-ctg": "unchanged", "tinyshakespeare": "unchanged"}
    # runners.md: the multi-process and the Dask builds give the same version, and augment wrote the variants.
    assert set((out / "gl-ctg" / "HISTORY").read_text().split()) == {version}
    assert json.loads((out / "gl-ctg" / version / "augmented" / "stats.json").read_text())["total"]["kept"] > 0
    # rollback.md: point LATEST at an earlier version, atomically, as the runbook does.
    (echo,) = [c for c in commands("rollback.md") if "PREVIOUS_VERSION" in c]
    done = run(echo.replace("PREVIOUS_VERSION", "0123456789ab"), out)  # any name other than LATEST's
    assert done.returncode == 0 and (out / "gl-ctg" / "LATEST").read_text().strip() == "0123456789ab"


def test_wheel_for_remote_runners_builds(tmp_path: Path) -> None:
    """runners.md's wheel, built offline: without build isolation pip uses this environment's
    setuptools instead of fetching one from the package index."""
    (line,) = [c for c in commands("runners.md") if "pip wheel" in c]
    assert line.startswith(".venv/bin/pip wheel ")
    done = run(line.replace("pip wheel ", "pip wheel --no-build-isolation --no-index "), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list((tmp_path / "dist").glob("scarce_lm-*.whl"))
