"""Each record's own split: from its source (`source`), its place in the file (`tail`, set when
read), or a hash of its id (`hash`, stable as the corpus grows). Dedup then moves near-copies
to the most held-out split of their cluster."""
from __future__ import annotations

from typing import Any, Iterator

import apache_beam as beam

from pipelines.spec import SplitSpec


def hash_split(record_id: str, dev: float, test: float) -> str:
    x = int(record_id, 16) / float(1 << 64)
    return "test" if x < test else "dev" if x < test + dev else "train"


def assign_split(record: dict[str, Any], split: SplitSpec) -> dict[str, Any]:
    if split.method == "hash":
        return {**record, "split": hash_split(record["id"], split.dev, split.test)}
    return record  # `source` and `tail` splits were set when the unit was read


class AssignSplit(beam.DoFn):
    """The record stage that gives each record its split (`assign_split`)."""

    def __init__(self, split: SplitSpec):
        self.split = split

    def process(self, record: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield assign_split(record, self.split)
