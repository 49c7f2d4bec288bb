"""Data parallelism over every local device: a 1-D mesh with axis "data".

Batches are sharded along their first axis, parameters and optimiser state replicated; XLA
inserts the gradient all-reduce. One device is the same code with a mesh of one.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lm.errors import UsageError


def make_mesh() -> Mesh:
    return Mesh(np.array(jax.local_devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def check_batch(batch_size: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise UsageError(f"--batch {batch_size} must be a multiple of the {n} local devices")


def put(tree: Any, sharding: NamedSharding) -> Any:
    return jax.device_put(tree, sharding)
