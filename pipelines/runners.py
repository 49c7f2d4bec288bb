"""Pipeline options for every command: Beam's flags, with `--runner DaskRunner` naming ours.

`pipelines.dask_runner.DaskRunner` runs our pipelines on dask.distributed. Beam's own DaskRunner
drops tagged outputs and sinks silently (see that module), so every spelling that would reach it
(`DaskRunner` in any case, `dask`, or Beam's qualified path) is mapped to ours.
"""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.dask_runner import ScarceDaskOptions  # defining it registers --dask_workers with Beam
from pipelines.errors import SpecError

DASK = "pipelines.dask_runner.DaskRunner"
_DASK_NAMES = {"daskrunner", "dask", "apache_beam.runners.dask.dask_runner.daskrunner"}


def runner_args(beam_args: list[str]) -> list[str]:
    """`beam_args` with any name of a Dask runner replaced by ours."""
    out, it = [], iter(beam_args)
    for arg in it:
        if arg == "--runner":
            out += [arg, _ours(next(it, ""))]
        elif arg.startswith("--runner="):
            out.append("--runner=" + _ours(arg.split("=", 1)[1]))
        else:
            out.append(arg)
    return out


def _ours(name: str) -> str:
    return DASK if name.lower() in _DASK_NAMES else name


def pipeline_options(beam_args: list[str] | None) -> PipelineOptions:
    """The options of one of our pipelines."""
    return PipelineOptions(runner_args(beam_args or []))


def check_runner_options(beam_args: list[str]) -> None:
    """Our runner options, checked before any work: a usage error is exit 2."""
    workers = pipeline_options(beam_args).view_as(ScarceDaskOptions).dask_workers
    if workers is not None and workers < 1:
        raise SpecError(f"--dask_workers {workers}: give at least 1")


class StagingOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--staging", default=None,
                            help="where resolved sources are copied for the workers to read (any Beam file "
                                 "system); default OUT/NAME/.staged-sources on any runner but the DirectRunner")


DIRECT = {"directrunner", "bundlebaseddirectrunner", "switchingdirectrunner", "prismrunner"}


def staging_location(beam_args: list[str] | None, corpus_dir: str) -> str | None:
    """Where sources are staged for the workers, or None when they read the launching machine's
    copies (the DirectRunner runs here)."""
    from apache_beam.io.filesystems import FileSystems

    options = pipeline_options(beam_args)
    if options.view_as(StagingOptions).staging:
        return options.view_as(StagingOptions).staging
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    name = runner if isinstance(runner, str) else type(runner).__name__
    return None if name.rsplit(".", 1)[-1].lower() in DIRECT else FileSystems.join(corpus_dir, ".staged-sources")
