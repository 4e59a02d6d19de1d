"""Checkpoints through Orbax: the whole train state, written atomically, restored onto any mesh.

A checkpoint is a directory with two items:
  state/  the TrainState pytree: step, params, BatchNorm statistics, optimizer state
  meta/   JSON: where the run stands (epoch, step in the epoch, the epoch's partial metric sums),
          the root RNG key, the metrics history, the model it belongs to, and `checksums`: one
          integer per array of state/ (see `checksums`), which `restore` and `load_arrays` check

A run keeps its checkpoints in `<workdir>/checkpoints/<step>/`. Orbax writes each one into a
temporary directory and renames it when complete, so a checkpoint is never visible half-written.
Neither Orbax nor TensorStore notices changed bytes inside an array's compressed data (they decode
to other numbers), hence the checksums.
This uses `orbax.checkpoint.CheckpointManager` with `ocp.args`, the stable API of orbax-checkpoint
0.12 (its v1 API is still under `orbax.checkpoint.experimental`).

    from jaxcnn import checkpoint
    checkpoint.save("/tmp/ckpt", nnx.state(model))  # any pytree of arrays
    nnx.update(model, checkpoint.restore("/tmp/ckpt", nnx.state(model))[0])
"""

import os
import signal
import threading

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import SingleDeviceSharding
from ml_collections import ConfigDict
from orbax.checkpoint import checkpoint_managers as policies

from jaxcnn import parallel
from jaxcnn.errors import UserError

_HANDLERS = {"state": ocp.StandardCheckpointHandler, "meta": ocp.JsonCheckpointHandler}


# ---------------------------------------------------------------- one checkpoint

def save(path: str, state, meta: dict | None = None) -> None:
    """Write `state` (a pytree of arrays: a TrainState, `nnx.state(model)`) and `meta` to `path`.

    Synchronous and atomic; refuses to overwrite an existing `path`. `meta` gains the arrays'
    `checksums`.
    """
    path = os.path.abspath(path)
    if os.path.exists(path):
        raise UserError(f"{path} already exists: checkpoints are never overwritten, choose a "
                        "new path")
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as c:
        c.save(path, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            meta=ocp.args.JsonSave(_with_checksums(meta or {}, state))))


def restore(path: str, target) -> tuple:
    """Read checkpoint `path` (or a workdir's latest) into the structure of `target`.

    `target` is a pytree of arrays or `jax.ShapeDtypeStruct`s; each restored array gets the
    target's sharding, so a checkpoint saved on 8 devices restores onto 1 and the other way
    round. Returns `(state, meta)`. A missing, unreadable or mismatched checkpoint raises a
    UserError naming the first problem (for shapes: the parameter path and both shapes), and so
    does an array that differs from the checksum saved with it (checkpoints written before
    checksums were recorded restore unchecked; an array restored into another dtype is not
    checked, its bits changed by the cast).
    """
    path = resolve(path)
    saved = _flat(_metadata(path))
    check_fits({k: tuple(v.shape) for k, v in saved.items()}, _shapes_of(target), path)
    abstract = jax.tree.map(_abstract, target)
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as c:
            out = c.restore(path, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 - whatever Orbax or TensorStore raise on bad bytes
        raise _unreadable(path, e) from None
    meta = dict(out["meta"] or {})
    cast = {k for k, x in _flat(target).items() if str(x.dtype) != str(saved[k].dtype)}
    verify(path, out["state"], meta, skip=cast)
    return out["state"], meta


def load_arrays(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """Every array of checkpoint `path` on the host, by path (`params/conv1/kernel`), and meta.

    Checked against the checksums saved with them, as `restore` does."""
    path = resolve(path)
    tree = _metadata(path)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as c:
            out = c.restore(path, args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(restore_args=restore_args),
                meta=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001
        raise _unreadable(path, e) from None
    arrays, meta = _flat(out["state"]), dict(out["meta"] or {})
    verify(path, arrays, meta)
    return arrays, meta


def copy_into(model, arrays: dict[str, np.ndarray], where: str, *, skip: str = ""):
    """Copy every parameter and BatchNorm statistic of nnx `model` from a checkpoint's `arrays`
    (`load_arrays`), in place, except those under top-level module `skip` (a head to replace).

    An array the checkpoint lacks, or one whose shape differs, is a UserError naming it.
    """
    from flax import nnx
    leaves, treedef = jax.tree_util.tree_flatten_with_path(nnx.state(model))
    new = []
    for keys, x in leaves:
        name = path_name(keys)
        if skip and name.split("/")[0] == skip:
            new.append(x)
            continue
        # a run's checkpoint holds a TrainState; `save(path, nnx.state(model))` does not
        saved = next((arrays[k] for k in (f"params/{name}", f"model_state/{name}", name)
                      if k in arrays), None)
        if saved is None:
            raise UserError(f"checkpoint {where} has no {name}: it was saved from a different "
                            "model; use the run's model.name (see its config.json)")
        if saved.shape != x.shape:
            raise UserError(f"checkpoint {where} does not fit the model: {name} has shape "
                            f"{saved.shape} in the checkpoint but {x.shape} in the model")
        new.append(jax.numpy.asarray(saved, x.dtype))
    nnx.update(model, treedef.unflatten(new))
    return model


def resolve(path: str) -> str:
    """A checkpoint directory from a checkpoint, a `checkpoints/` directory or a run's workdir."""
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise UserError(f"no checkpoint at {path}: give a run's workdir or one of its "
                        "checkpoints/<step> directories")
    if os.path.isdir(os.path.join(path, "state")):
        return path
    for d in (os.path.join(path, "checkpoints"), path):
        step = latest_step(d)
        if step is not None:
            return os.path.join(d, str(step))
    raise UserError(f"no checkpoint in {path}: it has no checkpoints/<step> directory; give a "
                    "run's workdir or one of its checkpoints/<step> directories")


def latest_step(directory: str) -> int | None:
    """The highest finished step in `directory` (Orbax's temporary directories are not steps)."""
    if not os.path.isdir(directory):
        return None
    steps = [int(n) for n in os.listdir(directory)
             if n.isdigit() and os.path.isdir(os.path.join(directory, n))]
    return max(steps, default=None)


# ---------------------------------------------------------------- checksums

# Element i of an array weighs (2i + 1) x this (Knuth's multiplicative-hash constant), mod 2^32:
# every weight is odd, so changing any one element changes the sum.
_WEIGHT = 2654435761


def checksums(state) -> dict[str, int]:
    """One uint32 per array of `state` (a pytree of arrays), by path (`params/conv1/kernel`).

    The sum over the array's elements i of `bits_i * (2i + 1) * 2654435761` mod 2^32, `bits_i`
    the element's bit pattern as uint32 (8- and 16-bit types zero-extended, 64-bit types as two
    halves, PRNG keys by their key data). One jitted program computes them where the arrays
    live, sharded over devices or processes: wrapping integer sums are exact in any order, so
    1 device and 8 give the same numbers, and a host copy gives those of its device original.
    """
    flat = _flat(state)
    if not flat:
        return {}
    sums = _checksum_leaves([_host_words(x) for x in flat.values()])
    return {k: int(v) for k, v in zip(flat, parallel.to_host(sums), strict=True)}


def verify(path: str, state, meta: dict, *, skip=frozenset()) -> None:
    """Refuse arrays of `state` that differ from the checksums in `meta` (but those in `skip`).

    A meta without checksums (checkpoints written before they were recorded) passes unchecked.
    """
    saved = meta.get("checksums")
    if saved is None:
        return
    now = checksums(state)
    bad = [k for k, v in now.items()
           if k not in skip and (not isinstance(saved, dict) or saved.get(k) != v)]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UserError(f"checkpoint {path} is corrupt: {bad[0]} does not match the checksum "
                        f"saved with it{more}: move it aside so that an earlier checkpoint is "
                        "used, or start a new --workdir")


def _with_checksums(meta: dict, state) -> dict:
    return {**meta, "checksums": checksums(state)}


def _host_words(x):
    """A leaf as JAX may take it: 64-bit host arrays without jax_enable_x64 would be narrowed
    on the way to the device, so they go as their uint32 halves (the device's bitcast order)."""
    if isinstance(x, jax.Array):
        return x
    x = np.asarray(x)
    if x.dtype.itemsize == 8 and not jax.config.jax_enable_x64:
        return np.ascontiguousarray(x).reshape(-1).view(np.uint32)
    return x


@jax.jit
def _checksum_leaves(leaves: list) -> list[jax.Array]:
    # Scalars: replicated wherever their array was sharded, so any process can read them.
    return [_checksum(x) for x in leaves]


def _checksum(x) -> jax.Array:
    if x.size == 0:  # nothing to sum (and JAX cannot bitcast an empty explicitly sharded array)
        return jnp.zeros((), jnp.uint32)
    words = _words(x)
    weights = (2 * jax.lax.iota(jnp.uint32, words.size) + 1) * jnp.uint32(_WEIGHT)
    return jnp.sum(words * weights, dtype=jnp.uint32)  # uint32 arithmetic wraps: mod 2^32


def _words(x) -> jax.Array:
    """`x`'s bit patterns as a flat uint32 vector."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    bits = 8 * x.dtype.itemsize
    if bits < 32:
        return jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{bits}")).astype(
            jnp.uint32).reshape(-1)
    return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)  # 64-bit: (..., 2) halves


# ---------------------------------------------------------------- shapes and paths

def shapes(path: str) -> dict[str, tuple]:
    """`{"params/conv1/kernel": (3, 3, 3, 32), ...}` from a checkpoint's metadata alone."""
    return {k: tuple(v.shape) for k, v in _flat(_metadata(path)).items()}


def check_fits(saved: dict[str, tuple], wanted: dict[str, tuple], path: str) -> None:
    """Refuse a checkpoint whose arrays do not match the run's, naming the first difference."""
    for name, shape in wanted.items():
        if name not in saved:
            raise UserError(f"checkpoint {path} has no {name}: it was saved from a different "
                            "model or optimizer; start a new --workdir or fix the config")
        if tuple(saved[name]) != tuple(shape):
            raise UserError(f"checkpoint {path} does not fit the model: {name} has shape "
                            f"{tuple(saved[name])} in the checkpoint but {tuple(shape)} in the "
                            "model")
    extra = sorted(set(saved) - set(wanted))
    if extra:
        raise UserError(f"checkpoint {path} has {extra[0]} (and {len(extra) - 1} more) that the "
                        "run does not: it was saved from a different model or optimizer")


def path_name(keys) -> str:
    """A pytree key path as `params/blocks/0/bn1/scale` (Variable `.value` levels dropped)."""
    parts = []
    for k in keys:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(p for p in parts if p != "value")


def _flat(tree) -> dict:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {path_name(k): v for k, v in leaves}


def _shapes_of(tree) -> dict[str, tuple]:
    return {k: tuple(np.shape(v)) for k, v in _flat(tree).items()}


def _abstract(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    sharding = getattr(x, "sharding", None) or SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


def _metadata(path: str):
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler(
                **{k: h() for k, h in _HANDLERS.items()})) as c:
            tree = c.metadata(path).item_metadata["state"]
    except Exception as e:  # noqa: BLE001
        raise _unreadable(path, e) from None
    if tree is None:
        raise _unreadable(path, ValueError("no readable state/ item"))
    return getattr(tree, "tree", tree)


def _unreadable(path: str, e: Exception) -> UserError:
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    return UserError(f"checkpoint {path} cannot be read, it is corrupt or truncated "
                     f"({type(e).__name__}: {first[:200]}): move it aside to resume from an "
                     "earlier one, or start a new --workdir")


# ---------------------------------------------------------------- a run's checkpoints

class RunCheckpoints:
    """`<workdir>/checkpoints`: saved every N epochs / steps and at the end, in the background.

    Keeps the latest `checkpoint.keep` plus the best by `selection` (metric, max|min: the
    run's `config.selection_metric`; ("", _) = none). Every process must call `save` (Orbax
    coordinates a multi-process save); only process 0 writes the metadata.
    """

    def __init__(self, workdir: str, cfg: ConfigDict, selection: tuple[str, str] = ("", "max")):
        keep = [policies.LatestN(cfg.keep)]
        metric, mode = selection
        if metric:
            keep.append(policies.BestN(get_metric_fn=lambda m: m[metric], n=1,
                                       reverse=mode == "min",
                                       keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep),
            enable_async_checkpointing=cfg.async_save)
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_handlers={k: h() for k, h in _HANDLERS.items()})

    def save(self, step: int, state, meta: dict, metrics: dict | None = None) -> bool:
        """Start saving `state` at `step`; False if that step is already saved. `meta` gains the
        arrays' `checksums`, computed before this returns (the state may change after)."""
        if step in self.manager.all_steps():
            return False
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            meta=ocp.args.JsonSave(_with_checksums(meta, state))), metrics=metrics, force=True)

    def reached_preemption(self, step: int) -> bool:
        """Multi-process runs: JAX's preemption sync point, the same step on every process."""
        return jax.process_count() > 1 and self.manager.reached_preemption(step)

    def wait(self) -> None:
        """Wait for the background save, raising its error if it failed."""
        self.manager.wait_until_finished()

    def check(self) -> None:
        """Raise the error of a background save that has failed, without waiting for one in
        progress (a finished save's error is held by Orbax's finalize thread until waited on:
        `check_for_errors` alone does not see it)."""
        if not self.manager.is_saving_in_progress():
            self.manager.wait_until_finished()

    def close(self) -> None:
        """Wait for the background save, then release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


# ---------------------------------------------------------------- preemption

class StopSignals:
    """While active, SIGTERM and SIGINT only set `received`; the loop stops at a step boundary,
    saves and returns.

    Bounded: if the process is still running `timeout_s` after the signal (a save stuck on a
    hung file system, a step that never ends), it exits with 128 + the signal and one line; a
    second signal exits at once. The checkpoints already written are complete (Orbax renames a
    checkpoint into place only when it is whole), so nothing is lost but the one in flight.

    Single process only: in a multi-process run JAX's preemption sync manager watches SIGTERM
    and `RunCheckpoints.reached_preemption` agrees the step across processes; `deadline` then
    bounds the save that follows.
    """

    def __init__(self, timeout_s: float = 120.0):
        self.received: str | None = None
        self.timeout_s = timeout_s
        self._old, self._timer = {}, None

    def __enter__(self):
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        name = signal.Signals(signum).name
        if self.received:
            _exit_now(name, f"a second {name} before the run could stop")
        self.received = name
        self.deadline(name)

    def deadline(self, name: str) -> None:
        """Exit `timeout_s` from now unless the run has stopped by then."""
        if self._timer is None:
            self._timer = threading.Timer(self.timeout_s, _exit_now, args=(
                name, f"the run did not stop within checkpoint.stop_timeout_s={self.timeout_s:g}"
                      " s (a save or a step still running)"))
            self._timer.daemon = True
            self._timer.start()

    def __exit__(self, *exc):
        if self._timer is not None:
            self._timer.cancel()
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


def _exit_now(name: str, why: str) -> None:
    import sys
    print(f"error: {name}: {why}; stopping without saving: the checkpoints already written "
          "are intact", file=sys.stderr, flush=True)
    os._exit(128 + signal.Signals[name].value)  # the main thread may be blocked in C++
