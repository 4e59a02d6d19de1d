"""Checkpoints through Orbax: the whole train state, written atomically, restored onto any mesh.

A checkpoint is a directory with two items:
  state/  the TrainState pytree: step, params, BatchNorm statistics, optimizer state
  meta/   JSON: where the run stands (epoch, step in the epoch, the epoch's partial metric sums),
          the root RNG key, the metrics history, and the model it belongs to

A run keeps its checkpoints in `<workdir>/checkpoints/<step>/`. Orbax writes each one into a
temporary directory and renames it when complete, so a checkpoint is never visible half-written.
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
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import SingleDeviceSharding
from ml_collections import ConfigDict
from orbax.checkpoint import checkpoint_managers as policies

from jaxcnn.errors import UserError

_HANDLERS = {"state": ocp.StandardCheckpointHandler, "meta": ocp.JsonCheckpointHandler}


# ---------------------------------------------------------------- one checkpoint

def save(path: str, state, meta: dict | None = None) -> None:
    """Write `state` (a pytree of arrays: a TrainState, `nnx.state(model)`) and `meta` to `path`.

    Synchronous and atomic; refuses to overwrite an existing `path`.
    """
    path = os.path.abspath(path)
    if os.path.exists(path):
        raise UserError(f"{path} already exists: checkpoints are never overwritten, choose a "
                        "new path")
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as c:
        c.save(path, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             meta=ocp.args.JsonSave(meta or {})))


def restore(path: str, target) -> tuple:
    """Read checkpoint `path` (or a workdir's latest) into the structure of `target`.

    `target` is a pytree of arrays or `jax.ShapeDtypeStruct`s; each restored array gets the
    target's sharding, so a checkpoint saved on 8 devices restores onto 1 and the other way
    round. Returns `(state, meta)`. A missing, unreadable or mismatched checkpoint raises a
    UserError naming the first problem (for shapes: the parameter path and both shapes).
    """
    path = resolve(path)
    check_fits(shapes(path), _shapes_of(target), path)
    abstract = jax.tree.map(_abstract, target)
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as c:
            out = c.restore(path, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 - whatever Orbax or TensorStore raise on bad bytes
        raise _unreadable(path, e) from None
    return out["state"], dict(out["meta"] or {})


def load_arrays(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """Every array of checkpoint `path` on the host, by path (`params/conv1/kernel`), and meta."""
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
    return _flat(out["state"]), dict(out["meta"] or {})


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

    Keeps the latest `checkpoint.keep` plus the best by `checkpoint.best_metric`.
    Every process must call `save` (Orbax coordinates a multi-process save); only process 0
    writes the metadata.
    """

    def __init__(self, workdir: str, cfg: ConfigDict):
        keep = [policies.LatestN(cfg.keep)]
        if cfg.best_metric:
            keep.append(policies.BestN(get_metric_fn=lambda m: m[cfg.best_metric], n=1,
                                       reverse=cfg.best_mode == "min",
                                       keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep),
            enable_async_checkpointing=cfg.async_save)
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_handlers={k: h() for k, h in _HANDLERS.items()})

    def save(self, step: int, state, meta: dict, metrics: dict | None = None) -> bool:
        """Start saving `state` at `step`; False if that step is already saved."""
        if step in self.manager.all_steps():
            return False
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), metrics=metrics,
            force=True)

    def reached_preemption(self, step: int) -> bool:
        """Multi-process runs: JAX's preemption sync point, the same step on every process."""
        return jax.process_count() > 1 and self.manager.reached_preemption(step)

    def close(self) -> None:
        """Wait for the background save, then release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


# ---------------------------------------------------------------- preemption

class StopSignals:
    """While active, SIGTERM and SIGINT only set `received`; the loop stops at a step boundary.

    Single process only: in a multi-process run JAX's preemption sync manager watches SIGTERM
    and `RunCheckpoints.reached_preemption` agrees the step across processes.
    """

    def __init__(self):
        self.received: str | None = None
        self._old = {}

    def __enter__(self):
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False
