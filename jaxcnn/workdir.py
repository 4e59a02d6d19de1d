"""A run's workdir as the training loop uses it: open it, save into it, close it.

    state, pos, saver = open_workdir(job, state, workdir)   # own it, resume, write config.json
    saver.save(state, done, epoch, i, sums, history, row)   # checks, then an Orbax save
    saver.check()                                           # a failed background save, at once
    saver.close()                                           # wait for the last save, unlock

Opening owns the workdir (`ownership`: one run at a time, every process sees it), resumes from
the latest checkpoint only if it is this same run's (config and data identity, a consistent
meta record), and only then writes config.json. Saving refuses a diverged state
(`divergence.Watch`), so every checkpoint on disk is finite; a save that fails (disk full, an
unwritable or vanished workdir) stops the run with one line, the earlier checkpoints intact.
"""

import contextlib
import errno
import os
from typing import TYPE_CHECKING, NamedTuple

import jax
import numpy as np

from jaxcnn import checkpoint, divergence, ownership, parallel
from jaxcnn.errors import UserError
from jaxcnn.steps import TrainState

if TYPE_CHECKING:
    from jaxcnn.train import Job


class Position(NamedTuple):
    """Where a run stands: the next step is step `step_in_epoch` of 0-based `epoch`."""
    epoch: int = 0
    step_in_epoch: int = 0
    sums: dict | None = None  # the epoch's metric sums so far, when resuming mid-epoch
    history: tuple = ()


class Saver:
    """A run's checkpoints: every N epochs / steps and at the end; a no-op without a workdir."""

    def __init__(self, job: "Job", workdir: str | None, key: jax.Array):
        self.job, self.key = job, key
        self.directory = os.path.join(workdir, "checkpoints") if workdir else None
        self.resumed_at = checkpoint.latest_step(self.directory) if workdir else None
        self.watch = divergence.Watch(job.config.train.divergence_factor, job.steps_per_epoch,
                                      self.directory)
        self.identity = ownership.run_identity(job.config, job.data) if workdir else None
        self.ckpts = self.lock = self.pending = None
        self.failed = False

    def open(self, workdir: str) -> None:
        self.ckpts = checkpoint.RunCheckpoints(workdir, self.job.config.checkpoint,
                                               self.job.selection)

    def due_after_epoch(self, epochs_done: int, epochs: int, spe: int) -> bool:
        k = self.job.config.checkpoint
        return (epochs_done == epochs or (k.every_epochs and epochs_done % k.every_epochs == 0)
                or bool(k.every_steps and epochs_done * spe % k.every_steps == 0))

    def reached_preemption(self, done: int) -> bool:
        return bool(self.ckpts) and self.ckpts.reached_preemption(done)

    def save(self, state, done: int, epoch: int, step_in_epoch: int, sums, history,
             row: dict | None = None) -> None:
        """Save after `done` steps, unless the run has diverged (then stop, loudly): every
        checkpoint on disk holds a finite state."""
        self.watch.train(sums_to_host(sums), done)
        if self.ckpts is None:
            return
        self.watch.state(state, done)
        data, tc = self.job.data, self.job.config.train
        meta = {"epoch": epoch, "step_in_epoch": step_in_epoch, "step": done,
                "steps_per_epoch": self.job.steps_per_epoch, "batch_size": tc.batch_size,
                "acc": {k: float(v) for k, v in parallel.to_host(sums).items()
                        if k != "first_bad"},
                "history": history, "rng": jax.random.key_data(self.key).tolist(),
                "model": self.job.config.model.name, "num_classes": data.num_classes,
                "class_names": list(data.class_names), "image_shape": list(data.image_shape),
                "identity": self.identity}
        if hasattr(self.job.feed, "position"):  # streamed: where the record stream stands
            meta["stream"] = self.job.feed.position(epoch, step_in_epoch)
        if self.pending is not None:  # a failure of the previous save is named as its own
            with self._writing(self.pending):
                self.ckpts.wait()
        with self._writing(done):
            self.ckpts.save(done, state, meta, metrics=row)
        self.pending = done

    def check(self) -> None:
        """Raise now if a background save has failed (disk full, workdir gone), not at the next
        save: training on without checkpoints would be lost work."""
        if self.ckpts and self.pending is not None:
            with self._writing(self.pending):
                self.ckpts.check()

    @contextlib.contextmanager
    def _writing(self, step: int):
        try:
            yield
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - OSError, or TensorStore's errors from C++
            self.failed = True
            last = checkpoint.latest_step(self.directory)
            raise UserError(f"saving checkpoint {step} in {self.directory} failed "
                            f"({_first_line(e)}): the checkpoints already there are intact "
                            f"(latest: {last}); free disk space or fix the workdir, then rerun "
                            "the same command to resume") from None

    def close(self) -> None:
        """Wait for the save in flight (unless one failed), then give up the workdir."""
        try:
            if self.ckpts and not self.failed:
                with self._writing(self.pending):
                    self.ckpts.close()
        finally:
            if self.lock:
                self.lock.release()


def check_workdir(workdir: str | None) -> None:
    """Refuse a workdir that is a file or lies below one (one line, before anything is done)."""
    if not workdir:
        return
    path = os.path.abspath(workdir)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        where = "is" if path == os.path.abspath(workdir) else f"lies below {path}, which is"
        raise UserError(f"--workdir {workdir} {where} a file, not a directory: pass a directory")


def open_workdir(job: "Job", state: TrainState, workdir: str | None):
    """Own the workdir (lock; every process sees it), resume from its latest checkpoint if it
    is this same run's, then write config.json: nothing there changes before every check."""
    saver = Saver(job, workdir, job.key)
    if workdir:
        saver.lock = _own(workdir)
    try:
        return _resume(job, state, workdir, saver)
    except BaseException:
        saver.close()
        raise


def _own(workdir: str) -> ownership.WorkdirLock | None:
    check_workdir(workdir)
    if parallel.is_main_process():
        try:
            os.makedirs(workdir, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create --workdir {workdir}: {e.strerror}: pass a "
                            "directory this user can write") from None
    ownership.check_shared(workdir)
    return ownership.WorkdirLock(workdir).acquire() if parallel.is_main_process() else None


def _resume(job: "Job", state: TrainState, workdir: str | None, saver: Saver):
    pos = Position()
    # the latest step again: another run may have saved since `_Saver` looked, before the lock
    saver.resumed_at = checkpoint.latest_step(saver.directory) if workdir else None
    if saver.resumed_at is not None:
        ckpt = os.path.join(saver.directory, str(saver.resumed_at))
        state, meta = checkpoint.restore(ckpt, state)
        ownership.check_same_run(meta.get("identity"), saver.identity, ckpt)
        pos = _position(meta, saver.resumed_at, job, saver.directory)
        if hasattr(job.feed, "resume"):
            job.feed.resume(meta.get("stream"), pos.epoch, pos.step_in_epoch, ckpt)
        saver.key = jax.random.wrap_key_data(np.asarray(meta["rng"], np.uint32))
        job.set_key(saver.key)
    if workdir:
        if parallel.is_main_process():
            ownership.write_atomic(os.path.join(workdir, "config.json"), job.config
                                   .to_json_best_effort(indent=2, sort_keys=True) + "\n")
        saver.open(workdir)
    return state, pos, saver


def _position(meta: dict, step: int, job: "Job", ckpt_dir: str) -> Position:
    """Where the checkpoint's run stopped; refuse one whose epochs were cut differently."""
    spe, batch_size = job.steps_per_epoch, job.config.train.batch_size
    if (meta.get("steps_per_epoch"), meta.get("batch_size")) != (spe, batch_size):
        raise UserError(f"the checkpoint in {ckpt_dir} was saved by a run with "
                        f"train.batch_size={meta.get('batch_size')} and "
                        f"{meta.get('steps_per_epoch')} steps per epoch, this one has "
                        f"{batch_size} and {spe}: resume with the same data and batch "
                        "size, or use a new --workdir")
    try:
        sums = {k: np.float32(meta["acc"][k]) for k in ("loss", "correct", "count")}
        epoch, i, history = int(meta["epoch"]), int(meta["step_in_epoch"]), list(meta["history"])
        consistent = epoch * spe + i == step and 0 <= i < spe and len(history) == epoch
    except (KeyError, TypeError, ValueError):
        consistent = False
    if not consistent:
        raise UserError(f"the checkpoint {ckpt_dir}/{step} has a meta/ record that does not "
                        f"describe step {step} (epoch, step in the epoch and history disagree): "
                        "move it aside to resume from an earlier one, or start a new --workdir")
    sums["first_bad"] = np.int32(-1)
    return Position(epoch, i, sums, history)


# What a failed write says in the end, under the layers of TensorStore's and Orbax's messages.
_OS_REASONS = [os.strerror(n) for n in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS,
                                         errno.EACCES, errno.EIO, errno.ENOENT)]


def _first_line(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    reason = next((r for r in _OS_REASONS if r in text), None)
    if reason:
        return f"{reason}: {text[:120]}..."
    return text if len(text) <= 300 else text[:297] + "..."


def sums_to_host(sums: dict) -> dict:
    host = parallel.to_host(sums)
    count = max(float(host["count"]), 1.0)
    return {"loss": float(host["loss"]) / count, "accuracy": float(host["correct"]) / count,
            "count": int(host["count"]), "first_bad": int(host.get("first_bad", -1))}
