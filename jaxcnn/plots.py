"""Pictures of a run, as PNG files in `<workdir>/plots/`: curves, confusion matrix, predictions.

    python3 scripts/plot.py runs/digits_cnn  # scripts/train.py also writes them at the end

`curves.png`: train and test loss and accuracy per epoch, from metrics.jsonl.
`confusion_matrix.png`: test set counts, rows true class, columns predicted.
`per_class.png`: precision, recall and F1 of each class from that confusion matrix
(`inference.per_class`, the figures scripts/evaluate.py prints).
`predictions.png`: test images spread evenly over the test set (folder data sets are sorted by
class), with predicted and true labels, wrong ones in red.

Figures are built with matplotlib's object API and rendered by its Agg canvas: no pyplot, so
nothing changes the backend or global state of a program (a notebook) that imports jaxcnn.
"""

import os

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxcnn import logs
from jaxcnn.errors import UserError

WRONG = "tab:red"


def _save(fig: Figure, path: str) -> str:
    FigureCanvasAgg(fig)  # attach the Agg canvas: PNG output without pyplot
    fig.savefig(path, format="png", dpi=100)
    return path


def plot_curves(history: list[dict], path: str) -> str:
    """Loss and accuracy against the epoch, train, validation and test (the epochs that have
    them: with a validation split, test only at the end): one row of two panels."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for split in ("train", "val", "test"):
            rows = [r for r in history if f"{split}_{metric}" in r]
            # early stopping: the final test is of the best epoch's weights, drawn there
            at = [r.get("best_epoch", r["epoch"]) if split == "test" else r["epoch"]
                  for r in rows]
            if rows:
                ax.plot(at, [r[f"{split}_{metric}"] for r in rows], marker="o", label=split)
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    last = history[-1]
    restored = (f" (the weights of epoch {last['best_epoch']}, best on validation)"
                if "best_epoch" in last else "")
    fig.suptitle(f"test accuracy {last['test_accuracy']:.4f} after {last['epoch']} epochs"
                 + restored)
    return _save(fig, path)


def plot_confusion(cm_KxK: np.ndarray, class_names, path: str) -> str:
    """Counts, coloured by the share of each true class (row); numbers written when K <= 20."""
    k = len(cm_KxK)
    size = min(3 + 0.45 * k, 16)
    fig = Figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.subplots()
    rows = np.maximum(cm_KxK.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(cm_KxK / rows, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class")
    if k <= 20:
        ticks = np.arange(k)
        ax.set_xticks(ticks, class_names, rotation=45, ha="right")
        ax.set_yticks(ticks, class_names)
        for i in range(k):
            for j in range(k):
                share = cm_KxK[i, j] / rows[i, 0]
                ax.text(j, i, str(cm_KxK[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if share > 0.5 else "black")
    accuracy = np.trace(cm_KxK) / max(cm_KxK.sum(), 1)
    ax.set(xlabel="predicted", ylabel="true",
           title=f"confusion matrix: {cm_KxK.sum()} test images, accuracy {accuracy:.4f}")
    return _save(fig, path)


def plot_per_class(metrics: dict, class_names, path: str) -> str:
    """Precision, recall and F1 of each class as grouped bars, with the macro averages: the
    figures of `inference.per_class`, as scripts/evaluate.py prints them."""
    k = len(class_names)
    fig = Figure(figsize=(min(4 + 0.6 * k, 20), 4.5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(k)
    width = 0.27
    for j, name in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (j - 1) * width, metrics[f"per_class_{name}"], width,
               label=f"{name} (macro {metrics[f'macro_{name}']:.4f})")
    ax.set_xticks(x, class_names, rotation=45 if k > 10 else 0,
                  ha="right" if k > 10 else "center")
    ax.set(ylim=(0, 1.05), ylabel="score", title="precision, recall and F1 per class "
           f"({sum(metrics['per_class_count'])} test images)")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=3, fontsize=8)  # below: clear of the bars
    return _save(fig, path)


def plot_lr_find(result, path: str, *, title: str = "") -> str:
    """The range test (`jaxcnn.lr_find.RangeTest`): loss and smoothed loss against the learning
    rate on a log axis, the suggested rate marked."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.plot(result.lrs, result.losses, alpha=0.35, label="loss")
    ax.plot(result.lrs, result.smoothed, label="smoothed loss")
    ax.axvline(result.suggested, color=WRONG, linestyle="--",
               label=f"suggested {result.suggested:.3g}")
    ax.set_xscale("log")
    both = np.concatenate([result.losses, result.smoothed])
    finite = both[np.isfinite(both)]
    if finite.size:  # the divergence can be off the scale: keep the useful part in view
        ax.set_ylim(finite.min() * 0.9, min(finite.max(), result.smoothed[0] * 1.5) * 1.05)
    ax.set(xlabel="learning rate", ylabel="training loss",
           title=title or f"learning-rate range test ({result.stopped})")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, path)


def plot_predictions(images_NxHxWxC: np.ndarray, labels_N: np.ndarray, preds_N: np.ndarray,
                     class_names, path: str, *, columns: int = 8,
                     title: str = "test images") -> str:
    """A grid of uint8 images titled `predicted (true)`; wrong ones in red with a red frame."""
    n = len(images_NxHxWxC)
    rows = -(-n // columns)
    fig = Figure(figsize=(1.5 * columns, 1.6 * rows), layout="constrained")
    axes = np.asarray(fig.subplots(rows, columns, squeeze=False)).reshape(-1)
    for ax in axes[n:]:
        ax.axis("off")
    wrong = 0
    for ax, image, label, pred in zip(axes[:n], images_NxHxWxC, labels_N, preds_N, strict=True):
        gray = image.shape[-1] == 1
        ax.imshow(image[..., 0] if gray else image, cmap="gray" if gray else None,
                  interpolation="nearest")
        ok = int(label) == int(pred)
        wrong += not ok
        ax.set_title(class_names[pred] if ok else f"{class_names[pred]} ({class_names[label]})",
                     fontsize=8, color="black" if ok else WRONG)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set(visible=not ok, color=WRONG, linewidth=3)
    fig.suptitle(f"{title}: predicted (true); {wrong} wrong, in red")
    return _save(fig, path)


def plot_run(workdir: str, *, model=None, config=None, num_images: int = 32) -> list[str]:
    """Write curves, confusion matrix and predictions of a run into `<workdir>/plots/`.

    The model and config default to the run's latest checkpoint and config.json; pass the
    trained `model` and `config` at the end of a run to skip reloading them. The test set is
    the run's data set, subset by `data.classes` / `data.train_per_class` as in training.
    Returns the paths written.
    """
    from jaxcnn import evaluation, inference
    from jaxcnn.data import load, load_options
    metrics = os.path.join(workdir, logs.METRICS_FILE)
    if not os.path.isfile(metrics):
        raise UserError(f"{metrics} does not exist: give the workdir of a run that has finished "
                        "at least one epoch")
    history = logs.read_metrics(workdir)
    if not history:
        raise UserError(f"{metrics} has no epochs yet: plot once the run has finished one")
    if model is None or config is None:
        run = inference.load_run(workdir)
        model, config = run.model, run.config
    data = load(config.data.name, **load_options(config.data))
    if config.data.classes or config.data.train_per_class:
        data = data.subset(config.data.classes, config.data.train_per_class)
    # the run's own evaluation (test-time augmentation included): the figures match its metrics
    # (on this process's devices: in a multi-process run only process 0 plots)
    cm_KxK = evaluation.evaluate(model, data.test_images, data.test_labels, config,
                                 devices=jax.local_devices())["confusion_matrix"]
    idx_n = np.linspace(0, len(data.test_labels) - 1,
                        min(num_images, len(data.test_labels))).astype(int)
    preds_n = inference.predict_logits(model, data.test_images[idx_n], config).argmax(-1)
    out = os.path.join(workdir, "plots")
    os.makedirs(out, exist_ok=True)
    return [
        plot_curves(history, os.path.join(out, "curves.png")),
        plot_confusion(cm_KxK, data.class_names, os.path.join(out, "confusion_matrix.png")),
        plot_per_class(inference.per_class(cm_KxK), data.class_names,
                       os.path.join(out, "per_class.png")),
        plot_predictions(data.test_images[idx_n], data.test_labels[idx_n], preds_n,
                         data.class_names, os.path.join(out, "predictions.png"),
                         title=f"{len(idx_n)} of {len(data.test_labels)} test images, evenly "
                               "spaced"),
    ]
