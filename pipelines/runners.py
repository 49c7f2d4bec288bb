"""Pipeline options for every command: Beam's flags, with `--runner DaskRunner` naming ours.

`pipelines.dask_runner.DaskRunner` runs our pipelines on dask.distributed. Beam's own DaskRunner
drops tagged outputs and sinks silently (see that module), so every spelling that would reach it
(`DaskRunner` in any case, `dask`, or Beam's qualified path) is mapped to ours.

The DirectRunner (the default) is mapped to `LocalRunner`: Beam's FnApiRunner in this process,
which is what Beam 2.77's DirectRunner runs a batch pipeline on, without the DirectRunner's first
try, the PrismRunner, which downloads a Prism binary from GitHub (unpinned) and starts it: on a
machine without internet that try fails after a DNS lookup, a worker pool start and a second
translation of the pipeline; on one with internet the pipeline would run on another engine.
`--runner PrismRunner` still asks for Prism.

A DoFn that fails is logged by Beam with its traceback (`apache_beam.runners.common`, ERROR) before
the error is raised; the raised error is what our commands print, on one line, so that log is
dropped (`SCARCE_LM_BEAM_TRACEBACKS=1` keeps it, for debugging).
"""
from __future__ import annotations

import logging
import os

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle

from pipelines.dask_runner import ScarceDaskOptions  # defining it registers --dask_workers with Beam
from pipelines.errors import SpecError

DASK = "pipelines.dask_runner.DaskRunner"
LOCAL = "pipelines.runners.LocalRunner"
_DASK_NAMES = {"daskrunner", "dask", "apache_beam.runners.dask.dask_runner.daskrunner"}
_DIRECT_NAMES = {"directrunner", "direct", "switchingdirectrunner", "apache_beam.runners.direct.direct_runner.directrunner",
                 "apache_beam.runners.direct.direct_runner.switchingdirectrunner"}


class _NoFailedDoFnTraceback(logging.Filter):
    """Drops Beam's log of a failed DoFn (`_LOGGER.exception`, the only record with a traceback
    that module logs): the error itself is raised, and said once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None or os.environ.get("SCARCE_LM_BEAM_TRACEBACKS") == "1"


logging.getLogger("apache_beam.runners.common").addFilter(_NoFailedDoFnTraceback())


class LocalRunner(fn_runner.FnApiRunner):
    """Beam's FnApiRunner given the pipeline's options as the DirectRunner gives them (its workers
    read them from the provision info)."""

    def run_pipeline(self, pipeline, options: PipelineOptions):
        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        self._provision_info = fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        return super().run_pipeline(pipeline, options)


def runner_args(beam_args: list[str]) -> list[str]:
    """`beam_args` with any name of a Dask runner replaced by ours, and the DirectRunner (named or
    the default) by LocalRunner."""
    out, it, named = [], iter(beam_args), False
    for arg in it:
        if arg == "--runner":
            out += [arg, _ours(next(it, ""))]
            named = True
        elif arg.startswith("--runner="):
            out.append("--runner=" + _ours(arg.split("=", 1)[1]))
            named = True
        else:
            out.append(arg)
    return out if named else out + ["--runner", LOCAL]


def _ours(name: str) -> str:
    lowered = name.lower()
    return DASK if lowered in _DASK_NAMES else LOCAL if lowered in _DIRECT_NAMES else name


def pipeline_options(beam_args: list[str] | None) -> PipelineOptions:
    """The options of one of our pipelines. Beam's construction-time type check is off unless
    asked for (`--pipeline_type_check`): our elements are plain dicts and lists it has no hints
    for, and inferring them from every lambda was a tenth of a small build's time."""
    args = runner_args(beam_args or [])
    if not any(a.split("=", 1)[0] in ("--pipeline_type_check", "--no_pipeline_type_check") for a in args):
        args.append("--no_pipeline_type_check")
    return PipelineOptions(args)


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


DIRECT = {"directrunner", "bundlebaseddirectrunner", "switchingdirectrunner", "prismrunner", "fnapirunner",
          "localrunner"}


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
