"""The training engine: pure `train_step` / `eval_step` and `train_and_evaluate(config, workdir)`.

The loop reads top to bottom: mesh, input, model & optimizer, shard & transfer, update step,
evaluation, checkpoint, loop. The train state is a plain pytree; the NNX model is split once into
a static graph definition and arrays, so the hot loop stays functional.
"""

import functools
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from ml_collections import ConfigDict

from jaxcnn import checkpoint, finetune, logs, models, parallel, summary, tta
from jaxcnn.config import compute_dtype
from jaxcnn.data import Dataset, load
from jaxcnn.data.pipeline import (
    Batch,
    HostBatches,
    alternating_flip,
    augment,
    epoch_permutation,
    normalize,
    take_batch,
)
from jaxcnn.errors import UserError
from jaxcnn.optim import make_schedule, make_train_optimizer


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar, optimizer steps taken
    params: nnx.State  # nnx.Param leaves
    model_state: nnx.State  # everything else: BatchNorm statistics
    opt_state: optax.OptState


class StepFns(NamedTuple):
    """What a step needs besides arrays: fixed for a run, closed over before jit."""
    graphdef: nnx.GraphDef
    tx: optax.GradientTransformation
    mean: tuple
    std: tuple
    crop_padding: int
    flip: bool | str  # False, True (random) or "alternating" (done where batches are gathered)
    label_smoothing: float
    dtype: Any
    bn_train: bool = True  # False: BatchNorm in inference mode (a frozen backbone)
    crop_fill: str = "zero"  # zero | reflect
    tta_level: int = 0  # test-time augmentation in eval_step (jaxcnn/tta.py)


# ---------------------------------------------------------------- model & optimizer

def create_state(model: nnx.Module, tx: optax.GradientTransformation
                 ) -> tuple[nnx.GraphDef, TrainState]:
    """Split `model` once into its graph definition and a fresh train state."""
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    return graphdef, TrainState(jnp.zeros((), jnp.int32), params, model_state, tx.init(params))


def loss_and_metrics(logits_BxK: jax.Array, labels_B: jax.Array, label_smoothing: float,
                     mask_B: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Mean (masked) cross-entropy, plus summed loss / correct / count for logging."""
    k = logits_BxK.shape[-1]
    targets_BxK = optax.smooth_labels(jax.nn.one_hot(labels_B, k), label_smoothing)
    loss_B = optax.softmax_cross_entropy(logits_BxK.astype(jnp.float32), targets_BxK)
    if mask_B is None:
        mask_B = jnp.ones_like(loss_B)
    count = mask_B.sum()
    correct = ((logits_BxK.argmax(-1) == labels_B) * mask_B).sum()
    metrics = {"loss": (loss_B * mask_B).sum(), "correct": correct, "count": count}
    return (loss_B * mask_B).sum() / jnp.maximum(count, 1), metrics


# ---------------------------------------------------------------- update step

def train_step(state: TrainState, batch: Batch, key: jax.Array, fns: StepFns
               ) -> tuple[TrainState, dict]:
    """One optimizer step on a uint8 batch: augment, normalise, forward, backward, update."""
    x = augment(key, batch.image, fns.crop_padding, fns.flip, fns.crop_fill)
    x = normalize(x, fns.mean, fns.std, fns.dtype)

    def loss_fn(params):
        # copy=True: fresh Variables at this trace level, which BatchNorm may then update.
        model = nnx.merge(fns.graphdef, params, state.model_state, copy=True)
        logits = model(x, train=fns.bn_train)
        loss, metrics = loss_and_metrics(logits, batch.label, fns.label_smoothing)
        return loss, (metrics, nnx.state(model, nnx.Not(nnx.Param)))

    grads, (metrics, model_state) = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = fns.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, model_state, opt_state), metrics


def eval_step(state: TrainState, batch: Batch, mask_B: jax.Array, fns: StepFns) -> dict:
    """Summed loss and correct count over the unmasked images of `batch`, inference mode."""
    model = nnx.merge(fns.graphdef, state.params, state.model_state, copy=True)
    x = normalize(batch.image, fns.mean, fns.std, fns.dtype)
    logits = tta.predict(lambda v: model(v, train=False), x, fns.tta_level)
    return loss_and_metrics(logits, batch.label, 0.0, mask_B)[1]


def _add(acc: dict, metrics: dict) -> dict:
    return jax.tree.map(jnp.add, acc, metrics)


def _zeros() -> dict:
    return {"loss": jnp.zeros(()), "correct": jnp.zeros(()), "count": jnp.zeros(())}


def initial_train_sums() -> dict:
    """The per-epoch sums `train_step_on_device` accumulates into (pass them in, donated)."""
    return {**_zeros(), "first_bad": jnp.full((), -1, jnp.int32)}


def _accumulate(acc: dict, metrics: dict, step: jax.Array) -> dict:
    """Add a step's sums; remember the first step (1-based) whose loss is not finite.

    Kept on the device, so divergence is caught at the next check without a sync per step.
    """
    bad = ~jnp.isfinite(metrics["loss"])
    first_bad = jnp.where((acc["first_bad"] < 0) & bad, step, acc["first_bad"])
    return {**_add({k: acc[k] for k in metrics}, metrics), "first_bad": first_bad}


def train_step_on_device(state, acc, images, labels, perm, epoch, i, aug_key, *, fns, batch_size,
                         sharding):
    """Gather batch `i` of the epoch from the device-resident data set, then `train_step`."""
    batch = take_batch(images, labels, perm, i, batch_size)
    batch = jax.lax.with_sharding_constraint(batch, sharding)
    if fns.flip == "alternating":
        batch = alternating_flip(_flip_key(aug_key), batch, epoch)
    key = jax.random.fold_in(jax.random.fold_in(aug_key, epoch), i)
    state, metrics = train_step(state, batch, key, fns)
    return state, _accumulate(acc, metrics, state.step)


def train_steps_on_device(state, acc, images, labels, perm, epoch, i, aug_key, n, *, fns,
                          batch_size, sharding):
    """Batches `i .. i+n-1` of the epoch as one compiled loop: one dispatch for `n` steps.

    `n` is traced, so one executable serves every chunk length. Same steps, same keys as `n`
    calls of `train_step_on_device`.
    """
    def body(j, carry):
        return train_step_on_device(*carry, images, labels, perm, epoch, i + j, aug_key,
                                    fns=fns, batch_size=batch_size, sharding=sharding)

    return jax.lax.fori_loop(0, n, body, (state, acc))


# Optimizer steps per compiled call (`train.steps_per_call=0`), by backend. Measured on the
# 2-core CPU (jax 0.10.2, seed CNN, batch 64): 16 steps in a fori_loop took ~30% less time
# per step than 16 dispatches, and 4..50 steps per call were alike. On GPUs the per-step
# dispatch is a larger share of a small network's step; 64 is not measured there yet.
AUTO_STEPS_PER_CALL = {"cpu": 16}
AUTO_STEPS_PER_CALL_OTHER = 64


def steps_per_call(setting: int, platform: str) -> int:
    """`train.steps_per_call`, with 0 (auto) resolved for `platform`."""
    return setting or AUTO_STEPS_PER_CALL.get(platform, AUTO_STEPS_PER_CALL_OTHER)


def call_length(i: int, k: int, steps_per_epoch: int, done_before: int,
                every: tuple[int, ...], stop_at: int | None) -> int:
    """Steps the next call takes from step `i` of the epoch: at most `k`, ending on the epoch's
    end, on a multiple of each of `every` (checkpoints, log points) and on `stop_at`."""
    n = min(k, steps_per_epoch - i)
    done = done_before + i  # steps done before this call
    for e in every:
        if e:
            n = min(n, e - done % e)
    if stop_at is not None and stop_at > done:
        n = min(n, stop_at - done)
    return n


def train_step_streamed(state, acc, batch, epoch, i, aug_key, *, fns):
    """`train_step` on a batch copied from the host (the streaming fallback)."""
    if fns.flip == "alternating":
        batch = alternating_flip(_flip_key(aug_key), batch, epoch)
    key = jax.random.fold_in(jax.random.fold_in(aug_key, epoch), i)
    state, metrics = train_step(state, batch, key, fns)
    return state, _accumulate(acc, metrics, state.step)


def _flip_key(aug_key: jax.Array) -> jax.Array:
    # Fixed for the run: which half of the images an alternating flip mirrors in even epochs.
    # (Per-epoch keys fold in the epoch, a small number; this one folds in the largest uint32.)
    return jax.random.fold_in(aug_key, 2**32 - 1)


def eval_on_device(state, acc, images, labels, mask, i, *, fns, batch_size, sharding):

    """Evaluate batch `i` of the padded test set."""
    batch = Batch(*(jax.lax.dynamic_slice_in_dim(a, i * batch_size, batch_size)
                    for a in (images, labels)))
    batch = jax.lax.with_sharding_constraint(batch, sharding)
    m = jax.lax.dynamic_slice_in_dim(mask, i * batch_size, batch_size)
    return _add(acc, eval_step(state, batch, m, fns))


# ---------------------------------------------------------------- evaluation

def pad_for_eval(images: np.ndarray, labels: np.ndarray, batch_size: int):
    """Pad to a whole number of batches; the mask counts each real image exactly once."""
    n = len(labels)
    pad = -n % batch_size
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
    labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
    return images, labels, mask


def make_eval(images: np.ndarray, labels: np.ndarray, fns: StepFns, batch_size: int, mesh):
    """`state -> {loss, accuracy, count}` over every image, the padded set kept on the device."""
    n_real = len(labels)
    images, labels, mask = pad_for_eval(images, labels, batch_size)
    repl = parallel.replicated(mesh)
    test = jax.device_put((images, labels, mask), repl)
    step = jax.jit(functools.partial(eval_on_device, fns=fns, batch_size=batch_size,
                                     sharding=parallel.batch_sharding(mesh)),
                   donate_argnums=(1,))

    def run(state: TrainState) -> dict:
        acc = jax.device_put(_zeros(), repl)
        for i in range(len(mask) // batch_size):
            acc = step(state, acc, *test, i)
        out = _summary(acc)
        assert out["count"] == n_real, out  # every image once, padding masked out
        return out

    def compile_for(state: TrainState) -> None:
        """Compile ahead of time, so that a timed `run(state)` does not."""
        step.lower(state, jax.device_put(_zeros(), repl), *test, 0).compile()

    run.compile_for = compile_for
    return run


def evaluate(model: nnx.Module, images: np.ndarray, labels: np.ndarray, config: ConfigDict,
             *, devices="all") -> dict:
    """Test loss, accuracy and count of `model` (inference mode) on uint8 `images`.

    Normalisation, batch size and test-time augmentation come from `config` (`data.mean`,
    `data.std`, `train.eval_batch_size`, `train.tta_level`), as in the final evaluation of
    training.
    """
    mesh = parallel.make_mesh(parallel.select_devices(devices))
    eval_bs = -(-config.train.eval_batch_size // mesh.size) * mesh.size
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    state = jax.device_put(TrainState(jnp.zeros((), jnp.int32), params, model_state, None),
                           parallel.replicated(mesh))
    fns = _step_fns(config, graphdef, None, images.shape[-1])._replace(
        tta_level=config.train.tta_level)
    return make_eval(images, labels, fns, eval_bs, mesh)(state)


def _step_fns(config: ConfigDict, graphdef, tx, channels: int) -> StepFns:
    mean, std = (tuple(_per_channel(config.data[k], channels, k)) for k in ("mean", "std"))
    return StepFns(graphdef, tx, mean, std, config.data.crop_padding, config.data.flip,
                   config.train.label_smoothing, models.dtype_of(compute_dtype(config)),
                   crop_fill=config.data.crop_fill)



def _summary(acc: dict) -> dict:
    acc = parallel.to_host(acc)
    count = max(float(acc["count"]), 1.0)
    return {"loss": float(acc["loss"]) / count, "accuracy": float(acc["correct"]) / count,
            "count": int(acc["count"]), "first_bad": int(acc.get("first_bad", -1))}


# ---------------------------------------------------------------- the run

class Result(NamedTuple):
    model: nnx.Module  # the trained model, merged back from the final state
    history: list  # one dict per epoch, as written to metrics.jsonl
    final: dict  # the last epoch's dict
    stopped: str | None = None  # SIGTERM / SIGINT / stop_at_step: saved and stopped early


def _fits_on_device(nbytes: int, devices: list[jax.Device], setting: str) -> bool:
    if setting != "auto":
        return setting == "yes"
    local = [d for d in devices if d.process_index == jax.process_index()]
    stats = local[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    # Keep at most a quarter of device memory for data; the rest is for activations.
    return limit is None or nbytes < limit // 4


class _Position(NamedTuple):
    """Where a run stands: the next step is step `step_in_epoch` of 0-based `epoch`."""
    epoch: int = 0
    step_in_epoch: int = 0
    acc: dict | None = None  # the epoch's metric sums so far, when resuming mid-epoch
    history: tuple = ()


def train_and_evaluate(config: ConfigDict, workdir: str | None = None, *, devices="all",
                       dataset: Dataset | None = None, model: nnx.Module | None = None,
                       progress: bool = True, log=print, stop_at_step: int | None = None
                       ) -> Result:
    """Train `config` and evaluate after every epoch; write config.json and metrics.jsonl.

    `dataset` and `model` default to `load(config.data.name)` and `models.create(...)`; pass
    your own from research code. `devices` is `all`, a count, or a list of ids (`--devices`).
    With a `workdir`, checkpoints go to `<workdir>/checkpoints` and a rerun with the same
    workdir resumes from the latest one, exactly. SIGTERM / SIGINT (or reaching `stop_at_step`
    optimizer steps) saves a checkpoint at the next step boundary and returns early, with
    `Result.stopped` saying why. `config.finetune.init_from` starts from a trained backbone.
    """
    from jaxcnn.config import check_config
    check_config(config)
    tc = config.train
    main = parallel.is_main_process()
    log = log if main else (lambda *_: None)
    progress = progress and main

    # ---- mesh
    mesh = parallel.make_mesh(parallel.select_devices(devices))
    log(parallel.describe(mesh))
    parallel.check_batch_size(tc.batch_size, mesh)
    batch_sh, repl_sh = parallel.batch_sharding(mesh), parallel.replicated(mesh)

    # ---- input
    data = dataset if dataset is not None else load(config.data.name,
                                                    cache_dir=config.data.cache_dir or None)
    if config.data.classes or config.data.train_per_class:
        data = data.subset(config.data.classes, config.data.train_per_class)
    n_train = len(data.train_labels)
    if tc.batch_size > n_train:
        raise UserError(f"train.batch_size={tc.batch_size} is larger than the {n_train} training "
                        f"images of {data.name}: use a smaller batch")
    steps_per_epoch = n_train // tc.batch_size  # the remainder is dropped; reshuffled each epoch
    eval_bs = -(-tc.eval_batch_size // mesh.size) * mesh.size

    # ---- model & optimizer
    key = jax.random.key(config.seed)
    ckpt_dir = os.path.join(workdir, "checkpoints") if workdir else None
    resume = checkpoint.latest_step(ckpt_dir) if ckpt_dir else None
    if model is None:
        model = models.create(config.model.name, num_classes=data.num_classes,
                              dtype=compute_dtype(config), param_dtype=config.model.param_dtype,
                              rngs=nnx.Rngs(jax.random.fold_in(key, 0)),
                              **models.options(config.model))
    schedule = make_schedule(config.optim, steps_per_epoch, tc.epochs)
    fine = bool(config.finetune.init_from)
    if fine:
        if resume is None:  # a resumed run has it all in its own checkpoint
            finetune.load_backbone(model, config.finetune.init_from)
        tx = finetune.make_finetune_optimizer(config, schedule, steps_per_epoch,
                                              finetune.head_name(model))
    else:
        tx = make_train_optimizer(config, schedule, model, steps_per_epoch)
    init_seconds, init_compile_seconds = (_init_from_data(model, data, config)
                                          if resume is None and not fine else (0.0, 0.0))
    graphdef, state = create_state(model, tx)
    fns = _step_fns(config, graphdef, tx, data.image_shape[-1])

    # ---- shard & transfer (and resume: the checkpoint's arrays land on this run's shardings)
    state = jax.device_put(state, repl_sh)
    pos = _Position()
    if resume is not None:
        state, meta = checkpoint.restore(os.path.join(ckpt_dir, str(resume)), state)
        pos = _position(meta, resume, steps_per_epoch, tc.batch_size, ckpt_dir)
        key = jax.random.wrap_key_data(np.asarray(meta["rng"], np.uint32))
    data_key, aug_key = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)
    on_device = _fits_on_device(data.train_images.nbytes, mesh.devices.flat,
                                config.data.on_device)
    run_eval = make_eval(data.test_images, data.test_labels, fns, eval_bs, mesh)
    final_eval = (make_eval(data.test_images, data.test_labels,
                            fns._replace(tta_level=tc.tta_level), eval_bs, mesh)
                  if tc.tta_level else run_eval)
    if on_device:
        train_images, train_labels = jax.device_put((data.train_images, data.train_labels),
                                                    repl_sh)
    else:
        host = HostBatches(data.train_images, data.train_labels, tc.batch_size)

    # The streaming path takes one host batch per call; on the device, several steps per call.
    per_call = steps_per_call(tc.steps_per_call, mesh.devices.flat[0].platform) if on_device else 1

    @functools.cache
    def compiled_step(frozen: bool):
        f = fns._replace(bn_train=not frozen)
        if on_device:
            return jax.jit(functools.partial(train_steps_on_device, fns=f,
                                             batch_size=tc.batch_size, sharding=batch_sh),
                           donate_argnums=(0, 1))
        return jax.jit(functools.partial(train_step_streamed, fns=f), donate_argnums=(0, 1))

    # ---- workdir (only now: bad input has been refused before anything is written)
    ckpts = None
    if workdir:
        if main:
            os.makedirs(workdir, exist_ok=True)
            with open(os.path.join(workdir, "config.json"), "w") as f:
                f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
        ckpts = checkpoint.RunCheckpoints(workdir, config.checkpoint)
    # metrics.jsonl and TensorBoard events; a resumed run continues its checkpoint's history
    runlog = logs.RunLog(workdir if main else None, pos.history, tc.log_every_steps, schedule,
                         resume)
    log(f"jaxcnn: {config.model.name} on {data.name} ({n_train} train / "
        f"{len(data.test_labels)} test, {data.num_classes} classes), {tc.epochs} epochs x "
        f"{steps_per_epoch} steps of {tc.batch_size}; {mesh.size} {mesh.devices.flat[0].platform}"
        f" device(s); data {'on device' if on_device else 'streamed from host'}; "
        f"{models.count_params(model):,} parameters")
    log(summary.table(model, data.image_shape))
    if fine and resume is None:
        log(f"fine-tuning ({config.finetune.mode}) from {config.finetune.init_from}: backbone "
            f"restored, new head '{finetune.head_name(model)}' for {data.num_classes} classes")
    if resume is not None and pos.epoch >= tc.epochs:
        log(f"{ckpt_dir}/{resume} already finished all {tc.epochs} epochs: nothing to train "
            "(raise --config.train.epochs to continue, or use another --workdir to start over)")
    elif resume is not None:
        log(f"resuming from {ckpt_dir}/{resume}: epoch {pos.epoch + 1}, step "
            f"{pos.step_in_epoch} of {steps_per_epoch}")

    # ---- compile before the clock starts: the run's time, like airbench's, leaves it out
    compile_seconds = init_compile_seconds
    if pos.epoch < tc.epochs:
        t = time.perf_counter()
        if on_device:
            args = (train_images, train_labels, epoch_permutation(data_key, pos.epoch, n_train))
        else:
            args = (Batch(*(jax.ShapeDtypeStruct((tc.batch_size,) + a.shape[1:], a.dtype,
                                                 sharding=batch_sh)
                            for a in (data.train_images, data.train_labels,
                                      np.zeros(1, np.int32)))),)
        compiled_step(fine and finetune.frozen_in_epoch(config, pos.epoch)).lower(
            state, jax.device_put(initial_train_sums(), repl_sh), *args, pos.epoch, 0,
            aug_key, *((1,) if on_device else ())).compile()
        final_eval.compile_for(state)
        compile_seconds += time.perf_counter() - t
    train_seconds = 0.0

    # ---- checkpoint
    def save(done: int, epoch: int, step_in_epoch: int, acc, row: dict | None = None):

        """Save after `done` steps, unless the loss has gone non-finite (then stop, loudly)."""
        sums = _summary(acc)
        if sums["first_bad"] >= 0:
            _diverged(sums["first_bad"], steps_per_epoch, ckpt_dir)
        if ckpts is None:
            return
        meta = {"epoch": epoch, "step_in_epoch": step_in_epoch, "step": done,
                "steps_per_epoch": steps_per_epoch, "batch_size": tc.batch_size,
                "acc": {k: float(v) for k, v in parallel.to_host(acc).items()
                        if k != "first_bad"},
                "history": history, "rng": jax.random.key_data(key).tolist(),
                "model": config.model.name, "num_classes": data.num_classes,
                "class_names": list(data.class_names), "image_shape": list(data.image_shape)}
        ckpts.save(done, state, meta, metrics=row)

    # ---- loop
    history, stopped = list(pos.history), None
    k = config.checkpoint
    try:
        with checkpoint.StopSignals() as signals:
            for epoch in range(pos.epoch, tc.epochs):
                first = pos.step_in_epoch if epoch == pos.epoch else 0
                acc = jax.device_put(pos.acc if first else initial_train_sums(), repl_sh)
                step = compiled_step(fine and finetune.frozen_in_epoch(config, epoch))
                bar = _progress(progress, steps_per_epoch, epoch, tc.epochs)
                bar.update(first)
                t0 = time.perf_counter()
                runlog.start_epoch(epoch * steps_per_epoch + first)
                if on_device:
                    perm = epoch_permutation(data_key, epoch, n_train)
                else:
                    batches = host.epoch(data_key, epoch, batch_sh, start=first)
                i = first
                while i < steps_per_epoch:
                    n = call_length(i, per_call, steps_per_epoch, epoch * steps_per_epoch,
                                    (k.every_steps, tc.log_every_steps), stop_at_step)
                    if on_device:
                        state, acc = step(state, acc, train_images, train_labels, perm, epoch, i,
                                          aug_key, n)
                    else:
                        state, acc = step(state, acc, next(batches), epoch, i, aug_key)
                    i += n
                    bar.update(n)
                    done = epoch * steps_per_epoch + i
                    runlog.step(done, acc)
                    stopped = (signals.received
                               or ("stop_at_step" if done == stop_at_step else None)
                               or ("SIGTERM" if ckpts and ckpts.reached_preemption(done) else None))
                    if i < steps_per_epoch and (stopped or (k.every_steps
                                                            and done % k.every_steps == 0)):
                        save(done, epoch, i, acc)
                    if stopped:
                        break
                if stopped and i < steps_per_epoch:
                    bar.close()
                    break
                train = _summary(acc)  # waits for the epoch's last step
                seconds = time.perf_counter() - t0
                ips = (steps_per_epoch - first) * tc.batch_size / seconds
                bar.set_postfix_str(f"{ips:,.0f} img/s")
                bar.close()
                if train["first_bad"] >= 0 or not np.isfinite(train["loss"]):
                    _diverged(train["first_bad"], steps_per_epoch, ckpt_dir)
                train_seconds += seconds
                t_eval = time.perf_counter()
                ev = run_eval(state)
                eval_seconds = time.perf_counter() - t_eval
                row = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
                       "train_loss": train["loss"], "train_accuracy": train["accuracy"],
                       "test_loss": ev["loss"], "test_accuracy": ev["accuracy"],
                       "images_per_sec": ips, "epoch_seconds": seconds}
                if epoch + 1 == tc.epochs:  # the final evaluation (TTA if set) and the run's time
                    row.update(_final_evaluation(state, ev, eval_seconds, final_eval,
                                                 tc.tta_level, init_seconds, train_seconds,
                                                 compile_seconds))
                history.append(row)
                runlog.epoch(row)
                log(f"epoch {epoch + 1}/{tc.epochs}: train_loss={train['loss']:.4f} "
                    f"train_accuracy={train['accuracy']:.4f} test_loss={ev['loss']:.4f} "
                    f"test_accuracy={ev['accuracy']:.4f} ({ips:,.0f} img/s, {seconds:.1f} s)")
                if "run_seconds" in row:
                    log(_final_line(row))
                done = (epoch + 1) * steps_per_epoch
                if (stopped or epoch + 1 == tc.epochs
                        or (k.every_epochs and (epoch + 1) % k.every_epochs == 0)
                        or (k.every_steps and done % k.every_steps == 0)):
                    save(done, epoch + 1, 0, initial_train_sums(), row)
                if stopped:
                    break
    finally:
        runlog.close()
        if ckpts:
            ckpts.close()  # waits for a save still being written
    if stopped:
        where = f"checkpoint saved in {ckpt_dir}/{done}" if ckpts else "no workdir, nothing saved"
        log(f"stopped by {stopped} after step {done}: {where}; rerun the same command to resume")
    trained = nnx.merge(graphdef, *parallel.to_host((state.params, state.model_state)))
    return Result(trained, history, history[-1] if history else {}, stopped)


def _position(meta: dict, step: int, steps_per_epoch: int, batch_size: int,
              ckpt_dir: str) -> _Position:
    """Where the checkpoint's run stopped; refuse one whose epochs were cut differently."""
    if (meta.get("steps_per_epoch"), meta.get("batch_size")) != (steps_per_epoch, batch_size):
        raise UserError(f"the checkpoint in {ckpt_dir} was saved by a run with "
                        f"train.batch_size={meta.get('batch_size')} and "
                        f"{meta.get('steps_per_epoch')} steps per epoch, this one has "
                        f"{batch_size} and {steps_per_epoch}: resume with the same data and batch "
                        "size, or use a new --workdir")
    acc = {k: jnp.asarray(v, jnp.float32) for k, v in meta["acc"].items()}
    acc["first_bad"] = jnp.full((), -1, jnp.int32)
    assert meta["epoch"] * steps_per_epoch + meta["step_in_epoch"] == step, (meta, step)
    return _Position(meta["epoch"], meta["step_in_epoch"], acc, list(meta["history"]))


def _diverged(first_bad: int, steps_per_epoch: int, ckpt_dir: str | None):
    last = checkpoint.latest_step(ckpt_dir) if ckpt_dir else None
    good = (f"the last good checkpoint, {ckpt_dir}/{last}, is where a rerun resumes"
            if last is not None else "no checkpoint was saved")
    where = (f"step {first_bad} (epoch {(first_bad - 1) // steps_per_epoch + 1})"
             if first_bad >= 0 else "the last epoch")
    raise UserError(f"training diverged: the loss is not finite at {where}; {good}; lower "
                    "optim.learning_rate or add warmup")


def _init_from_data(model: nnx.Module, data: Dataset, config: ConfigDict
                    ) -> tuple[float, float]:
    """The hook for a data-dependent init (airbench's whitening layer), and its seconds without
    and with compilation.

    A model with a method `init_from_data(x_NxHxWxC)` gets `INIT_FROM_DATA_IMAGES` (default all)
    training images, evenly spaced over the set (a class-sorted set gives each class its share),
    normalised as in training, once before training (not when resuming: the checkpoint holds
    the result; not when fine-tuning: the backbone is restored). The method runs under jit, so
    it must be traceable (jax.numpy on the model's variables).
    """
    if not hasattr(model, "init_from_data"):
        return 0.0, 0.0
    total = len(data.train_labels)
    rows = np.linspace(0, total - 1, min(getattr(model, "INIT_FROM_DATA_IMAGES", total), total))
    mean, std = (_per_channel(config.data[k], data.image_shape[-1], k) for k in ("mean", "std"))
    graphdef, variables = nnx.split(model)

    def init(variables, images):
        m = nnx.merge(graphdef, variables)
        m.init_from_data(normalize(images, mean, std))
        return nnx.state(m)

    images = jax.device_put(data.train_images[rows.astype(np.int64)])

    t = time.perf_counter()
    compiled = jax.jit(init).lower(variables, images).compile()
    t_run = time.perf_counter()
    nnx.update(model, jax.block_until_ready(compiled(variables, images)))
    return time.perf_counter() - t_run, t_run - t



def _final_evaluation(state, ev: dict, eval_seconds: float, final_eval, tta_level: int,
                      init_seconds: float, train_seconds: float, compile_seconds: float) -> dict:
    """The last epoch's extra fields: its test metrics with TTA (`ev`, the plain ones, kept as
    test_accuracy_no_tta) and the run's time as airbench counts it: init (data-dependent init
    included) + training + final evaluation, compilation left out and reported apart. Times are
    this process's: a resumed run counts from its restart."""
    out = {"tta_level": tta_level}
    if tta_level:
        t = time.perf_counter()
        fin = final_eval(state)
        eval_seconds = time.perf_counter() - t
        out.update(test_loss=fin["loss"], test_accuracy=fin["accuracy"],
                   test_accuracy_no_tta=ev["accuracy"])
    out.update(init_seconds=init_seconds, train_seconds=train_seconds,
               final_eval_seconds=eval_seconds, compile_seconds=compile_seconds,
               run_seconds=init_seconds + train_seconds + eval_seconds)
    return out


def _final_line(row: dict) -> str:
    tta = (f"tta_level={row['tta_level']} test_accuracy={row['test_accuracy']:.4f} (without "
           f"TTA {row['test_accuracy_no_tta']:.4f}); " if row["tta_level"] else "")
    return (f"final evaluation: {tta}run {row['run_seconds']:.1f} s = init "
            f"{row['init_seconds']:.1f} + train {row['train_seconds']:.1f} + final eval "
            f"{row['final_eval_seconds']:.1f}, compilation ({row['compile_seconds']:.1f} s) "
            "not counted")


def _per_channel(v, channels: int, name: str) -> list[float]:

    v = [float(x) for x in (v if isinstance(v, (tuple, list)) else [v])]
    if len(v) == 1:
        v = v * channels
    if len(v) != channels:
        raise UserError(f"data.{name} has {len(v)} values but the images have {channels} "
                        "channels: give one value or one per channel")
    return v


def _progress(enabled: bool, total: int, epoch: int, epochs: int):
    from tqdm import tqdm
    return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="step", leave=False,
                disable=not enabled, mininterval=0.5)
