"""Our pipelines on a real dask.distributed cluster: a local one of two worker processes.

The runner's own tests are small pipelines with what Beam's DaskRunner gets wrong (tagged
outputs, several sinks, side inputs, finish_bundle output); then build and augment of gl-ctg
on Dask must give the very bytes the DirectRunner gives.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.transforms import window

from pipelines.augmentation import augment_snapshot
from pipelines.build import build, main as build_main
from pipelines.dask_runner import Unsupported
from pipelines.errors import run_cli
from pipelines.runners import DASK, LOCAL, pipeline_options, runner_args, staging_location
from pipelines.spec import load_spec

from tests.helpers import ROOT, small_spec, tree_digest

DASK_ARGS = ["--runner", "DaskRunner", "--dask_workers", "2"]


def dask_pipeline() -> beam.Pipeline:
    return beam.Pipeline(options=pipeline_options(DASK_ARGS))


class WriteList(beam.PTransform):
    """A sink: the whole PCollection, sorted, as one JSON file."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = str(path)

    def expand(self, pcoll):
        path = self.path

        def write(items):
            Path(path).write_text(json.dumps(sorted(items)))
            return []

        return pcoll | beam.combiners.ToList() | beam.FlatMap(write)


def read(path: Path):
    return json.loads(path.read_text())


class EvenOdd(beam.DoFn):
    def process(self, x):
        yield beam.pvalue.TaggedOutput("odd", x) if x % 2 else x


class Logged(beam.DoFn):
    """Appends a line per element to a file: how many times the bundle really ran."""

    def __init__(self, log: str):
        self.log = log

    def process(self, x):
        with open(os.path.join(self.log, f"{os.getpid()}.log"), "a") as f:
            f.write(f"{x}\n")
        yield x


class Tail(beam.DoFn):
    """Outputs one element from finish_bundle, as a buffering writer does."""

    def start_bundle(self):
        self.n = 0

    def process(self, x):
        self.n += 1

    def finish_bundle(self):
        yield window.GlobalWindows.windowed_value(("bundle", self.n))


def test_names_that_would_reach_beams_dask_runner_select_ours() -> None:
    for name in ("DaskRunner", "daskrunner", "dask", "apache_beam.runners.dask.dask_runner.DaskRunner"):
        assert runner_args(["--runner", name, "--x"]) == ["--runner", DASK, "--x"]
        assert runner_args([f"--runner={name}"]) == [f"--runner={DASK}"]
    # The DirectRunner, named or by default, is Beam's FnApiRunner here: never its first try,
    # Prism, which would download a binary from GitHub; Prism only when asked for.
    assert runner_args(["--runner", "DirectRunner"]) == ["--runner", LOCAL]
    assert runner_args(["--x"]) == ["--x", "--runner", LOCAL]
    assert runner_args(["--runner=PrismRunner"]) == ["--runner=PrismRunner"]
    assert staging_location([], "out/c") is None
    assert staging_location(DASK_ARGS, "out/c") == "out/c/.staged-sources"
    assert staging_location(["--staging", "/shared/stage"], "out/c") == "/shared/stage"


def test_tagged_outputs_sinks_side_inputs_and_finish_bundle(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()
    with dask_pipeline() as p:
        numbers = p | beam.Create(range(20)) | beam.Reshuffle() | "Log" >> beam.ParDo(Logged(str(log)))
        split = numbers | beam.ParDo(EvenOdd()).with_outputs("odd", main="even")
        _ = split.even | "Even" >> WriteList(tmp_path / "even.json")
        _ = split.odd | "Odd" >> WriteList(tmp_path / "odd.json")
        parts = numbers | beam.Partition(lambda x, n: x % 3, 3)
        for i, part in enumerate(parts):
            _ = part | f"Part{i}" >> WriteList(tmp_path / f"part{i}.json")
        total = split.odd | beam.CombineGlobally(sum)
        _ = (split.even | beam.Map(lambda x, t, odd: (x, t, len(odd)), beam.pvalue.AsSingleton(total),
                                   beam.pvalue.AsList(split.odd))
             | "Side" >> WriteList(tmp_path / "side.json"))
        grouped = split.even | beam.Map(lambda x: (x % 4, x)) | beam.GroupByKey() | beam.MapTuple(lambda k, v: (k, sorted(v)))
        _ = grouped | "Groups" >> WriteList(tmp_path / "groups.json")
        _ = numbers | beam.ParDo(Tail()) | beam.CombinePerKey(sum) | "Tails" >> WriteList(tmp_path / "tails.json")
    assert read(tmp_path / "even.json") == list(range(0, 20, 2))
    assert read(tmp_path / "odd.json") == list(range(1, 20, 2))
    assert [read(tmp_path / f"part{i}.json") for i in range(3)] == [list(range(i, 20, 3)) for i in range(3)]
    assert read(tmp_path / "side.json") == [[x, 100, 10] for x in range(0, 20, 2)]
    assert read(tmp_path / "groups.json") == [[0, [0, 4, 8, 12, 16]], [2, [2, 6, 10, 14, 18]]]
    assert read(tmp_path / "tails.json") == [["bundle", 20]]
    # The source ran once per element, though five branches and two side inputs read it.
    lines = [line for f in log.iterdir() for line in f.read_text().split()]
    assert sorted(map(int, lines)) == list(range(20))


def test_other_windowing_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(Unsupported, match="global window"):
        with dask_pipeline() as p:
            _ = (p | beam.Create([1, 2]) | beam.Map(lambda x: window.TimestampedValue(x, x))
                 | beam.WindowInto(window.FixedWindows(10)) | beam.Map(lambda x: (tmp_path / "never.json").touch()))
    assert not (tmp_path / "never.json").exists()


def untimed(stats_file: Path) -> dict:
    stats = json.loads(stats_file.read_text())
    for a in stats["augmenters"].values():
        del a["seconds"], a["sentences_per_second"]
    return stats


@pytest.fixture(scope="module")
def direct_and_dask(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The small gl-ctg corpus built and augmented on each runner."""
    folder = tmp_path_factory.mktemp("dask")
    spec = load_spec(small_spec(folder))
    corpora = []
    for name, args in (("direct", []), ("dask", DASK_ARGS)):
        build(spec, str(folder / name), beam_args=args)
        augment_snapshot(str(folder / name / spec.name), beam_args=args)
        corpora.append(folder / name / spec.name)
    return corpora[0], corpora[1]


def test_build_and_augment_on_dask_give_the_direct_runners_bytes(direct_and_dask: tuple[Path, Path]) -> None:
    direct, dask = direct_and_dask
    version = (direct / "LATEST").read_text().strip()
    assert (dask / "LATEST").read_text().strip() == version
    ours, theirs = tree_digest(dask / version), tree_digest(direct / version)
    assert any(k.startswith("augmented/train/") for k in ours) and any(k.startswith("train/") for k in ours)
    # Every file the same bytes, but the augmenters' timings in augmented/stats.json.
    timing = "augmented/stats.json"
    assert {k: v for k, v in ours.items() if k != timing} == {k: v for k, v in theirs.items() if k != timing}
    assert untimed(dask / version / timing) == untimed(direct / version / timing)
    # Dask's workers read the sources from the staging folder, by content hash.
    assert sorted(p.name.split("-", 1)[1] for p in (dask / ".staged-sources").iterdir()) == \
        ["dev.txt", "test.txt", "train.txt"]
    assert not (direct / ".staged-sources").exists()


def test_gl_ctg_build_on_dask_from_the_command_line(tmp_path: Path, capsys) -> None:
    """The whole gl-ctg corpus through `python -m pipelines.build ... --runner DaskRunner`."""
    mirror = str(ROOT.parent / "shared" / "data")
    spec = str(ROOT / "corpora" / "gl-ctg.toml")
    assert run_cli(build_main, [spec, "--out", str(tmp_path / "direct"), "--mirror", mirror, "--json"]) == 0
    direct = json.loads(capsys.readouterr().out)
    assert run_cli(build_main, [spec, "--out", str(tmp_path / "dask"), "--mirror", mirror, "--json",
                                "--runner", "DaskRunner", "--dask_workers", "2"]) == 0
    dask = json.loads(capsys.readouterr().out)
    assert dask["version"] == direct["version"] and dask["stats"] == direct["stats"]
    assert tree_digest(Path(dask["path"])) == tree_digest(Path(direct["path"]))
    assert run_cli(build_main, [spec, "--out", str(tmp_path / "none"), "--mirror", mirror,
                                "--runner", "DaskRunner", "--dask_workers", "0"]) == 2
    assert "--dask_workers 0: give at least 1" in capsys.readouterr().err
    shutil.rmtree(tmp_path)
