"""One device mesh with a `data` axis: which devices, and how arrays are laid out on them.

Shardings used throughout:
  batch      P('data')  each device holds a slice of the global batch;
  replicated P()        params, BatchNorm statistics and optimizer state, one copy per device.
"""

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcnn.errors import UserError


def select_devices(spec: str | int) -> list[jax.Device]:
    """`all`, a count `N` (the first N devices) or a comma list of device ids `0,2,5`."""
    devices = jax.devices()
    spec = str(spec).strip()
    if spec == "all":
        return devices
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
