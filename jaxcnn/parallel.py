"""One device mesh with a `data` axis: which devices, and how arrays are laid out on them.

Shardings used throughout:
  batch      P('data')  each device holds a slice of the global batch;
  replicated P()        params, BatchNorm statistics and optimizer state, one copy per device.
"""

import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcnn.errors import UserError


def select_devices(spec: str | int | list) -> list[jax.Device]:
    """`all`, a count `N` (the first N devices), a comma list of device ids `0,2,5`, or a list
    of `jax.Device`s (taken as given)."""
    if isinstance(spec, (list, tuple)):
        return list(spec)
    devices = jax.devices()
    spec = str(spec).strip()
    if spec == "all":
        return devices
    if jax.process_count() > 1:
        raise UserError(f"--devices {spec}: a run over {jax.process_count()} processes uses "
                        "every device of every process; use --devices all")
    try:
        if "," in spec:
            ids = [int(s) for s in spec.split(",") if s.strip()]
            by_id = {d.id: d for d in devices}
            missing = [i for i in ids if i not in by_id]
            if missing or len(set(ids)) != len(ids):
                raise UserError(f"--devices {spec}: ids must be distinct and among "
                                f"{sorted(by_id)}")
            return [by_id[i] for i in ids]
        n = int(spec)
    except ValueError:
        raise UserError(f"--devices {spec!r} is not understood: use all, a count such as 2, "
                        "or a list of device ids such as 0,3") from None
    if not 1 <= n <= len(devices):
        raise UserError(f"--devices {n}: this machine has {len(devices)} "
                        f"{devices[0].platform} device(s); use 1..{len(devices)} or all")
    return devices[:n]


def make_mesh(devices: list[jax.Device]) -> Mesh:
    """A 1-D mesh named `data` over `devices` (Auto axes: XLA propagates shardings)."""
    return jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,),
                         devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Split the leading (batch) axis over the `data` axis."""
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device."""
    return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
    """The global batch must split evenly over the devices."""
    n = mesh.size
    if batch_size % n:
        raise UserError(f"{what}={batch_size} does not divide by the {n} devices of the mesh: "
                        f"use a multiple of {n} or fewer devices (--devices)")


# ---- several hosts

# Launchers whose environment says "you are one of several tasks": jax.distributed.initialize()
# then reads the coordinator, process count and id from that environment by itself.
_LAUNCHERS = {"SLURM_NTASKS": "SLURM", "OMPI_COMM_WORLD_SIZE": "Open MPI",
              "PMI_SIZE": "MPICH/PMI", "JOBSET_NAME": "Kubernetes JobSet"}


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, timeout_s: int = 300) -> str:
    """Start JAX's distributed runtime when the run spans several processes; say how.

    Explicit `coordinator` (host:port), `num_processes` and `process_id` win; otherwise a
    SLURM / Open MPI / Kubernetes launch with more than one task is detected from its
    environment. A single process needs nothing and gets nothing.
    """
    explicit = (coordinator, num_processes, process_id)
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise UserError("--coordinator, --num-processes and --process-id go together: "
                            "give all three, e.g. --coordinator 10.0.0.1:1234 "
                            "--num-processes 2 --process-id 0")
        if not 0 <= process_id < num_processes:
            raise UserError(f"--process-id {process_id} must be in 0..{num_processes - 1}")
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   initialization_timeout=timeout_s)
        return f"distributed: process {process_id} of {num_processes}, coordinator {coordinator}"
    for var, name in _LAUNCHERS.items():
        size = os.environ.get(var)
        if size is not None and (not size.isdigit() or int(size) > 1):
            jax.distributed.initialize(initialization_timeout=timeout_s)
            return (f"distributed ({name}): process {jax.process_index()} of "
                    f"{jax.process_count()}")
    return "single process"


def describe(mesh: Mesh) -> str:
    """One line: the devices of the mesh, their kind, and the processes they belong to."""
    devices = list(mesh.devices.flat)
    kinds = sorted({d.device_kind for d in devices})
    processes = sorted({d.process_index for d in devices})
    return (f"mesh: {len(devices)} device(s) on axis 'data' ({', '.join(kinds)}; "
            f"{devices[0].platform}; ids {[d.id for d in devices]}) over {len(processes)} "
            f"process(es); this is process {jax.process_index()}")


def is_main_process() -> bool:
    """Only process 0 prints progress and writes files."""
    return jax.process_index() == 0


def to_host(tree):
    """Fetch replicated arrays to numpy, also when the mesh spans other processes' devices."""
    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)
    return jax.tree.map(get, tree)


def host_local_batch(local_rows: np.ndarray, sharding: NamedSharding, global_rows: int):
    """A global batch from this process's rows of it (every process passes its own slice)."""
    global_shape = (global_rows,) + local_rows.shape[1:]
    return jax.make_array_from_process_local_data(sharding, local_rows, global_shape)
