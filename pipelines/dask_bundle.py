"""One partition through one DoFn, on a Dask worker: what the Dask runner (dask_runner.py) runs
for each partition of a ParDo, the DoFn's whole lifecycle, its tagged outputs and what
`finish_bundle` yields kept.
"""
from __future__ import annotations

from typing import Iterable

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

_GLOBAL = (GlobalWindow(),)


class _Collect(Receiver):
    def __init__(self, tag: str | None, out: list, tagged: bool):
        self.tag, self.out, self.tagged = tag, out, tagged

    def receive(self, windowed_value: WindowedValue) -> None:
        self.out.append((self.tag, windowed_value.value) if self.tagged else windowed_value.value)


class _Receivers(dict):
    def __init__(self, out: list, tagged: bool):
        super().__init__()
        self.out, self.tagged = out, tagged

    def __missing__(self, tag):
        self[tag] = _Collect(tag, self.out, self.tagged)
        return self[tag]


def _needs_invoker(fn: beam.DoFn, side_views: list) -> bool:
    """Whether the DoFn asks for anything but its element and plain arguments (side inputs, the
    window, timestamps, state, timers, restrictions): then Beam's DoFnInvoker runs it."""
    from apache_beam.transforms.core import _DoFnParam

    signature = DoFnSignature(fn)
    return bool(side_views) or signature.is_splittable_dofn() or signature.is_stateful_dofn() or \
        signature.has_timers() or signature.has_bundle_finalization() or \
        any(isinstance(d, _DoFnParam) for m in (signature.process_method, signature.finish_bundle_method,
                                                 signature.start_bundle_method) for d in m.defaults)


def run_bundle(items: Iterable, fn: beam.DoFn, label: str, args: list, kwargs: dict, side_views: list,
                tagged: bool, *side_values: list) -> list:
    """One partition through one DoFn, its whole lifecycle; returns its outputs (tagged: as
    (tag, value) pairs), including those of finish_bundle."""
    if not _needs_invoker(fn, side_views):
        return _run_plain(items, fn, args, kwargs, tagged)
    out: list = []
    receivers = _Receivers(out, tagged)
    handler = _OutputHandler(window_fn=GlobalWindows(), main_receivers=receivers[None], tagged_receivers=receivers,
                             per_element_output_counter=None, output_batch_converter=None,
                             process_yields_batches=False, process_batch_yields_elements=False)
    side_inputs = [SideInputMap(view, options, [WindowedValue(v, 0, _GLOBAL) for v in values])
                   for (view, options), values in zip(side_views, side_values)]
    invoker = DoFnInvoker.create_invoker(DoFnSignature(fn), handler, context=DoFnContext(label, state=None),
                                         side_inputs=side_inputs, input_args=args, input_kwargs=kwargs,
                                         user_state_context=None,
                                         bundle_finalizer_param=beam.DoFn.BundleFinalizerParam())
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(WindowedValue(item, 0, _GLOBAL))
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    return out



def _run_plain(items: Iterable, fn: beam.DoFn, args: list, kwargs: dict, tagged: bool) -> list:
    """A DoFn that takes only its element and plain arguments, called directly: the invoker's
    per-element work (windowed values, output handler) is most of the time of a light DoFn."""
    out: list = []

    def emit(results: Iterable | None) -> None:
        for o in results or ():
            tag = None
            if isinstance(o, pvalue.TaggedOutput):
                tag, o = o.tag, o.value
            if isinstance(o, WindowedValue):
                o = o.value
            out.append((tag, o) if tagged else o)

    fn.setup()
    emit(fn.start_bundle())
    process = fn.process
    for item in items:
        emit(process(item, *args, **kwargs))
    emit(fn.finish_bundle())
    fn.teardown()
    return out
