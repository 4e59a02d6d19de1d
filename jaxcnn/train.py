"""The training engine: `build` a run once, then `fit` it with a loop that reads top to bottom.

    job, state = build(config)                       # mesh, data, model, optimizer, steps, evals
    result = fit(job, state, workdir="runs/x")       # epochs of job.advance + job.evaluate
    result = train_and_evaluate(config, "runs/x")    # both in one call

`build` refuses bad input before anything is written; `fit` resumes from the workdir's latest
checkpoint, exactly, and owns everything written there (config.json, metrics.jsonl, TensorBoard
events, checkpoints). The pure step functions are in `jaxcnn/steps.py`, the input paths in
`jaxcnn/feeds.py`, the evaluation in `jaxcnn/evaluation.py`, the workdir side of the loop
(own, resume, save, divergence checks) in `jaxcnn/workdir.py`.
"""

import dataclasses
import time
from typing import NamedTuple

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh
from ml_collections import ConfigDict

from jaxcnn import checkpoint, ema, finetune, logs, models, parallel, prune, quantize, summary
from jaxcnn.config import check_config, compute_dtype, selection_metric
from jaxcnn.data import Dataset, prepare, stream
from jaxcnn.data.pipeline import normalize, steps_per_epoch
from jaxcnn.early_stop import EarlyStop, stopped_early
from jaxcnn.errors import UserError
from jaxcnn.evaluation import Evaluator, eval_batch_size, evaluate
from jaxcnn.feeds import DeviceFeed, HostFeed, RunKeys, StreamFeed, steps_per_call
from jaxcnn.optim import make_schedule, make_train_optimizer
from jaxcnn.steps import (
    StepConfig,
    TrainState,
    create_state,
    initial_train_sums,
    preprocess_of,
    step_config,
    train_step,
)
from jaxcnn.workdir import Position, Saver, check_workdir, open_workdir, sums_to_host

MAX_STEPS = 2**31 - 1  # TrainState.step is int32

__all__ = ["Job", "Result", "TrainState", "build", "evaluate", "fit", "train_and_evaluate",
           "train_step"]


@dataclasses.dataclass
class Job:
    """A built run: everything the loop needs besides the train state."""
    config: ConfigDict
    mesh: Mesh
    data: Dataset
    graphdef: nnx.GraphDef
    schedule: optax.Schedule  # learning rate per optimizer step, for the logs
    steps_per_epoch: int  # with train.drop_remainder the rest is dropped (reshuffled each epoch)
    feed: DeviceFeed | HostFeed | StreamFeed
    steps: StepConfig  # the train step's settings
    evaluate: dict[str, Evaluator]  # {split: its evaluation after every epoch}: val, or test
    final_evaluate: Evaluator  # the test split after the last epoch, with `train.tta_level`
    key: jax.Array  # the root key: data order and augmentation fold from it (`keys`)
    model_summary: str  # the model's table: parameters per layer, FLOPs per image
    selection: tuple[str, str] = ("", "max")  # (metric, max|min): best checkpoint, early stop
    init_seconds: float = 0.0  # data-dependent init (airbench's whitening), compile excluded
    compile_seconds: float = 0.0

    def __post_init__(self):
        self.set_key(self.key)
        self._frozen = self.steps._replace(bn_train=False)

    def set_key(self, key: jax.Array) -> None:
        """The root key (a resumed run takes its checkpoint's)."""
        self.key, self.keys = key, RunKeys.of(key)

    def steps_in(self, epoch: int) -> StepConfig:
        """The train step of 0-based `epoch`: a linear probe's frozen epochs run BatchNorm in
        inference mode."""
        return self._frozen if finetune.frozen_in_epoch(self.config, epoch) else self.steps

    def advance(self, state: TrainState, sums: dict, epoch: int, i: int, n: int
                ) -> tuple[TrainState, dict]:
        """Optimizer steps `i .. i+n-1` of `epoch`, their metrics added to `sums`."""
        return self.feed.advance(state, sums, epoch, i, n, self.steps_in(epoch), self.keys)

    def compile(self, state: TrainState, epoch: int, lengths) -> float:
        """Compile the calls of `lengths` steps and the evaluations; returns the seconds."""
        t = time.perf_counter()
        self.feed.compile(state, lengths, self.steps_in(epoch), self.keys)
        for ev in {*self.evaluate.values(), self.final_evaluate}:
            ev.compile(state)
        return time.perf_counter() - t


class Result(NamedTuple):
    model: nnx.Module  # the trained model, merged back from the final state
    history: list  # one dict per epoch, as written to metrics.jsonl
    final: dict  # the last epoch's dict
    stopped: str | None = None  # SIGTERM / SIGINT / stop_at_step: saved and stopped early


# ---------------------------------------------------------------- build

def build(config: ConfigDict, *, dataset: Dataset | None = None, model: nnx.Module | None = None,
          devices="all") -> tuple[Job, TrainState]:
    """Everything a run needs, checked: bad input is a UserError here, before `fit` writes.

    `dataset` and `model` default to `load(config.data.name)` and `models.create(...)`; pass your
    own from research code. `devices` is `all`, a count, or a list of ids (`--devices`).
    `config.finetune.init_from` restores a trained backbone into the model.
    """
    check_config(config)
    if config.quant.mode == "ptq":
        raise UserError("quant.mode=ptq marks an int8 run written by scripts/quantize.py, which "
                        "does not train: fine-tune with quant.mode=qat, then quantize again")
    mesh = parallel.make_mesh(parallel.select_devices(devices))
    parallel.check_batch_size(config.train.batch_size, mesh)
    data, loader, spe = _input(config, dataset)
    selection = selection_metric(config, data.has_validation)  # refuses a metric it lacks
    key = jax.random.key(config.seed)
    model, tx, schedule, init_seconds, compile_seconds = _model_and_optimizer(
        config, data, loader, model, key, spe)
    graphdef, state = create_state(model, tx)
    steps = step_config(config, graphdef, tx, data.image_shape[-1], data.num_classes,
                        train_labels=data.train_labels)
    # The state is replicated on every device; the feed and the evaluation sets are sharded.
    state = jax.device_put(state, parallel.replicated(mesh))
    per_epoch, final = _evaluators(config, data, steps, mesh)
    job = Job(config, mesh, data, graphdef, schedule, spe, _feed(config, data, loader, mesh),
              steps, per_epoch, final, key, summary.table(model, data.image_shape),
              selection, init_seconds, compile_seconds)
    return job, state


def _input(config: ConfigDict, dataset: Dataset | None) -> tuple[Dataset, object, int]:
    """The run's splits, the training records' loader when streamed (else None), and the
    optimizer steps per epoch; refuses a batch, epoch count or crop the data cannot take."""
    tc = config.train
    loader = None
    if dataset is None and stream.wanted(config.data):
        data, loader = stream.for_training(config)  # no training image in memory
    else:
        data = prepare(config, dataset)
    if tc.early_stop_patience and config.checkpoint.every_epochs != 1:
        raise UserError("train.early_stop_patience restores the best epoch, which needs a "
                        "checkpoint after every epoch: set checkpoint.every_epochs=1")
    n_train = len(data.train_labels)
    if tc.batch_size > n_train:
        raise UserError(f"train.batch_size={tc.batch_size} is larger than the {n_train} training "
                        f"images of {data.name}: use a smaller batch")
    spe = steps_per_epoch(n_train, tc.batch_size, tc.drop_remainder)
    if tc.epochs * spe > MAX_STEPS:
        raise UserError(f"train.epochs={tc.epochs} x {spe} steps per epoch is more than the "
                        f"{MAX_STEPS:,} optimizer steps a run can count: train fewer epochs")
    side = min(data.image_shape[:2])
    if config.data.crop_padding > side:
        raise UserError(f"data.crop_padding={config.data.crop_padding} is larger than the "
                        f"{side}-pixel images: use at most {side} (CIFAR recipes use 2-4)")
    if spe % tc.grad_accum_steps:
        raise UserError(f"train.grad_accum_steps={tc.grad_accum_steps} does not divide the {spe} "
                        f"steps of an epoch: use a divisor of {spe}, or another batch size")
    return data, loader, spe


def _model_and_optimizer(config: ConfigDict, data: Dataset, loader, model: nnx.Module | None,
                         key: jax.Array, spe: int):
    """The model (created, restored for fine-tuning or initialised from data) and its optimizer
    chain; returns (model, tx, learning rate per step, init seconds, init compile seconds)."""
    tc, f = config.train, config.finetune
    if model is None:
        model = models.create(config.model.name, num_classes=data.num_classes,
                              dtype=compute_dtype(config), param_dtype=config.model.param_dtype,
                              rngs=nnx.Rngs(jax.random.fold_in(key, 0)),
                              image_shape=data.image_shape,
                              **models.options(config.model))
    if not tc.drop_remainder and _has_batch_norm(model):
        raise UserError(f"train.drop_remainder=false pads the last batch, and the padding would "
                        f"enter the BatchNorm statistics of {config.model.name}: keep it true "
                        "for models with BatchNorm")
    # With gradient accumulation the optimizer (and its schedule) counts updates, one per
    # `accum` steps; everything else (data order, logs, checkpoints) counts steps.
    accum = tc.grad_accum_steps
    updates = make_schedule(config.optim, spe // accum, tc.epochs)
    init_seconds, compile_seconds = 0.0, 0.0  # a restored backbone is not initialised
    if f.init_from and f.keep_head:  # the whole trained network goes on: pruning, QAT
        finetune.load_whole(model, f.init_from, data.class_names)
        tx = make_train_optimizer(config, updates, model, spe // accum)
    elif f.init_from:
        finetune.load_backbone(model, f.init_from)
        tx = finetune.make_finetune_optimizer(config, updates, spe // accum,
                                              finetune.head_name(model))
    else:
        tx = make_train_optimizer(config, updates, model, spe // accum)
        init_seconds, compile_seconds = _init_from_data(model, data, config, loader)
    if config.quant.mode == "qat":
        model = quantize.qat(model, data.image_shape)
    if config.prune.sparsity:
        tx = prune.pruned(tx, config.prune, spe // accum)
    if tc.ema_decay:  # inside MultiSteps: one average per update; outside pruning: its masks
        tx = ema.averaged(tx, tc.ema_decay)
    if accum > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accum)  # the mean of `accum` gradients
    schedule = updates if accum == 1 else (lambda step: updates(step // accum))
    return model, tx, schedule, init_seconds, compile_seconds


def _evaluators(config: ConfigDict, data: Dataset, steps: StepConfig, mesh: Mesh
                ) -> tuple[dict[str, Evaluator], Evaluator]:
    """The evaluations after every epoch ({split: Evaluator}) and the final one on test.

    With a validation split the test split is evaluated once, at the end (after every epoch
    too with train.test_every_epoch): nothing is chosen on it."""
    tc = config.train
    per_epoch = {split: Evaluator(images, labels, steps,
                                  eval_batch_size(config, mesh, len(labels)), mesh)
                 for split, images, labels in data.splits()[1:]
                 if split == "val" or not data.has_validation or tc.test_every_epoch}
    test_bs = eval_batch_size(config, mesh, len(data.test_labels))
    test = per_epoch.get("test") or Evaluator(data.test_images, data.test_labels, steps,
                                              test_bs, mesh)
    final = (Evaluator(data.test_images, data.test_labels,
                       steps._replace(tta_level=tc.tta_level), test_bs, mesh)
             if tc.tta_level else test)
    return per_epoch, final


def _feed(config: ConfigDict, data: Dataset, loader, mesh: Mesh
          ) -> DeviceFeed | HostFeed | StreamFeed:
    """The input path: streamed records, the whole set on the device, or batches from the host."""
    tc = config.train
    if loader is not None:
        return StreamFeed(loader, tc.batch_size, mesh, tc.drop_remainder)
    if _fits_on_device(data.train_images.nbytes, mesh, config.data.on_device):
        platform = mesh.devices.flat[0].platform
        return DeviceFeed(data, tc.batch_size, mesh,
                          steps_per_call(tc.steps_per_call, platform, config.model.name,
                                         xla_convolutions=config.quant.mode == "qat"),
                          tc.drop_remainder)
    return HostFeed(data, tc.batch_size, mesh, tc.drop_remainder)


def _has_batch_norm(model: nnx.Module) -> bool:
    return any(isinstance(m, nnx.BatchNorm) for _, m in nnx.iter_modules(model))


def _fits_on_device(nbytes: int, mesh: Mesh, setting: str) -> bool:
    if setting != "auto":
        return setting == "yes"
    local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    limit = (local[0].memory_stats() or {}).get("bytes_limit")
    # Keep at most a quarter of device memory for data; the rest is for activations.
    return limit is None or nbytes < limit // 4


def _init_from_data(model: nnx.Module, data: Dataset, config: ConfigDict, loader=None
                    ) -> tuple[float, float]:
    """The hook for a data-dependent init (airbench's whitening layer); its seconds without
    and with compilation.

    A model with a method `init_from_data(x_NxHxWxC)` gets `INIT_FROM_DATA_IMAGES` (default all)
    training images, evenly spaced over the set (a class-sorted set gives each class its share),
    normalised as in training, once before training (a resumed run then restores the result;
    a fine-tuned one restores the backbone instead). The method runs under jit, so it must be
    traceable (jax.numpy on the model's variables).
    """
    if not hasattr(model, "init_from_data"):
        return 0.0, 0.0
    total = len(data.train_labels)
    rows = np.linspace(0, total - 1, min(getattr(model, "INIT_FROM_DATA_IMAGES", total), total))
    prep = preprocess_of(config, data.image_shape[-1])._replace(dtype=np.float32)
    graphdef, variables = nnx.split(model)

    def init(variables, images):
        m = nnx.merge(graphdef, variables)
        m.init_from_data(normalize(images, *prep))
        return nnx.state(m)

    rows = rows.astype(np.int64)
    images = jax.device_put(data.train_images[rows] if loader is None
                            else stream.decoded_rows(loader, rows))  # streamed: decode them
    t = time.perf_counter()
    compiled = jax.jit(init).lower(variables, images).compile()
    t_run = time.perf_counter()
    nnx.update(model, jax.block_until_ready(compiled(variables, images)))
    return time.perf_counter() - t_run, t_run - t


# ---------------------------------------------------------------- fit

def fit(job: Job, state: TrainState, *, workdir: str | None = None, progress: bool = True,
        log=print, stop_at_step: int | None = None) -> Result:
    """Train `job` from `state` for `train.epochs`, evaluating after every epoch.

    With a `workdir`: config.json, metrics.jsonl, TensorBoard events and checkpoints
    (`<workdir>/checkpoints`) go there, and a rerun with the same workdir resumes from the latest
    checkpoint, exactly. SIGTERM / SIGINT (or reaching `stop_at_step` optimizer steps) saves a
    checkpoint at the next call boundary and returns early, `Result.stopped` saying why.
    """
    tc, spe = job.config.train, job.steps_per_epoch
    main = parallel.is_main_process()
    log = log if main else (lambda *_: None)
    # ---- workdir: resume (refusing a checkpoint that does not fit), then write
    state, pos, saver = open_workdir(job, state, workdir)
    runlog = logs.RunLog(workdir if main else None, pos.history, tc.log_every_steps,
                         job.schedule, saver.resumed_at, tc.profile_steps)
    watch = saver.watch
    _announce(job, pos, saver, log)
    end = pos.epoch if stopped_early(pos.history) else tc.epochs  # the epoch the loop ends at
    stopper = (EarlyStop(*job.selection, tc.early_stop_patience, pos.history)
               if tc.early_stop_patience else None)
    # ---- compile before the clock starts: the run's time, like airbench's, leaves it out
    compile_seconds = job.compile_seconds
    if pos.epoch < end:
        lengths = _call_lengths(job, pos.epoch, pos.step_in_epoch, stop_at_step)
        compile_seconds += job.compile(state, pos.epoch, lengths)
    clock = {"init": job.init_seconds if saver.resumed_at is None else 0.0, "train": 0.0,
             "compile": compile_seconds}
    # ---- loop
    history, stopped, done = list(pos.history), None, pos.epoch * spe + pos.step_in_epoch
    try:
        with checkpoint.StopSignals(job.config.checkpoint.stop_timeout_s) as signals, \
                parallel.PeerWatch(tc.peer_timeout_s, saver.directory):
            for epoch in range(pos.epoch, end):
                first = pos.step_in_epoch if epoch == pos.epoch else 0
                sums = pos.sums if first else initial_train_sums()
                state, sums, stopped, i, seconds = _train_epoch(
                    job, state, sums, epoch, first, saver, runlog, signals, history,
                    stop_at_step, progress)
                done = epoch * spe + i
                if i < spe:  # stopped mid-epoch, and saved
                    break
                train = sums_to_host(sums)
                watch.train(train, done)
                clock["train"] += seconds
                row, eval_seconds = _evaluate_epoch(job, state, epoch, train, seconds,
                                                    spe - first)
                watch.metrics({k: v for k, v in row.items()
                               if k.startswith(("val_", "test_"))}, epoch)
                early = stopper is not None and stopper.update(row, state)
                if early or epoch + 1 == tc.epochs:
                    if stopper is not None:  # the final test sees the best epoch's weights
                        state = stopper.restore(state, saver.directory, spe, job.mesh)
                        row.update(best_epoch=stopper.best_epoch,
                                   early_stopped=epoch + 1 < tc.epochs)
                    row.update(_final_evaluation(job, state, clock, row, eval_seconds))
                history.append(row)
                runlog.epoch(row)
                log(_epoch_line(row, tc.epochs))
                if "best_epoch" in row:
                    log(_restored_line(row, job.selection[0], tc.early_stop_patience))
                if "run_seconds" in row:
                    log(_final_line(row))
                if stopped or early or saver.due_after_epoch(epoch + 1, tc.epochs, spe):
                    saver.save(state, done, epoch + 1, 0, initial_train_sums(), history, row)
                if stopped or early:
                    break
    finally:
        runlog.close()
        saver.close()  # waits for a save still being written
        if hasattr(job.feed, "close"):  # a streamed run's Grain workers
            job.feed.close()
    if stopped:
        where = (f"checkpoint saved in {saver.directory}/{done}" if saver.directory
                 else "no workdir, nothing saved")
        log(f"stopped by {stopped} after step {done}: {where}; rerun the same command to resume")
    final = ema.evaluated(state)  # the weights the run evaluated: their EMA, if it keeps one
    trained = nnx.merge(job.graphdef, *parallel.to_host((final.params, final.model_state)))
    return Result(trained, history, history[-1] if history else {}, stopped)


def _train_epoch(job: Job, state, sums, epoch: int, first: int, saver, runlog, signals,
                 history, stop_at_step, progress: bool):
    """Steps `first ..` of `epoch`, call by call; stop early on a signal or `stop_at_step`.

    Returns (state, sums, why it stopped or None, the step in the epoch it reached, seconds)."""
    spe, tc = job.steps_per_epoch, job.config.train
    every = job.config.checkpoint.every_steps
    sums = jax.device_put(sums, parallel.replicated(job.mesh))
    bar = _progress(progress and parallel.is_main_process(), spe, epoch, tc.epochs)
    bar.update(first)
    runlog.start_epoch(epoch * spe + first)
    i, stopped, t0 = first, None, time.perf_counter()
    while i < spe:
        n = call_length(i, job.feed.per_call, spe, epoch * spe, (every, tc.log_every_steps),
                        stop_at_step)
        state, sums = job.advance(state, sums, epoch, i, n)
        saver.check()
        i += n
        bar.update(n)
        done = epoch * spe + i
        runlog.called(done)
        if tc.log_every_steps and done % tc.log_every_steps == 0:
            host = sums_to_host(sums)  # waits for the step: one sync per log point
            saver.watch.train(host, done)
            runlog.step(done, host["loss"])
        stopped = (signals.received or ("stop_at_step" if done == stop_at_step else None)
                   or ("SIGTERM" if saver.reached_preemption(done) else None))
        if stopped:
            signals.deadline(stopped)  # the save that follows must not hang the run
        if i < spe and (stopped or (every and done % every == 0)):
            saver.save(state, done, epoch, i, sums, history)
        if stopped:
            break
    jax.block_until_ready(sums)  # the epoch's last step has run: its time is complete
    seconds = time.perf_counter() - t0
    bar.set_postfix_str(f"{(i - first) * tc.batch_size / seconds:,.0f} img/s")
    bar.close()
    return state, sums, stopped, i, seconds


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


def _call_lengths(job: Job, epoch: int, first: int, stop_at_step: int | None) -> set[int]:
    """The call lengths `_train_epoch` will take from step `first` of `epoch` to the run's end."""
    spe, tc = job.steps_per_epoch, job.config.train
    every = (job.config.checkpoint.every_steps, tc.log_every_steps)
    out = set()
    for e in range(epoch, tc.epochs):
        i = first if e == epoch else 0
        while i < spe:
            n = call_length(i, job.feed.per_call, spe, e * spe, every, stop_at_step)
            out.add(n)
            i += n
    return out


def _evaluate_epoch(job: Job, state, epoch: int, train: dict, seconds: float, steps: int
                    ) -> tuple[dict, float]:
    """The epoch's metrics.jsonl row: train sums, the per-epoch evaluations (val_*, or test_*
    without a validation split), speed; and the seconds of its last evaluation."""
    row = {"epoch": epoch + 1, "step": (epoch + 1) * job.steps_per_epoch,
           "train_loss": train["loss"], "train_accuracy": train["accuracy"]}
    eval_seconds = 0.0
    for split, evaluate_ in job.evaluate.items():
        t = time.perf_counter()
        ev = evaluate_(state)
        eval_seconds = time.perf_counter() - t
        row.update({f"{split}_loss": ev["loss"], f"{split}_accuracy": ev["accuracy"]})
    row.update(images_per_sec=steps * job.config.train.batch_size / seconds,
               epoch_seconds=seconds)
    return row, eval_seconds


def _final_evaluation(job: Job, state, clock: dict, row: dict, eval_seconds: float) -> dict:
    """The last row's additions: the test split (with TTA, `train.tta_level`; on the restored
    best weights with early stopping) and the run's time as airbench counts it: init +
    training + final evaluation, compilation left out and reported apart. Times are this
    process's: a resumed run counts from its restart."""
    tc, out = job.config.train, {"tta_level": job.config.train.tta_level}
    if tc.tta_level or "test_accuracy" not in row or tc.early_stop_patience:
        t = time.perf_counter()
        fin = job.final_evaluate(state)
        eval_seconds = time.perf_counter() - t
        if tc.tta_level and "test_accuracy" in row and not tc.early_stop_patience:
            out["test_accuracy_no_tta"] = row["test_accuracy"]
        out.update(test_loss=fin["loss"], test_accuracy=fin["accuracy"])
    out.update(init_seconds=clock["init"], train_seconds=clock["train"],
               final_eval_seconds=eval_seconds, compile_seconds=clock["compile"],
               run_seconds=clock["init"] + clock["train"] + eval_seconds)
    return out


def train_and_evaluate(config: ConfigDict, workdir: str | None = None, *, devices="all",
                       dataset: Dataset | None = None, model: nnx.Module | None = None,
                       progress: bool = True, log=print, stop_at_step: int | None = None
                       ) -> Result:
    """`build` then `fit`: train `config`, evaluate after every epoch, write into `workdir`."""
    check_workdir(workdir)  # before the data is loaded
    job, state = build(config, dataset=dataset, model=model, devices=devices)
    return fit(job, state, workdir=workdir, progress=progress, log=log,
               stop_at_step=stop_at_step)


# ---------------------------------------------------------------- what a run prints

def _announce(job: Job, pos: Position, saver: Saver, log) -> None:
    config, data, tc = job.config, job.data, job.config.train
    log(parallel.describe(job.mesh))
    feed = (f"data on device, {job.feed.per_call} steps per call"
            if isinstance(job.feed, DeviceFeed) else
            f"records streamed, decoded by {job.feed.loader.workers} Grain worker(s)"
            if isinstance(job.feed, StreamFeed) else "data streamed from host")
    log(f"jaxcnn: {config.model.name} on {data.name} ({len(data.train_labels)} train / "
        f"{len(data.test_labels)} test, {data.num_classes} classes), {tc.epochs} epochs x "
        f"{job.steps_per_epoch} steps of {tc.batch_size}"
        + (f" (an update every {tc.grad_accum_steps})" if tc.grad_accum_steps > 1 else "")
        + f"; {job.mesh.size} "
        f"{job.mesh.devices.flat[0].platform} device(s); {feed}")
    log(job.model_summary)
    where = saver.directory
    f, p = config.finetune, config.prune
    if f.init_from and saver.resumed_at is None:
        log(f"continuing {f.init_from}: every layer restored (finetune.keep_head)" if f.keep_head
            else f"fine-tuning ({f.mode}) from {f.init_from}: backbone restored, new head for "
            f"{data.num_classes} classes")
    if config.quant.mode == "qat":
        log("quantization-aware training: int8 weights and activations in the forward pass")
    if tc.ema_decay:
        log(f"evaluating and saving an exponential moving average of the weights (decay "
            f"{tc.ema_decay:g}, train.ema_decay)")
    if job.selection[0]:
        log(f"best checkpoint by {job.selection[0]}" + (
            f"; early stopping after {tc.early_stop_patience} epochs without a better one"
            if tc.early_stop_patience else ""))
    if p.sparsity:
        log(f"pruning ({p.scope}) to sparsity {p.sparsity:g} "
            + (f"at the start of epoch {p.start_epoch + 1}" if p.start_epoch == p.end_epoch else
               f"from epoch {p.start_epoch + 1} to {p.end_epoch + 1}"))
    if saver.resumed_at is not None and stopped_early(pos.history):
        log(f"{where}/{saver.resumed_at} stopped early (train.early_stop_patience): nothing to "
            "train (use another --workdir to start over)")
    elif saver.resumed_at is not None and pos.epoch >= tc.epochs:
        log(f"{where}/{saver.resumed_at} already finished all {tc.epochs} epochs: nothing to "
            "train (raise --config.train.epochs to continue, or use another --workdir to start "
            "over)")
    elif saver.resumed_at is not None:
        log(f"resuming from {where}/{saver.resumed_at}: epoch {pos.epoch + 1}, step "
            f"{pos.step_in_epoch} of {job.steps_per_epoch}")


def _epoch_line(row: dict, epochs: int) -> str:
    evals = " ".join(f"{s}_loss={row[s + '_loss']:.4f} {s}_accuracy={row[s + '_accuracy']:.4f}"
                     for s in ("val", "test") if s + "_loss" in row)
    return (f"epoch {row['epoch']}/{epochs}: train_loss={row['train_loss']:.4f} "
            f"train_accuracy={row['train_accuracy']:.4f} {evals} "
            f"({row['images_per_sec']:,.0f} img/s, {row['epoch_seconds']:.1f} s)")


def _restored_line(row: dict, metric: str, patience: int) -> str:
    why = (f"stopped early: {metric} not better for {patience} epoch(s) after epoch "
           f"{row['best_epoch']}; " if row["early_stopped"] else "")
    return (f"{why}test_* are of epoch {row['best_epoch']}'s weights, restored (best "
            f"{metric})")


def _final_line(row: dict) -> str:
    no_tta = (f" (without TTA {row['test_accuracy_no_tta']:.4f})"
              if "test_accuracy_no_tta" in row else "")
    tta = (f"tta_level={row['tta_level']} test_accuracy={row['test_accuracy']:.4f}{no_tta}; "
           if row["tta_level"] else "")
    return (f"final evaluation: {tta}run {row['run_seconds']:.1f} s = init "
            f"{row['init_seconds']:.1f} + train {row['train_seconds']:.1f} + final eval "
            f"{row['final_eval_seconds']:.1f}, compilation ({row['compile_seconds']:.1f} s) "
            "not counted")


def _progress(enabled: bool, total: int, epoch: int, epochs: int):
    from tqdm import tqdm
    return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="step", leave=False,
                disable=not enabled, mininterval=0.5)
