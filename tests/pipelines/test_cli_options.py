"""The command line that the commands share (pipelines/cli.py): every Beam flag is taken by its
spelling, wherever it stands, and reaches Beam (`--dask_client_address` runs on that scheduler);
an argument nobody takes is a one-line usage error before any work; a failing build says its
error on one line, without Beam's traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.runners.dask.dask_runner import DaskOptions

from pipelines.augment import main as augment_main
from pipelines.build import build, main as build_main
from pipelines.cli import command_parser, parse_command
from pipelines.errors import run_cli
from pipelines.refresh import main as refresh_main
from pipelines.runners import pipeline_options
from pipelines.spec import load_spec

from tests.helpers import ROOT, err_line, gl_split_spec, small_spec, tree_digest


def cli(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"pipelines.{module}", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_beam_flags_whose_dest_is_another_name_are_taken(tmp_path: Path) -> None:
    """`--dask_client_address` (dest `address`), `--dask_scheduler_file`, `--dask_connection_timeout`:
    Beam's DaskOptions flags reach Beam with their values, before or after our positional."""
    parser = command_parser("build", "doc", "json", out_help="out")
    parser.add_argument("spec")
    argv = ["--dask_scheduler_file", "sched.json", "my.toml", "--out", str(tmp_path / "o"),
            "--dask_client_address", "tcp://10.0.0.1:8786", "--dask_connection_timeout=5", "--runner", "DaskRunner"]
    args, beam_args = parse_command(parser, argv)
    assert args.spec == "my.toml" and args.out == str(tmp_path / "o")
    dask = pipeline_options(beam_args).view_as(DaskOptions)
    assert (dask.address, dask.scheduler_file, dask.timeout) == ("tcp://10.0.0.1:8786", "sched.json", 5)
    # A Beam flag's value is never taken for our positional argument.
    args, beam_args = parse_command(parser, ["--runner", "DirectRunner", "my.toml", "--out", str(tmp_path / "o")])
    assert args.spec == "my.toml" and beam_args == ["--runner", "DirectRunner"]


@pytest.fixture
def scheduler():
    """A real dask.distributed scheduler with one worker thread, listening on a free TCP port."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                      host="127.0.0.1", dashboard_address=None) as cluster:
        yield cluster


def test_dask_client_address_builds_on_that_scheduler(tmp_path: Path, scheduler) -> None:
    """`python -m pipelines.build SPEC --runner DaskRunner --dask_client_address tcp://HOST:PORT`
    builds on that running cluster, the very snapshot the DirectRunner builds."""
    spec = small_spec(tmp_path / "spec")
    direct = build(load_spec(spec), str(tmp_path / "direct"))
    address = scheduler.scheduler_address
    assert address.startswith("tcp://127.0.0.1:")
    done = cli("build", str(spec), "--out", str(tmp_path / "dask"), "--json",
               "--runner", "DaskRunner", "--dask_client_address", address)
    assert done.returncode == 0, done.stderr
    dask = json.loads(done.stdout)
    assert dask["version"] == direct["version"] and dask["stats"] == direct["stats"]
    assert tree_digest(Path(dask["path"])) == tree_digest(Path(direct["path"]))
    # It ran on that scheduler (not on a local cluster of its own): its tasks are the pipeline's.
    assert any("BuildCorpus" in prefix for prefix in scheduler.scheduler.task_prefixes), \
        sorted(scheduler.scheduler.task_prefixes)


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gl_split_spec(tmp_path_factory.mktemp("spec"), (30, 10, 10), "", "glcli")


@pytest.mark.parametrize("argv, said", [
    (["{spec}", "{spec}", "--out", "{out}"], "unexpected argument {spec}: python -m pipelines.build takes no other"),
    (["{spec}", "-n", "4", "--out", "{out}"], "unknown option -n: neither python -m pipelines.build's nor a Beam"),
    (["{spec}", "--out", "{out}", "--no_such_beam_flag", "1"], "unknown option --no_such_beam_flag: neither"),
    (["{spec}", "--out", "{out}", "--dask_workers", "x"], "argument --dask_workers: invalid int value: 'x'"),
    (["{spec}", "--out", "{out}", "--runner"], "argument --runner: expected one argument"),
])
def test_build_arguments_nobody_takes_are_usage_errors(argv: list[str], said: str, spec: Path, tmp_path: Path,
                                                       capsys) -> None:
    """pipelines.build takes one spec: a second, a short flag, an unknown flag or a bad Beam value
    is exit 2 and one line, before any work (Beam would discard the first three and build)."""
    out = tmp_path / "out"
    fill = {"spec": str(spec), "out": str(out)}
    assert run_cli(build_main, [a.format(**fill) for a in argv]) == 2
    assert err_line(capsys).startswith("error: " + said.format(**fill))
    assert not out.exists()


def test_refresh_and_augment_arguments_nobody_takes_are_usage_errors(spec: Path, tmp_path: Path, capsys) -> None:
    """pipelines.refresh takes several specs, together; augment one corpus folder."""
    out = tmp_path / "out"
    assert run_cli(refresh_main, [str(spec), "--out", str(out), str(spec)]) == 2
    assert err_line(capsys).startswith(f"error: unexpected argument {spec}: python -m pipelines.refresh takes no other")
    assert run_cli(refresh_main, [str(spec), str(spec), "--out", str(out), "-k", "2"]) == 2
    assert err_line(capsys).startswith("error: unknown option -k: neither python -m pipelines.refresh's")
    assert not out.exists()
    corpus = tmp_path / "corpus"
    assert run_cli(augment_main, [str(corpus), str(corpus / "extra")]) == 2
    assert err_line(capsys).startswith(f"error: unexpected argument {corpus / 'extra'}: python -m pipelines.augment")
    assert not corpus.exists()


@pytest.mark.parametrize("runner", [[], ["--runner", "DaskRunner", "--dask_workers", "1"]], ids=["direct", "dask"])
def test_a_failing_build_says_one_line_without_beams_traceback(runner: list[str], tmp_path: Path) -> None:
    """A source that fails inside the pipeline (a Hugging Face dataset offline and not cached):
    exit 1 and the one-line error, not first Beam's 20-30 line traceback of the failed DoFn (or,
    on Dask, the worker's log of the failed task and its INFO lines)."""
    spec = tmp_path / "hf.toml"
    spec.write_text('name = "hfmiss"\nlanguage = "gl"\n[[sources]]\nhf = "nobody/no-such-dataset"\ncolumn = "text"\n',
                    encoding="utf-8")
    done = cli("build", str(spec), "--out", str(tmp_path / "out"), *runner,
               env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "apache_beam.runners.common" not in done.stderr
    assert "Compute Failed" not in done.stderr
    # Only Beam's import-time warning about its BigQuery clients may come before the error.
    lines = [line for line in done.stderr.splitlines() if "apitools not found" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: build of hfmiss failed: ConnectionError: "), done.stderr
    assert "nobody/no-such-dataset" in lines[0]
