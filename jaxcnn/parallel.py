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
                           process_id: int | None = None, timeout_s: int = 300,
                           peer_timeout_s: float = 60.0) -> str:
    """Start JAX's distributed runtime when the run spans several processes; say how.

    Explicit `coordinator` (host:port), `num_processes` and `process_id` win; otherwise a
    SLURM / Open MPI / Kubernetes launch with more than one task is detected from its
    environment. A single process needs nothing and gets nothing. JAX's own heartbeat is kept
    longer than `peer_timeout_s`, so `PeerWatch` (one line) sees a lost peer first.
    """
    heartbeat = max(100, int(2 * peer_timeout_s))
    explicit = (coordinator, num_processes, process_id)
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise UserError("--coordinator, --num-processes and --process-id go together: "
                            "give all three, e.g. --coordinator 10.0.0.1:1234 "
                            "--num-processes 2 --process-id 0")
        if not 0 <= process_id < num_processes:
            raise UserError(f"--process-id {process_id} must be in 0..{num_processes - 1}")
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   initialization_timeout=timeout_s,
                                   heartbeat_timeout_seconds=heartbeat)
        return f"distributed: process {process_id} of {num_processes}, coordinator {coordinator}"
    for var, name in _LAUNCHERS.items():
        size = os.environ.get(var)
        if size is not None and (not size.isdigit() or int(size) > 1):
            jax.distributed.initialize(initialization_timeout=timeout_s,
                                       heartbeat_timeout_seconds=heartbeat)
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


# ---- a lost peer

PEER_LOST_EXIT = 75  # EX_TEMPFAIL: nothing is wrong with the input; restart to resume


class PeerWatch:
    """Multi-process runs: when a process dies, every other one stops within `timeout_s`.

    Without this, a dead peer leaves the others blocked in a collective until JAX's own
    heartbeat (100 s by default) aborts them with a C++ stack trace. Each process bumps a
    counter in the distributed runtime's key-value store every `timeout_s / 5` seconds and
    reads the others'; a counter that has not moved for `timeout_s` (or a store that cannot be
    reached: the coordinator, process 0, is gone) ends this process with one line and exit code
    `PEER_LOST_EXIT`. Checkpoints are written whole or not at all, so the latest complete one
    is where a restart of all processes resumes. A process that finishes marks itself done.
    """

    def __init__(self, timeout_s: float, resume_from: str | None):
        self.timeout_s, self.resume_from = timeout_s, resume_from
        self._stop = None

    def __enter__(self):
        import threading
        client = _distributed_client()
        if client is not None and jax.process_count() > 1:
            self._stop = threading.Event()
            threading.Thread(target=self._run, args=(client,), daemon=True,
                             name="jaxcnn-peer-watch").start()
        return self

    def __exit__(self, *exc):
        if self._stop is not None:
            self._stop.set()
            try:
                _distributed_client().key_value_set(_alive_key(jax.process_index()), "done",
                                                    allow_overwrite=True)
            except Exception:  # noqa: BLE001 - the coordinator may be gone already
                pass
        return False

    def _run(self, client) -> None:
        import time
        me, seen, count = jax.process_index(), {}, 0
        peers = [p for p in range(jax.process_count()) if p != me]
        while not self._stop.wait(self.timeout_s / 5):
            now = time.monotonic()
            try:
                count += 1
                client.key_value_set(_alive_key(me), str(count), allow_overwrite=True)
                for p in peers:
                    value = _try_get(client, _alive_key(p))
                    if value == "done":
                        continue
                    if p not in seen or seen[p][0] != value:
                        seen[p] = (value, now)  # moved (or first seen): alive as of now
                    elif now - seen[p][1] > self.timeout_s:
                        self._lost(f"process {p} has not responded for {self.timeout_s:g} s")
            except Exception as e:  # noqa: BLE001 - any failure of the store: coordinator lost
                if self._stop.is_set():
                    return
                self._lost(f"the coordinator (process 0) cannot be reached "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:120]})")

    def _lost(self, why: str) -> None:
        import sys
        where = (f"the latest complete checkpoint in {self.resume_from} is intact"
                 if self.resume_from else "no workdir, nothing was saved")
        print(f"error: {why}; stopping process {jax.process_index()}: {where}; restart every "
              "process with the same command to resume", file=sys.stderr, flush=True)
        os._exit(PEER_LOST_EXIT)  # the main thread may be blocked in a collective forever


def _alive_key(process: int) -> str:
    return f"jaxcnn/alive/{process}"


def _try_get(client, key: str) -> str | None:
    try:
        return client.key_value_try_get(key)
    except Exception as e:  # noqa: BLE001
        if "NOT_FOUND" in str(e):
            return None  # not started yet: its counter starts when it enters the loop
        raise


def _distributed_client():
    from jax._src import distributed  # the runtime's client: no public accessor in jax 0.10
    return distributed.global_state.client
