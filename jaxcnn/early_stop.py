"""Early stopping with restore-best: `train.early_stop_patience` epochs without a better
selection metric (`config.selection_metric`: validation accuracy by default) end the run, and
the best epoch's weights go into the final test evaluation, the last checkpoint and exports.

Everything it decides follows from the epoch rows (metrics.jsonl, also in every checkpoint), so
a resumed run stops where the straight one does. The best weights are kept on the host when
they are reached; a resumed run that reached them before its restart reads them back from that
epoch's checkpoint (kept by the best-checkpoint policy on the same metric).
"""

import os

import jax

from jaxcnn import checkpoint, parallel
from jaxcnn.errors import UserError
from jaxcnn.steps import TrainState


def stopped_early(history) -> bool:
    """Whether the run of these epoch rows has ended by early stopping."""
    return bool(history) and bool(history[-1].get("early_stopped"))


class EarlyStop:
    def __init__(self, metric: str, mode: str, patience: int, history):
        self.metric, self.patience, self.sign = metric, patience, 1.0 if mode == "max" else -1.0
        self.best_epoch, self.best = 0, None
        self.weights = None  # host copy of the best epoch's (params, model_state, opt_state)
        for row in history:
            self._better(row)

    def _better(self, row: dict) -> bool:
        value = self.sign * row[self.metric]
        if self.best is None or value > self.best:
            self.best_epoch, self.best = row["epoch"], value
            return True
        return False

    def update(self, row: dict, state: TrainState) -> bool:
        """Take the epoch's row; True when the run should stop after it."""
        if self._better(row):
            # the optimizer state too: an EMA of the weights (train.ema_decay) lives there
            self.weights = parallel.to_host((state.params, state.model_state, state.opt_state))
        return row["epoch"] - self.best_epoch >= self.patience

    def restore(self, state: TrainState, ckpt_dir: str | None, steps_per_epoch: int,
                mesh) -> TrainState:
        """`state` with the best epoch's parameters, BatchNorm statistics and optimizer state
        (its EMA of the weights, when the run keeps one)."""
        if self.weights is None:  # reached before this process resumed the run
            step = self.best_epoch * steps_per_epoch
            path = os.path.join(ckpt_dir or "", str(step))
            if not ckpt_dir or not os.path.isdir(path):
                raise UserError(f"early stopping: the best epoch's checkpoint {path} is gone, so "
                                "its weights cannot be restored: keep checkpoint.best_metric "
                                "on, or train again")
            best, _ = checkpoint.restore(path, state)
            self.weights = (best.params, best.model_state, best.opt_state)
        params, model_state, opt_state = jax.device_put(self.weights,
                                                         parallel.replicated(mesh))
        return state._replace(params=params, model_state=model_state, opt_state=opt_state)
