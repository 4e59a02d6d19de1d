"""How training batches reach the train step: two feeds with one interface.

`DeviceFeed`: the uint8 training set sits on every device; each call gathers its batches there
and runs several optimizer steps as one `lax.fori_loop` with a static trip count (lengths are
powers of two up to `steps_per_call`, so a run compiles a handful of executables at most).
`HostFeed`: the fallback for data that does not fit; one batch is copied from the host per call.
`StreamFeed`: records read from disk and decoded every epoch by Grain workers (data/stream.py).
Both take the same steps with the same keys: a run gives the same result either way.

    state, sums = feed.advance(state, sums, epoch, i, n, cfg, keys)  # steps i .. i+n-1
"""

import functools
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh

from jaxcnn import parallel
from jaxcnn.data import Dataset
from jaxcnn.data.pipeline import Batch, HostBatches, epoch_order, steps_per_epoch
from jaxcnn.errors import UserError
from jaxcnn.steps import (
    StepConfig,
    TrainState,
    initial_train_sums,
    train_batch_step,
    train_gathered_step,
)

# Optimizer steps per compiled call (`train.steps_per_call=0`), by backend and model, from
# `scripts/bench.py --sweep` on the 2-core CPU (jax 0.10.2; results/bench-sweep-2026-11-29.json):
# ms per step at 1 / 2 / 4 / 8 / 16 / 32 steps per call were, for cnn b64 35 / 27 / 24 / 22 /
# 21 / 22, resnet20 b64 203 / 156 / 132 / 120 / 112 / 109, resnet18 b64 1161 / 973 / 909 / 881 /
# 871 / 863, airbench b128 499 / 418 / 384 / 366 / 357 / 350: the loop pays for every model, and
# beyond 16 by 3% at most, while a signal is seen only between calls. GPUs: not measured yet.
AUTO_STEPS_PER_CALL = {"cpu": {"cnn": 16, "resnet20": 16, "resnet18": 16, "airbench": 16}}
BACKEND_DEFAULT = {"cpu": 16}
OTHER_BACKENDS = 64


def steps_per_call(setting: int, platform: str, model_name: str, *,
                   xla_convolutions: bool = False) -> int:
    """`train.steps_per_call`, with 0 (auto) resolved for `platform` and model `model_name`.

    `xla_convolutions`: the model trains with XLA's own convolutions (quant.mode=qat), whose
    gradients XLA:CPU runs many times slower inside a loop (see models/layers.py): one step
    per call there. Seed CNN QAT on 640 digits: 0.6 s an epoch at 1 step per call, 7.3 s at 16.
    """
    if setting:
        return setting
    if xla_convolutions and platform == "cpu":
        return 1
    by_model = AUTO_STEPS_PER_CALL.get(platform, {})
    return by_model.get(model_name, BACKEND_DEFAULT.get(platform, OTHER_BACKENDS))


def pieces(n: int, k: int) -> list[int]:
    """Split `n` steps into compiled calls: as many of the largest power of two <= `k` as fit,
    then the binary digits of the rest (13 with k=16: 8, 4, 1)."""
    top = 1 << (max(k, 1).bit_length() - 1)
    out = [top] * (n // top)
    rest = n % top
    out += [1 << b for b in reversed(range(rest.bit_length())) if rest >> b & 1]
    return out


class RunKeys(NamedTuple):
    """The keys a run's data order and augmentation fold from, derived from its root key."""
    data: jax.Array  # the permutation of each epoch
    aug: jax.Array  # crops and flips of each step

    @classmethod
    def of(cls, root: jax.Array) -> "RunKeys":
        return cls(jax.random.fold_in(root, 1), jax.random.fold_in(root, 2))


def _loop(state, sums, images, labels, perm, epoch, i, aug_key, *, n: int, cfg: StepConfig,
          batch_size: int, sharding, valid: int | None):
    """Steps `i .. i+n-1` of the epoch, `n` static: XLA knows the trip count."""
    step = functools.partial(train_gathered_step, cfg=cfg, batch_size=batch_size,
                             sharding=sharding, valid=valid)
    if n == 1:
        return step(state, sums, images, labels, perm, epoch, i, aug_key)
    return jax.lax.fori_loop(
        0, n, lambda j, c: step(*c, images, labels, perm, epoch, i + j, aug_key), (state, sums))


class DeviceFeed:
    """The training set on every device; up to `per_call` steps per compiled call.

    `drop_remainder=False`: the epoch ends with a padded batch whose extra rows are masked."""

    def __init__(self, data: Dataset, batch_size: int, mesh: Mesh, per_call: int,
                 drop_remainder: bool = True):
        repl = parallel.replicated(mesh)
        self.batch_size, self.per_call, self.n = batch_size, per_call, len(data.train_labels)
        self.steps = steps_per_epoch(self.n, batch_size, drop_remainder)
        self._valid = None if drop_remainder else self.n
        self.images, self.labels = jax.device_put((data.train_images, data.train_labels), repl)
        self._batch_sh, self._repl = parallel.batch_sharding(mesh), repl
        self._perm = (None, None)  # (epoch, its permutation), computed once per epoch

    def _compiled(self, n: int, cfg: StepConfig):
        return _jit_loop(n, cfg, self.batch_size, self._valid, self._batch_sh, self._repl)

    def _args(self, epoch: int, keys: RunKeys):
        if self._perm[0] != epoch:
            self._perm = (epoch, epoch_order(keys.data, epoch, self.n, self.steps,
                                             self.batch_size))
        return self.images, self.labels, self._perm[1]

    def advance(self, state: TrainState, sums: dict, epoch: int, i: int, n: int,
                cfg: StepConfig, keys: RunKeys) -> tuple[TrainState, dict]:
        """Steps `i .. i+n-1` of `epoch` (0-based), in as few compiled calls as `pieces` gives."""
        args = self._args(epoch, keys)
        for length in pieces(n, self.per_call):
            state, sums = self._compiled(length, cfg)(state, sums, *args, epoch, i, keys.aug)
            i += length
        return state, sums

    def compile(self, state: TrainState, lengths, cfg: StepConfig, keys: RunKeys) -> None:
        """Compile the calls of `lengths` steps ahead of time (before a timed run)."""
        sums = jax.device_put(initial_train_sums(), self._repl)
        args = self._args(0, keys)
        for length in sorted({p for n in lengths for p in pieces(n, self.per_call)}):
            self._compiled(length, cfg).lower(state, sums, *args, 0, 0, keys.aug).compile()


@functools.cache
def _jit_loop(n: int, cfg: StepConfig, batch_size: int, valid: int | None, batch_sh, repl):
    # state and sums are donated: updated in place; every input is replicated, and the batches
    # are cut from the replicated set and spread over the mesh inside (`batch_sh`).
    return jax.jit(functools.partial(_loop, n=n, cfg=cfg, batch_size=batch_size,
                                     sharding=batch_sh, valid=valid),
                   in_shardings=repl, out_shardings=(repl, repl), donate_argnums=(0, 1))


class HostFeed:
    """Batches gathered on the host and copied to the devices, one per call."""

    per_call = 1

    def __init__(self, data: Dataset, batch_size: int, mesh: Mesh, drop_remainder: bool = True):
        self.host = HostBatches(data.train_images, data.train_labels, batch_size, drop_remainder)
        self.steps = self.host.steps
        self.batch_size = batch_size
        self._batch_sh, self._repl = parallel.batch_sharding(mesh), parallel.replicated(mesh)
        self._next, self._batches = None, None  # (epoch, i) the iterator yields next

    def _batch(self, epoch: int, i: int, keys: RunKeys) -> Batch:
        if self._next != (epoch, i):  # a new epoch, or a resume mid-epoch
            self._batches = self.host.epoch(keys.data, epoch, self._batch_sh, start=i)
        self._next = (epoch, i + 1)
        return next(self._batches)

    def _compiled(self, cfg: StepConfig):
        return _jit_host_step(cfg, self._batch_sh, self._repl)

    def advance(self, state: TrainState, sums: dict, epoch: int, i: int, n: int,
                cfg: StepConfig, keys: RunKeys) -> tuple[TrainState, dict]:
        for j in range(i, i + n):
            state, sums = self._compiled(cfg)(state, sums, self._batch(epoch, j, keys), epoch, j,
                                              keys.aug)
        return state, sums

    def compile(self, state: TrainState, lengths, cfg: StepConfig, keys: RunKeys) -> None:
        sums = jax.device_put(initial_train_sums(), self._repl)
        shapes = (self.host.images, self.host.labels, self.host.labels[:1].astype("int32"))
        if not self.host.drop_remainder:
            shapes += (self.host.labels[:1].astype("float32"),)
        batch = Batch(*(jax.ShapeDtypeStruct((self.batch_size,) + a.shape[1:], a.dtype,
                                             sharding=self._batch_sh) for a in shapes))
        self._compiled(cfg).lower(state, sums, batch, 0, 0, keys.aug).compile()


@functools.cache
def _jit_host_step(cfg: StepConfig, batch_sh, repl):
    return jax.jit(functools.partial(train_batch_step, cfg=cfg),
                   in_shardings=(repl, repl, batch_sh, repl, repl, repl),
                   out_shardings=(repl, repl), donate_argnums=(0, 1))


class StreamFeed:
    """Batches of records decoded in Grain workers (`jaxcnn/data/stream.py`), one per call.

    The order is `epoch_order`'s, as in the other feeds (same (epoch, step): same batch, on a
    resume too); without augmentation the batches are HostFeed's. With it, the workers crop and
    flip (`data/transforms.py`, drawn per seed, epoch and record) and the step does not.
    Each process reads only its rows of every global batch, and the global batch is assembled
    on the mesh from the processes' parts; the next batch is copied to the devices while the
    current step runs. Its position goes into the checkpoint (`position`), with the
    records' digest, and `resume` checks it: the Grain iterator is rebuilt from the (epoch,
    step) it names, since the order is a function of the seed and the epoch.
    """

    per_call = 1

    def __init__(self, loader, batch_size: int, mesh: Mesh, drop_remainder: bool = True):
        self.loader, self.batch_size = loader, batch_size
        self.n = len(loader.records)
        self.drop_remainder = drop_remainder
        self.steps = steps_per_epoch(self.n, batch_size, drop_remainder)
        n_proc, proc = jax.process_count(), jax.process_index()
        self.mine = slice(proc * batch_size // n_proc, (proc + 1) * batch_size // n_proc)
        self._batch_sh, self._repl = parallel.batch_sharding(mesh), parallel.replicated(mesh)
        self._batches, self._ahead = None, None  # the epoch's iterator; ((epoch, i), Batch)
        self._digest = None

    def local_order(self, keys: RunKeys, epoch: int) -> np.ndarray:
        """This process's record indices of `epoch`, step by step: int64 steps x local batch."""
        perm = np.asarray(epoch_order(keys.data, epoch, self.n, self.steps, self.batch_size))
        return perm.reshape(self.steps, self.batch_size)[:, self.mine]

    def _epoch(self, keys: RunKeys, epoch: int, start: int):
        order = self.local_order(keys, epoch)
        rows = np.arange(self.steps * self.batch_size).reshape(self.steps, -1)[:, self.mine]
        host = self.loader.epoch(order.reshape(-1), order.shape[1], start, epoch)
        try:
            for i, part in zip(range(start, self.steps), host, strict=True):
                if part["bad"].any():  # raised when step i is taken, not while prefetched
                    yield (epoch, i), self.loader.explain(part, f"streaming epoch {epoch + 1}, "
                                                                f"step {i}")
                    return
                arrays = [part["image"], part["label"], part["index"].astype(np.int32)]
                if not self.drop_remainder:
                    arrays.append((rows[i] < self.n).astype(np.float32))  # padding rows: 0
                yield (epoch, i), Batch(*(
                    jax.make_array_from_process_local_data(
                        self._batch_sh, np.array(a), (self.batch_size,) + a.shape[1:])
                    for a in arrays))
        finally:
            getattr(host, "close", lambda: None)()  # stop the epoch's workers

    def _batch(self, epoch: int, i: int, keys: RunKeys) -> Batch:
        if self._ahead is None or self._ahead[0] != (epoch, i):  # new epoch, or a resume
            self.close()
            self._batches = self._epoch(keys, epoch, i)
            self._ahead = next(self._batches)
        batch = self._ahead[1]
        if isinstance(batch, UserError):
            self.close()
            raise batch
        # the next batch: its decode and copy overlap the step about to run
        if i + 1 < self.steps:
            self._ahead = next(self._batches, None)
        else:  # the epoch's workers stop now, not when the process exits
            self.close()
        return batch

    def close(self) -> None:
        """Stop the Grain workers of the epoch in progress (the next `advance` restarts them)."""
        if self._batches is not None:
            self._batches.close()
        self._batches, self._ahead = None, None

    def advance(self, state: TrainState, sums: dict, epoch: int, i: int, n: int,
                cfg: StepConfig, keys: RunKeys) -> tuple[TrainState, dict]:
        cfg = self._device_step(cfg)
        for j in range(i, i + n):
            batch = self._batch(epoch, j, keys)
            state, sums = _jit_host_step(cfg, self._batch_sh, self._repl)(
                state, sums, batch, epoch, j, keys.aug)
        return state, sums

    def _device_step(self, cfg: StepConfig) -> StepConfig:
        """Images augmented in the workers are not cropped or flipped again on the device."""
        return cfg._replace(crop_padding=0, flip=False) if self.loader.augments else cfg

    def compile(self, state: TrainState, lengths, cfg: StepConfig, keys: RunKeys) -> None:
        cfg = self._device_step(cfg)
        sums = jax.device_put(initial_train_sums(), self._repl)
        b, shape = self.batch_size, tuple(self.loader.decode.image_shape)
        specs = [((b, *shape), np.uint8), ((b,), np.int32), ((b,), np.int32)]
        if not self.drop_remainder:
            specs.append(((b,), np.float32))
        batch = Batch(*(jax.ShapeDtypeStruct(s, d, sharding=self._batch_sh) for s, d in specs))
        _jit_host_step(cfg, self._batch_sh, self._repl).lower(
            state, sums, batch, 0, 0, keys.aug).compile()

    def digest(self) -> str:
        if self._digest is None:
            self._digest = self.loader.records.digest()
        return self._digest

    def position(self, epoch: int, step_in_epoch: int) -> dict:
        """The stream's state for a checkpoint: where the next batch starts, and which records."""
        return {"epoch": epoch, "next_step": step_in_epoch, "records": self.n,
                "digest": self.digest(), "order": "epoch_order"}

    def resume(self, saved: dict | None, epoch: int, step_in_epoch: int, where: str) -> None:
        """Check a checkpoint's stream state against this stream; the next `advance` rebuilds
        the Grain iterator at (`epoch`, `step_in_epoch`)."""
        if saved is None:
            raise UserError(f"{where} was saved by a run whose data was in memory: resume it "
                            "with data.on_device=auto or yes, or start a new --workdir")
        now = self.position(epoch, step_in_epoch)
        if {k: saved.get(k) for k in now} != now:
            raise UserError(f"{where} was saved by a run streaming other records "
                            f"({saved.get('records')} then, {self.n} now, or other files): "
                            "stream the same data to resume, or start a new --workdir")
        self._ahead = None
