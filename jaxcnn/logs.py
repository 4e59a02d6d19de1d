"""What a run records for people watching it: metrics.jsonl and a TensorBoard event file.

Both live in the workdir. Per epoch, every metrics.jsonl field (train/test loss and accuracy,
images/s, epoch time) goes to the event file as `epoch/<field>` at the epoch's last optimizer
step; every `train.log_every_steps` steps, `step/learning_rate`, `step/train_loss` (the epoch's
running mean so far) and `step/seconds` (per step, since the last point) go there too. View
them with `tensorboard --logdir <workdir or its parent>`. The event file is written with
tensorboardX, so no TensorFlow is needed.
"""

import json
import os
import time
from collections.abc import Callable

from jaxcnn import ownership

METRICS_FILE = "metrics.jsonl"


class RunLog:
    """metrics.jsonl plus one TensorBoard event file per run segment (a resume starts a new one).

    `workdir=None` (no workdir, or a process other than 0) makes every call a no-op, so the
    train loop calls it unconditionally.
    """

    def __init__(self, workdir: str | None, history: list[dict], every_steps: int,
                 schedule: Callable, resumed_at: int | None = None, profile_steps: int = 0):
        self.every, self.schedule = every_steps, schedule
        self._t, self._t_step = time.perf_counter(), 0
        self.jsonl = self.events = self._path = None
        self._profile = (workdir, profile_steps) if workdir and profile_steps else None
        self._profile_until = None
        if workdir is None:
            return
        from tensorboardX import SummaryWriter
        # A resumed run continues the history its checkpoint recorded: the file is rewritten
        # from it (dropping rows written after that checkpoint) with the first new epoch, not
        # before, so a run that stops or fails before finishing an epoch leaves it as it was.
        self._path, self._history = os.path.join(workdir, METRICS_FILE), list(history)
        # purge_step: TensorBoard hides what an earlier segment logged after the checkpoint this
        # one resumes from (a run killed between two checkpoints), so each step shows once.
        # The suffix: tensorboardX names files by the second and would overwrite a segment
        # started in the same second; TensorBoard reads the files in name order.
        start = resumed_at or 0
        self.events = SummaryWriter(workdir, purge_step=start + 1 if resumed_at else None,
                                    filename_suffix=f".from{start:012d}")

    def start_epoch(self, step: int) -> None:
        """The epoch's first step is `step + 1`: time steps from now, not from the evaluation."""
        self._t, self._t_step = time.perf_counter(), step
        if self._profile and self._profile_until is None:
            # `train.profile_steps`: a jax.profiler trace of the first steps after compilation,
            # into <workdir>/plugins/profile/, where TensorBoard's profile tab (XProf) finds it
            import jax
            workdir, steps = self._profile
            jax.profiler.start_trace(workdir)
            self._profile_until = step + steps

    def called(self, step: int) -> None:
        """After every compiled call (`step` steps done): end the trace once it has its steps."""
        if self._profile and self._profile_until is not None and step >= self._profile_until:
            self._stop_trace()

    def _stop_trace(self) -> None:
        import jax
        jax.profiler.stop_trace()
        self._profile = None

    def step(self, step: int, loss: float) -> None:
        """Every `every_steps` steps: learning rate, the epoch's running train `loss` (read from
        the device after step `step`, so the time is complete), step time."""
        if self.events is None or not self.every or step % self.every:
            return
        now = time.perf_counter()
        seconds = (now - self._t) / max(step - self._t_step, 1)
        self._t, self._t_step = now, step
        # the rate the update to step `step` used: optax counts updates from 0
        self.events.add_scalar("step/learning_rate", float(self.schedule(step - 1)), step)
        self.events.add_scalar("step/train_loss", loss, step)
        self.events.add_scalar("step/seconds", seconds, step)

    def epoch(self, row: dict) -> None:
        """Append an epoch's row to metrics.jsonl and its numbers to the event file."""
        if self._path is None:
            return
        if self.jsonl is None:  # the first epoch of this segment: history and row at once
            ownership.write_atomic(self._path, "".join(json.dumps(r) + "\n"
                                                       for r in [*self._history, row]))
            self.jsonl = open(self._path, "a")
        else:
            self.jsonl.write(json.dumps(row) + "\n")
            self.jsonl.flush()
        for name, value in row.items():
            if name not in ("epoch", "step") and isinstance(value, (int, float)):
                self.events.add_scalar(f"epoch/{name}", value, row["step"])
        self.events.flush()

    def close(self) -> None:
        if self._profile and self._profile_until is not None:
            self._stop_trace()  # the run ended (or failed) within the traced steps
        if self.jsonl is not None:
            self.jsonl.close()
        if self.events is not None:
            self.events.close()


def read_metrics(workdir: str) -> list[dict]:
    """The rows of `<workdir>/metrics.jsonl`, one dict per epoch."""
    with open(os.path.join(workdir, METRICS_FILE)) as f:
        return [json.loads(line) for line in f if line.strip()]
