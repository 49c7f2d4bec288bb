"""Beam on Dask: `--runner DaskRunner` runs any of our pipelines on a dask.distributed cluster.

Beam's own `DaskRunner` (apache_beam.runners.dask, 2.77) cannot run them: it keys Dask bags by
the producing transform, so every tagged output of a multi-output ParDo is the same bag (a
`rejected` side receives every element); it computes only the last bag of the graph, so in a
pipeline with several sinks all but one are silently skipped; and a side input is recomputed
inside each task that reads it, and `finish_bundle` output is dropped
(runbooks/dask-runner-upstream-bug.md has the report). This runner keeps Beam's option parsing
and its Create primitive, and translates the rest itself:

- one bag per output PCollection: a multi-output ParDo runs once into a bag of (tag, value)
  pairs, split into one bag per tag; what `finish_bundle` outputs is kept;
- a side input is its whole bag handed to the reading partitions as a Dask dependency;
- GroupByKey is an all-to-all shuffle on a stable hash of the key (the same in every process);
  Reshuffle spreads the bag over PARTITIONS_PER_WORKER partitions per worker; Flatten joins its
  inputs' partitions into at most as many;
- a DoFn that takes only its element and plain arguments is called directly; one that asks for
  side inputs, windows, timestamps or state goes through Beam's DoFnInvoker;
- every leaf (a PCollection that nothing reads) is computed, so every sink runs;
- the pipeline is translated as built: Beam's round trip through its proto form (for runners
  that submit the proto) is skipped;
- only the global window: another windowing, or a primitive it does not know, is refused before
  anything runs rather than run wrongly.

`--dask_client_address tcp://HOST:PORT` (or `--dask_scheduler_file`) uses a running cluster;
otherwise a local cluster of `--dask_workers N` single-threaded worker processes (default: one
per CPU) is started once per process and reused by every pipeline it runs.
"""
from __future__ import annotations

import atexit
import itertools
import logging
import os
import time
from typing import Any, Iterable

import apache_beam as beam
import xxhash
from apache_beam import pvalue
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor, PTransformOverride
from apache_beam.runners.dask.dask_runner import DaskOptions
from apache_beam.runners.dask.dask_runner import DaskRunner as BeamDaskRunner
from apache_beam.runners.dask.overrides import _Create
from apache_beam.runners.runner import PipelineResult, PipelineState
from apache_beam.transforms.window import GlobalWindows

from pipelines.dask_bundle import run_bundle

PARTITIONS_PER_WORKER = 1
# What a local cluster's workers import as they start; this module's `dask_setup` then runs in each.
PRELOAD = ("apache_beam", "pipelines.build_corpus", "pipelines.dask_runner")
_CLUSTERS: dict[int, Any] = {}


class ScarceDaskOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--dask_workers", type=int, default=None,
                            help="worker processes of the local Dask cluster started when no "
                                 "--dask_client_address is given (default: one per CPU)")


# --- the graph: Beam transforms to Dask bags -------------------------------------------------

class _GroupByKeyOnly(beam.PTransform):
    """A GroupByKey the visitor translates whole (Beam's override expands into window reification
    this runner does not need: it runs the global window only)."""

    def expand(self, pcoll):
        return pvalue.PCollection.from_(pcoll)


class _Reshuffle(beam.PTransform):
    def expand(self, pcoll):
        return pvalue.PCollection.from_(pcoll)


class _Flatten(beam.PTransform):
    def expand(self, pcolls):
        pcolls = [pcolls] if isinstance(pcolls, pvalue.PCollection) else list(pcolls)
        return pvalue.PCollection(self.pipeline, is_bounded=all(p.is_bounded for p in pcolls))


def _replacing(cls: type, make) -> PTransformOverride:
    class Override(PTransformOverride):
        def matches(self, applied: AppliedPTransform) -> bool:
            return applied.transform.__class__ == cls

        def get_replacement_transform_for_applied_ptransform(self, applied: AppliedPTransform):
            return make(applied.transform)

    return Override()


def overrides() -> list[PTransformOverride]:
    return [_replacing(beam.Create, lambda t: _Create(t.values)),
            _replacing(beam.GroupByKey, lambda t: _GroupByKeyOnly()),
            _replacing(beam.Reshuffle, lambda t: _Reshuffle()),
            _replacing(beam.Flatten, lambda t: _Flatten())]


def _of_tag(pairs: list, tag: str | None) -> list:
    return [v for t, v in pairs if t == tag]


def _concat(parts: list[list]) -> list:
    return list(itertools.chain.from_iterable(parts))


def _stable_hash(key: Any) -> int:
    # repr of the str, int, bytes, None and tuple keys our pipelines use is the same in every
    # process, unlike hash(), which is salted per process for str.
    return xxhash.xxh64_intdigest(repr(key).encode("utf-8"))


def _split_by_key(part: Iterable[tuple], n: int) -> list[list]:
    buckets: list[list] = [[] for _ in range(n)]
    for kv in part:
        buckets[_stable_hash(kv[0]) % n].append(kv)
    return buckets


def _bucket(buckets: list[list], j: int) -> list:
    return buckets[j]


def _group(*buckets: list) -> list[tuple]:
    groups: dict[Any, list] = {}
    for bucket in buckets:
        for key, value in bucket:
            groups.setdefault(key, []).append(value)
    return list(groups.items())


def group_by_key(bag: Any, n: int) -> Any:
    """An all-to-all shuffle: each input partition split into `n` buckets by a stable hash of the
    key, output partition j groups bucket j of every input (n_in * n small tasks; Dask's own
    tasks shuffle makes several times more for the same bag). Into one partition (one worker),
    every input partition goes whole to one task: nothing to split."""
    from dask import bag as db
    from dask import delayed

    parts = bag.to_delayed(optimize_graph=False)
    if n == 1:
        return db.from_delayed([delayed(_group)(*parts)])
    split = [delayed(_split_by_key)(part, n) for part in parts]
    return db.from_delayed([delayed(_group)(*[delayed(_bucket)(s, j) for s in split]) for j in range(n)])


def flatten(bags: list[Any], n: int) -> Any:
    """The bags as one of at most `n` partitions, each the concatenation of a run of the inputs'
    partitions (dask's concat keeps every input partition: flattens of flattens multiplied the
    partitions, and every later step ran a task per partition)."""
    from dask import bag as db
    from dask import delayed

    parts = [part for bag in bags for part in bag.to_delayed(optimize_graph=False)]
    if len(parts) <= n:
        return db.concat(bags)
    runs = [parts[len(parts) * i // n:len(parts) * (i + 1) // n] for i in range(n)]
    return db.from_delayed([delayed(_concat)(run) for run in runs])


class Unsupported(Exception):
    """A transform or windowing this runner does not translate."""


class _BagVisitor(PipelineVisitor):
    """Builds one Dask bag per PCollection, and remembers which PCollections something reads."""

    def __init__(self, partitions: int, bag_kwargs: dict):
        self.bags: dict[pvalue.PCollection, Any] = {}
        self.read: set[int] = set()
        self.partitions, self.bag_kwargs = partitions, bag_kwargs

    def visit_transform(self, node: AppliedPTransform) -> None:
        from dask import bag as db

        transform = node.transform
        for out in node.outputs.values():
            if not isinstance(out.windowing.windowfn, GlobalWindows):
                raise Unsupported(f"{node.full_label}: only the global window runs on Dask")
        inputs = [p for p in node.main_inputs.values() if isinstance(p, pvalue.PCollection)]
        self.read.update(id(p) for p in inputs)
        self.read.update(id(si.pvalue) for si in node.side_inputs)
        bags = [self.bags[p] for p in inputs]
        if isinstance(transform, _Create):
            self._set(node, self._create(transform.values, db))
        elif isinstance(transform, _Flatten):
            self._set(node, flatten(bags, self.partitions) if bags else db.from_sequence([], npartitions=1))
        elif isinstance(transform, _Reshuffle):
            self._set(node, bags[0].repartition(npartitions=self.partitions))
        elif isinstance(transform, _GroupByKeyOnly):
            self._set(node, group_by_key(bags[0], self.partitions))
        elif isinstance(transform, beam.ParDo):
            self._pardo(node, bags[0])
        else:
            raise Unsupported(f"{node.full_label}: {type(transform).__name__} has no Dask translation")

    def _create(self, values: Iterable, db) -> Any:
        values = list(values)
        if not values:
            return db.from_sequence([], npartitions=1)
        return db.from_sequence(values, npartitions=min(len(values), self.bag_kwargs.get("npartitions") or self.partitions))

    def _set(self, node: AppliedPTransform, bag: Any) -> None:
        (out,) = node.outputs.values()
        self.bags[out] = bag

    def _pardo(self, node: AppliedPTransform, bag: Any) -> None:
        from dask import delayed

        transform = node.transform
        args, kwargs = transform.args, transform.kwargs  # side inputs as placeholders the invoker fills
        views = [(type(si), si._view_options()) for si in node.side_inputs]
        # a side input: its bag's partitions joined in one task
        sides = [delayed(_concat)(self.bags[si.pvalue].to_delayed(optimize_graph=False)) for si in node.side_inputs]
        tagged = len(node.outputs) > 1
        # Tasks named by their transform, as Dask's dashboard and task stream show them.
        result = bag.map_partitions(run_bundle, transform.fn, node.full_label, list(args), kwargs, views, tagged,
                                    *sides, token=node.full_label)
        for tag, out in node.outputs.items():
            self.bags[out] = result.map_partitions(_of_tag, tag) if tagged else result

    def leaves(self) -> list[Any]:
        """Every bag that nothing reads: the sinks and the unread outputs."""
        return [bag for p, bag in self.bags.items() if id(p) not in self.read]


# --- the cluster and the run ------------------------------------------------------------------

class _NoComputeFailed(logging.Filter):
    """Drops a worker's log of a failed task (its traceback): the error reaches the client, and
    the command says it once, on one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Compute Failed")


def dask_setup(worker: Any) -> None:
    """Run in each worker of a local cluster as it starts (dask's preload hook)."""
    logging.getLogger("distributed.worker").addFilter(_NoComputeFailed())


def local_cluster(workers: int) -> Any:
    """A local cluster of `workers` single-threaded processes, started once per process."""
    if workers not in _CLUSTERS:
        import dask
        from distributed import LocalCluster

        logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO lines would drown ours
        # The workers' too: their logs reach stderr through the root handler that importing Beam
        # sets up, which `silence_logs` does not touch. Dask sets it before spawning them, so in
        # this process's environment too (a later subprocess inherits it).
        quiet = {"distributed.nanny.pre-spawn-environ.DASK_LOGGING__DISTRIBUTED": "warning"}
        # Workers import Beam and the pipeline stages as they start, not inside the first task.
        with dask.config.set(quiet):
            _CLUSTERS[workers] = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                              dashboard_address=None, silence_logs=logging.ERROR,
                                              preload=list(PRELOAD))
        if len(_CLUSTERS) == 1:
            atexit.register(close_local_clusters)
    return _CLUSTERS[workers]


def close_local_clusters() -> None:
    while _CLUSTERS:
        _CLUSTERS.popitem()[1].close()


def client_for(options: PipelineOptions) -> Any:
    from distributed import Client

    dask = options.view_as(DaskOptions)
    workers = options.view_as(ScarceDaskOptions).dask_workers
    if dask.address or dask.scheduler_file:
        kwargs = {k: v for k, v in {"address": dask.address, "scheduler_file": dask.scheduler_file,
                                    "timeout": dask.timeout, "name": dask.name}.items() if v is not None}
        return Client(connection_limit=dask.connection_limit, **kwargs)
    return Client(local_cluster(workers or os.cpu_count() or 1), set_as_default=False)


class DaskRunnerResult(PipelineResult):
    def __init__(self, client: Any, futures: list):
        super().__init__(PipelineState.RUNNING)
        self.client, self.futures = client, futures

    def wait_until_finish(self, duration: int | None = None) -> str:
        deadline = None if duration is None else time.monotonic() + duration / 1000
        while deadline is not None and not all(f.done() for f in self.futures):
            if time.monotonic() > deadline:
                return self._state  # still running
            time.sleep(0.05)
        try:
            self.client.gather(self.futures)  # a leaf's count each; raises a worker's error here
            self._state = PipelineState.DONE
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        finally:
            self.client.close()
        return self._state

    def cancel(self) -> str:
        self.client.cancel(self.futures)
        self.client.close()
        self._state = PipelineState.CANCELLED
        return self._state

    def metrics(self):
        raise NotImplementedError("the Dask runner collects no Beam metrics")


class DaskRunner(BeamDaskRunner):
    """Beam's DaskRunner with a translation that keeps every output and runs every sink."""

    @staticmethod
    def is_fnapi_compatible() -> bool:
        # Beam sends a pipeline for a runner that says False through its proto form and back
        # before running it, a check for runners that submit the proto. This one translates the
        # Python objects and Dask pickles the DoFns, so that round trip was only its cost (a
        # quarter of a second for a build); the `beam_fn_api` experiment that True turns on is
        # read by no transform of Beam 2.77.
        return True

    def run_pipeline(self, pipeline, options):
        pipeline.replace_all(overrides())
        client = client_for(options)
        try:
            workers = max(1, len(client.scheduler_info().get("workers", {})))
            dask_options = options.view_as(DaskOptions)
            visitor = _BagVisitor(PARTITIONS_PER_WORKER * workers, {"npartitions": dask_options.npartitions})
            pipeline.visit(visitor)
            counts = [bag.count() for bag in visitor.leaves()]
            futures = client.compute(counts, optimize_graph=False)
        except BaseException:
            client.close()
            raise
        return DaskRunnerResult(client, list(futures))
