"""The seed's PyTorch recipe on jaxcnn's decoded images: the peer of configs/cifar10_cnn.py.

  python scripts/torch_seed.py --data folder:../shared/data/cifar10-jpeg.tar.gz --seed 0 \
      --out results/runs/torch_cnn_seed0

The seed's training loop as it wrote it: `torch.manual_seed(seed)`, its network
(scripts/torch_peers.py), Adam 1e-3, CrossEntropyLoss, a DataLoader with batch 64 and
shuffle=True (the last batch of 50,000 % 64 = 16 images kept), 10 epochs. Its input transform,
ToTensor + Normalize((0.5,) * 3, (0.5,) * 3), is applied to the same uint8 arrays jaxcnn trains
on (decoded once by `jaxcnn.data.load`), so the two sides differ only in the library.
Writes `metrics.jsonl` (one line per epoch, the names jaxcnn's runs use) into `--out` and
prints `test_accuracy=<value>` last.
"""

import argparse
import json
import pathlib
import platform
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # torch_peers
sys.path.insert(1, str(pathlib.Path(__file__).resolve().parents[1]))  # configs

import torch_peers  # noqa: E402


def to_tensors(images_NxHxWxC: np.ndarray, labels_N: np.ndarray):
    """ToTensor + Normalize(0.5, 0.5): NCHW float32 (x / 255 - 0.5) / 0.5, int64 labels."""
    import torch
    x = (images_NxHxWxC.astype(np.float32) / 255.0 - 0.5) / 0.5
    return (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))),
            torch.from_numpy(labels_N.astype(np.int64)))


def evaluate(net, x, y, batch_size: int = 1000) -> dict:
    """Mean loss and accuracy over (x, y), in inference mode."""
    import torch
    import torch.nn.functional as F
    loss, correct = 0.0, 0
    net.eval()
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            logits = net(x[i:i + batch_size])
            loss += F.cross_entropy(logits, y[i:i + batch_size], reduction="sum").item()
            correct += (logits.argmax(1) == y[i:i + batch_size]).sum().item()
    net.train()
    return {"loss": loss / len(y), "accuracy": correct / len(y)}


def train(data, seed: int, epochs: int, batch_size: int, lr: float, out: pathlib.Path | None,
          log=print) -> list[dict]:
    """The seed's loop; one dict per epoch (also appended to out/metrics.jsonl)."""
    import torch
    import torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(seed)
    net = torch_peers.seed_net(data.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    criterion = nn.CrossEntropyLoss()
    train_x, train_y = to_tensors(data.train_images, data.train_labels)
    test_x, test_y = to_tensors(data.test_images, data.test_labels)
    loader = DataLoader(TensorDataset(train_x, train_y), batch_size=batch_size, shuffle=True)
    history, t0 = [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        t = time.perf_counter()
        loss_sum, correct, count = 0.0, 0, 0
        for x, y in loader:
            opt.zero_grad()
            logits = net(x)
            loss = criterion(logits, y)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            count += len(y)
        seconds = time.perf_counter() - t
        test = evaluate(net, test_x, test_y)
        row = {"epoch": epoch, "step": epoch * len(loader), "train_loss": loss_sum / count,
               "train_accuracy": correct / count, "test_loss": test["loss"],
               "test_accuracy": test["accuracy"], "epoch_seconds": round(seconds, 2),
               "train_seconds": round(time.perf_counter() - t0, 2)}
        history.append(row)
        log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in row.items()))
        if out is not None:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
    return history


def parity(data, steps: int, seed: int = 0, float64: bool = False) -> dict:
    """jaxcnn's engine (configs/cifar10_cnn.py) and the seed's PyTorch step, `steps` optimizer
    steps from the same weights on the same batches: jaxcnn's init copied into PyTorch, jaxcnn's
    epoch order, and the last batch of each epoch cut to its real rows as PyTorch's DataLoader
    does. PyTorch gets the float32 inputs jaxcnn's `normalize` makes, so the two differ in
    nothing but the library. `float64`: both sides compute in float64 (jax_enable_x64 must be
    on before any array is made), where rounding cannot hide a difference in the mechanics.

    Returns {"loss": [[jaxcnn, PyTorch] per step], "max_param_diff": largest |difference| of
    any parameter after the last step}.
    """
    import jax
    import jax.numpy as jnp
    import torch
    import torch.nn.functional as F
    from flax import nnx

    from configs.cifar10_cnn import get_config
    from jaxcnn import models, parallel, train
    from jaxcnn.data.pipeline import epoch_order, normalize
    from jaxcnn.steps import initial_train_sums

    if float64 != jax.config.jax_enable_x64:
        raise ValueError("float64=True needs jax_enable_x64 on (and False needs it off)")
    dtype = jnp.float64 if float64 else jnp.float32
    config = get_config()
    config.seed, config.train.steps_per_call = seed, 1
    # the model `build` would make, in `dtype`: same key, same initialisation
    model = models.create("cnn", num_classes=data.num_classes, dtype=dtype, param_dtype=dtype,
                          rngs=nnx.Rngs(jax.random.fold_in(jax.random.key(seed), 0)))
    job, state = train.build(config, dataset=data, model=model, devices=1)
    net = torch_peers.seed_net(data.num_classes).to(torch.float64 if float64 else torch.float32)
    torch_peers.copy_cnn_params(net, state.params)
    opt = torch.optim.Adam(net.parameters(), lr=config.optim.learning_rate)
    x = jax.jit(lambda im: normalize(im, *job.steps.preprocess))(data.train_images)
    x = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()).to(net.fc1.weight.dtype)
    y = torch.from_numpy(data.train_labels.astype(np.int64))
    n, b, spe = len(y), config.train.batch_size, job.steps_per_epoch
    losses = []
    for epoch in range(-(-steps // spe)):
        order = np.asarray(epoch_order(job.keys.data, epoch, n, spe, b))
        sums = jax.device_put(initial_train_sums(), parallel.replicated(job.mesh))
        for i in range(min(spe, steps - epoch * spe)):
            before = (float(sums["loss"]), float(sums["count"]))
            state, sums = job.advance(state, sums, epoch, i, 1)
            ours = (float(sums["loss"]) - before[0]) / (float(sums["count"]) - before[1])
            rows = torch.from_numpy(order[i * b:min((i + 1) * b, n)].astype(np.int64))
            opt.zero_grad()
            loss = F.cross_entropy(net(x[rows]), y[rows])
            loss.backward()
            opt.step()
            losses.append([ours, loss.item()])
    theirs = torch_peers.seed_net(data.num_classes).to(net.fc1.weight.dtype)
    torch_peers.copy_cnn_params(theirs, parallel.to_host(state.params))
    theirs = theirs.state_dict()
    diff = max(float((v - theirs[k]).abs().max()) for k, v in net.state_dict().items())
    return {"loss": losses, "max_param_diff": diff}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a jaxcnn data spec, e.g. folder:<archive>")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = PyTorch's default")
    p.add_argument("--out", type=pathlib.Path, help="a new directory for metrics.jsonl")
    p.add_argument("--train-per-class", type=int, default=0,
                   help="use the first N training images of each class; 0 = all")
    p.add_argument("--parity", type=int, metavar="STEPS", default=0,
                   help="instead of training: STEPS steps of jaxcnn and PyTorch from the same "
                        "weights and batches; prints JSON (see `parity`)")
    p.add_argument("--float64", action="store_true", help="--parity in float64")
    args = p.parse_args(argv)

    if args.float64:
        import jax
        jax.config.update("jax_enable_x64", True)
    import torch

    from jaxcnn.data import load
    from jaxcnn.errors import UserError

    if args.out is not None:
        if (args.out / "metrics.jsonl").exists():
            print(f"{args.out}/metrics.jsonl exists: pass a new --out", file=sys.stderr)
            return 2
        args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        data = load(args.data)
        if args.train_per_class:
            data = data.subset("", args.train_per_class)
    except UserError as e:
        print(e, file=sys.stderr)
        return 2
    if args.parity:
        print(json.dumps(parity(data, args.parity, args.seed, args.float64)))
        return 0
    if args.out is not None:
        meta = {"command": " ".join(["python3", "scripts/torch_seed.py", *sys.argv[1:]]),
                "torch": torch.__version__, "python": platform.python_version(),
                "threads": torch.get_num_threads(), "machine": platform.processor() or
                platform.machine(), "data": data.name}
        (args.out / "run.json").write_text(json.dumps(meta, indent=1) + "\n")
    history = train(data, args.seed, args.epochs, args.batch_size, args.lr, args.out)
    print(f"test_accuracy={history[-1]['test_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
