"""Throughput of the seed CNN in jaxcnn, side by side with the seed's own PyTorch code.

    python scripts/bench.py                    # a few minutes on 2 CPU cores
    python scripts/bench.py --quick            # smoke run, < 1 min
    python scripts/bench.py --json bench.json  # the same results as JSON
    python scripts/bench.py --no-torch         # jaxcnn only
    python scripts/bench.py --scaling --cpu-devices 8   # plus a 1/2/4/8-device table

Rows: training at batch 64 (the seed's) and 512, inference at batch 1024. Each side of a row is
a `Runner`; its first call is timed on its own (jaxcnn: trace + compile + one step), then a few
warm-up steps, then R repeats of S steps, each repeat ended by waiting for the device. The
repeats of all rows and both sides are interleaved, and which side goes first alternates from
one repeat to the next, so slow drift on a shared machine hits both sides alike.

jaxcnn runs the path `train_and_evaluate` runs: `train_steps_on_device` (16 steps per compiled
call on the CPU, `train.steps_per_call`), jitted with donation, gathering and normalising uint8
batches from the data set held on the device (`load("synthetic")`, 50,000 images, mean/std 0.5,
no augmentation: the seed recipe).
PyTorch runs the seed's network, loss and optimizer eagerly on float tensors already in memory:
its DataLoader (decode, ToTensor, Normalize) is left out, so neither side pays for loading.
"""

import argparse
import dataclasses
import datetime
import functools
import gc
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jaxcnn import models, parallel  # noqa: E402
from jaxcnn.config import compute_dtype, default_config  # noqa: E402
from jaxcnn.data import Dataset, load  # noqa: E402
from jaxcnn.data.pipeline import epoch_permutation, normalize  # noqa: E402
from jaxcnn.optim import make_optimizer, make_schedule  # noqa: E402
from jaxcnn.train import (  # noqa: E402
    StepFns,
    create_state,
    initial_train_sums,
    steps_per_call,
    train_steps_on_device,
)

EPOCH_IMAGES = 50_000  # a CIFAR-10 training epoch, for the seconds-per-epoch column


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    kind: str  # train | infer
    batch_size: int
    steps: int  # per repeat; ~5 s at ~1,200 img/s (train) on 2 CPU cores
    quick_steps: int


ROWS = (
    Row("train b64", "train", 64, 100, 8),
    Row("train b512", "train", 512, 12, 2),
    Row("infer b1024", "infer", 1024, 20, 2),
    Row("infer b1", "infer", 1, 200, 20),  # latency: shown in ms per call
)
REPEATS, QUICK_REPEATS = 5, 2
WARMUP, QUICK_WARMUP = 3, 1  # untimed steps after the first call
MIN_REPEAT_S = 2.0  # a repeat is lengthened to at least this (fast machines, GPUs)


@dataclasses.dataclass
class Runner:
    """One side of one row: `step()` queues one batch of work, `sync()` waits for all of it."""
    images_per_step: int
    step: Callable[[], None]
    sync: Callable[[], None]
    check: Callable[[], None]  # raises if the work went wrong (non-finite loss)
    per_call: int = 1  # optimizer steps one `step()` queues (jaxcnn: a compiled loop)


def run_steps(r: Runner, n: int) -> float:
    """Seconds for `n` steps, up to the end of the last one."""
    gc.collect()  # outside the timer: no collection pause lands inside a repeat
    t0 = time.perf_counter()
    for _ in range(n):
        r.step()
    r.sync()
    return time.perf_counter() - t0


# ---------------------------------------------------------------- jaxcnn

def jax_train(data: Dataset, batch_size: int, devices: list[jax.Device],
              per_call: int | None = None) -> Runner:
    """Seed CNN + Adam, built as `train_and_evaluate` builds them; the jitted on-device steps,
    `per_call` optimizer steps per call as the training loop takes them (default: its auto
    setting for the backend), the global batch split over a mesh of `devices`."""
    config = default_config()  # the seed recipe: cnn, adam 1e-3 constant, mean/std 0.5, no aug
    mesh = parallel.make_mesh(list(devices))
    batch_sh, repl_sh = parallel.batch_sharding(mesh), parallel.replicated(mesh)
    n_train = len(data.train_labels)
    steps_per_epoch = n_train // batch_size
    key = jax.random.key(config.seed)
    init_key, data_key, aug_key = (jax.random.fold_in(key, i) for i in range(3))
    model = models.create(config.model.name, num_classes=data.num_classes,
                          dtype=compute_dtype(config), param_dtype=config.model.param_dtype,
                          rngs=nnx.Rngs(init_key))
    tx = make_optimizer(config.optim, make_schedule(config.optim, steps_per_epoch,
                                                    config.train.epochs))
    graphdef, state = create_state(model, tx)
    fns = StepFns(graphdef, tx, tuple(config.data.mean), tuple(config.data.std),
                  config.data.crop_padding, config.data.flip, config.train.label_smoothing,
                  models.dtype_of(compute_dtype(config)))
    state = jax.device_put(state, repl_sh)
    images, labels = jax.device_put((data.train_images, data.train_labels), repl_sh)
    perm = epoch_permutation(data_key, 0, n_train)
    k = min(per_call or steps_per_call(config.train.steps_per_call, devices[0].platform),
            steps_per_epoch)
    step_fn = jax.jit(functools.partial(train_steps_on_device, fns=fns, batch_size=batch_size,
                                        sharding=batch_sh), donate_argnums=(0, 1))
    carry = {"state": state, "acc": jax.device_put(initial_train_sums(), repl_sh), "i": 0}

    def step():  # k optimizer steps, never across an epoch's end (the count stays exact)
        epoch, i = divmod(carry["i"], steps_per_epoch)
        if i + k > steps_per_epoch:
            epoch, i = epoch + 1, 0
        carry["state"], carry["acc"] = step_fn(carry["state"], carry["acc"], images, labels,
                                               perm, epoch, i, aug_key, k)
        carry["i"] = epoch * steps_per_epoch + i + k

    def check():
        loss = float(carry["acc"]["loss"])
        if not math.isfinite(loss):
            raise RuntimeError(f"jaxcnn train b{batch_size}: summed loss is {loss}")

    jax.block_until_ready((state, images, labels, perm))
    return Runner(batch_size * k, step, lambda: jax.block_until_ready(carry["acc"]), check,
                  per_call=k)


def jax_infer(data: Dataset, batch_size: int, device: jax.Device) -> Runner:
    """Jitted forward of the freshly initialised seed CNN in eval mode, normalised float input."""
    config = default_config()
    init_key = jax.random.fold_in(jax.random.key(config.seed), 0)
    model = models.create(config.model.name, num_classes=data.num_classes,
                          rngs=nnx.Rngs(init_key))
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    params, model_state = jax.device_put((params, model_state), device)
    x_BxHxWxC = jax.device_put(normalize(data.train_images[:batch_size], config.data.mean,
                                         config.data.std), device)

    @jax.jit
    def forward(params, model_state, x_BxHxWxC):
        return nnx.merge(graphdef, params, model_state, copy=True)(x_BxHxWxC, train=False)

    out = {"logits": None}

    def step():
        out["logits"] = forward(params, model_state, x_BxHxWxC)

    def check():
        if not np.isfinite(np.asarray(out["logits"])).all():
            raise RuntimeError(f"jaxcnn infer b{batch_size}: non-finite logits")

    jax.block_until_ready(x_BxHxWxC)
    return Runner(batch_size, step, lambda: jax.block_until_ready(out["logits"]), check)


# ---------------------------------------------------------------- PyTorch (the seed's code)

TORCH_POOL = 4096  # images held as float tensors; batches are slices of it (views, no copy)


def torch_device():
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_sync():
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def torch_seed_net():
    """The seed's network, as it wrote it."""
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
            self.fc1 = nn.Linear(64 * 8 * 8, 1024)
            self.fc2 = nn.Linear(1024, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = x.view(-1, 64 * 8 * 8)
            x = F.relu(self.fc1(x))
            return self.fc2(x)

    return Net()


def torch_batches(data: Dataset, batch_size: int):
    """Normalised NCHW float batches (the seed's transform, applied once, up front)."""
    import torch
    n = max(TORCH_POOL // batch_size, 1) * batch_size
    x_NxHxWxC = data.train_images[:n].astype(np.float32) / 255.0
    x_NxCxHxW = torch.from_numpy(((x_NxHxWxC - 0.5) / 0.5).transpose(0, 3, 1, 2).copy())
    y_N = torch.from_numpy(data.train_labels[:n].astype(np.int64))
    x_NxCxHxW, y_N = x_NxCxHxW.to(torch_device()), y_N.to(torch_device())
    return [(x_NxCxHxW[i:i + batch_size], y_N[i:i + batch_size])
            for i in range(0, n, batch_size)]


def torch_train(data: Dataset, batch_size: int) -> Runner:
    """The seed's loop body: zero_grad, forward, CrossEntropyLoss, backward, Adam step."""
    import torch
    torch.manual_seed(0)
    net = torch_seed_net().to(torch_device())
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    batches = torch_batches(data, batch_size)
    carry = {"i": 0, "loss": None}

    def step():
        inputs, labels = batches[carry["i"] % len(batches)]
        optimizer.zero_grad()
        loss = criterion(net(inputs), labels)
        loss.backward()
        optimizer.step()
        carry["loss"] = loss  # no .item(): that would wait for the GPU every step
        carry["i"] += 1

    def check():
        loss = carry["loss"].item()
        if not math.isfinite(loss):
            raise RuntimeError(f"PyTorch train b{batch_size}: loss is {loss}")

    return Runner(batch_size, step, torch_sync, check)


def torch_infer(data: Dataset, batch_size: int) -> Runner:
    """The seed's network forward under torch.no_grad(), eval mode."""
    import torch
    torch.manual_seed(0)
    net = torch_seed_net().to(torch_device()).eval()
    inputs, _ = torch_batches(data, batch_size)[0]
    out = {"logits": None}

    def step():
        with torch.no_grad():
            out["logits"] = net(inputs)

    def check():
        if not torch.isfinite(out["logits"]).all():
            raise RuntimeError(f"PyTorch infer b{batch_size}: non-finite logits")

    return Runner(batch_size, step, torch_sync, check)


# ---------------------------------------------------------------- measurement

@dataclasses.dataclass
class Side:
    """One side of one row being measured: its runner, its steps per repeat, its samples."""
    runner: Runner
    first_s: float = 0.0
    steps: int = 0
    seconds: list = dataclasses.field(default_factory=list)

    def summary(self, row: Row) -> dict:
        ips = [self.steps * self.runner.images_per_step / s for s in self.seconds]
        med = statistics.median(ips)
        out = {"images_per_s": med, "min": min(ips), "max": max(ips), "samples": ips,
               "steps": self.steps, "repeats": len(ips), "first_call_s": self.first_s}
        if row.kind == "train":
            out["epoch_s"] = EPOCH_IMAGES / med
        return out


def prepare(runner: Runner, steps: int, warmup: int, min_repeat_s: float) -> Side:
    """First call (timed: for jaxcnn trace + compile + one step), then warm-up steps.

    With `min_repeat_s` > 0 the warm-up's pace lengthens a repeat to at least that many seconds.
    """
    side = Side(runner, first_s=run_steps(runner, 1), steps=steps)
    if warmup:
        per_step = run_steps(runner, warmup) / warmup
        if min_repeat_s > 0:
            side.steps = max(steps, math.ceil(min_repeat_s / per_step))
    return side


def measure(sides: list[list[Side]], repeats: int, log=print) -> None:
    """`repeats` rounds over every row; within a row the side that goes first alternates."""
    for r in range(repeats):
        for row_sides in sides:
            for side in (row_sides if r % 2 == 0 else row_sides[::-1]):
                side.seconds.append(run_steps(side.runner, side.steps))
        log(f"  repeat {r + 1}/{repeats} done")
    for row_sides in sides:
        for side in row_sides:
            side.runner.check()


# ---------------------------------------------------------------- report

def machine_info(torch_threads: int | None) -> dict:
    """Machine, versions, backend and date: the header every result carries."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {"python": platform.python_version()}
    for pkg in ("jax", "jaxlib", "flax", "optax", "torch"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    dev = jax.devices()[0]
    info = {"cpu": cpu, "cores": os.cpu_count(), "load_avg_1m_start": os.getloadavg()[0],
            "versions": versions, "jax_backend": jax.default_backend(),
            "jax_device_kind": dev.device_kind, "jax_devices_used": 1,
            "jax_devices_present": jax.device_count(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": " ".join(["scripts/bench.py", *sys.argv[1:]])}
    if torch_threads is not None:
        import torch
        info["torch_device"] = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                                else "cpu")
        info["torch_threads"] = torch_threads
    return info


def _cell(s: dict | None, batch_size: int | None = None) -> str:
    if s is None:
        return "—"
    if batch_size == 1:  # latency, ms per image: the slowest repeat is the max
        return f"{1e3 / s['images_per_s']:.2f} ms [{1e3 / s['max']:.2f}–{1e3 / s['min']:.2f}]"
    return f"{s['images_per_s']:,.0f} [{s['min']:,.0f}–{s['max']:,.0f}]"


def markdown(info: dict, results: list[dict], notes: list[str]) -> str:
    v = info["versions"]
    lines = [
        "# jaxcnn benchmark: seed CNN on CIFAR-shaped data",
        "",
        f"- machine: {info['cpu']}, {info['cores']} cores; 1-min load average "
        f"{info['load_avg_1m_start']:.2f} at start, {info['load_avg_1m_end']:.2f} at end",
        "- versions: " + ", ".join(f"{k} {x}" for k, x in v.items() if x),
        f"- jaxcnn: backend {info['jax_backend']}, device {info['jax_device_kind']} "
        f"({info['jax_devices_used']} of {info['jax_devices_present']} used)",
    ]
    if "torch_device" in info:
        lines.append(f"- PyTorch: device {info['torch_device']}, {info['torch_threads']} "
                     f"intra-op threads (os.cpu_count() = {info['cores']})")
    lines += [f"- date: {info['date']}", f"- command: `{info['command']}`", "",
              "| row | jaxcnn img/s median [min–max] | PyTorch img/s median [min–max] | ratio "
              "| jaxcnn compile s | s / 50k-image epoch (jaxcnn / PyTorch) |",
              "|---|---:|---:|---:|---:|---:|"]
    for res in results:
        j, t = res["jaxcnn"], res["pytorch"]
        ratio = f"{res['ratio']:.2f}" if res["ratio"] is not None else "—"
        epoch = "—"
        if "epoch_s" in j:
            epoch = f"{j['epoch_s']:.1f} / " + (f"{t['epoch_s']:.1f}" if t else "—")
        b = res["batch_size"]
        lines.append(f"| {res['name']} | {_cell(j, b)} | {_cell(t, b)} | {ratio} "
                     f"| {j['first_call_s']:.2f} | {epoch} |")
    lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines)


def notes_for(results: list[dict], with_torch: bool, repeats: int) -> list[str]:
    steps = "; ".join(
        f"{r['name']} {r['jaxcnn']['steps']}"
        + (f" / {r['pytorch']['steps']}" if r["pytorch"] else "") for r in results)
    notes = [
        f"{repeats} timed repeats per cell; calls per repeat (jaxcnn"
        + (" / PyTorch" if with_torch else "") + f"): {steps}. Spread is min–max over repeats.",
        "Repeats are interleaved: each round runs every row once per side, and the side that "
        "goes first alternates from round to round.",
        "jaxcnn: `train_steps_on_device` jitted with donation (several optimizer steps per "
        "compiled call, `train.steps_per_call`), the path `train_and_evaluate` runs; it "
        "gathers and normalises uint8 batches from the data set held on the device "
        "(synthetic, 50,000 images, mean/std 0.5, no augmentation). Inference: jitted forward "
        "in eval mode on a normalised float batch.",
        "compile s: the first call alone (trace + compile + one call); then warm-up calls, "
        "untimed.",
    ]
    if with_torch:
        notes += [
            "PyTorch: the seed's Net, CrossEntropyLoss, Adam(lr=1e-3), eager; per batch "
            "zero_grad, forward, backward, step (no loss.item()). Inputs are normalised float "
            "tensors already in memory: the seed's DataLoader is left out, as is any data "
            "loading on the jaxcnn side.",
            "ratio: jaxcnn median / PyTorch median (> 1: jaxcnn faster).",
        ]
    return notes


# ---------------------------------------------------------------- main

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few steps and repeats: a smoke run")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    p.add_argument("--scaling", action="store_true",
                   help="also time training on meshes of 1, 2, 4 and 8 devices")
    p.add_argument("--cpu-devices", type=int, metavar="N",
                   help="split the CPU into N devices (JAX's jax_num_cpu_devices), for --scaling")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--torch-threads", type=int, default=os.cpu_count(),
                   help="PyTorch intra-op threads (default os.cpu_count())")
    p.add_argument("--steps", type=int, help="steps per repeat for every row (no lengthening)")
    p.add_argument("--per-call", type=int, metavar="K",
                   help="jaxcnn optimizer steps per compiled call (default: the training "
                        "loop's train.steps_per_call=0 choice for the backend)")
    p.add_argument("--repeats", type=int, help=f"timed repeats (default {REPEATS}, quick "
                   f"{QUICK_REPEATS})")
    p.add_argument("--warmup", type=int, help=f"untimed steps after the first call (default "
                   f"{WARMUP}, quick {QUICK_WARMUP})")
    p.add_argument("--airbench", metavar="DATA",
                   help="also time the airbench recipe (configs/cifar10_airbench.py) end to end "
                        "on data set DATA, e.g. folder:cifar10-jpeg.tar.gz")
    p.add_argument("--airbench-epochs", type=int, metavar="N",
                   help="epochs of the airbench runs (default: the config's)")
    p.add_argument("--airbench-seeds", type=int, default=3, metavar="N",
                   help="airbench runs, seeds 0..N-1 (default 3)")
    args = p.parse_args(argv)
    for name in ("steps", "per_call", "repeats", "torch_threads", "airbench_epochs",
                 "airbench_seeds"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.warmup is not None and args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.cpu_devices:
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)  # before any device query
    repeats = args.repeats or (QUICK_REPEATS if args.quick else REPEATS)
    warmup = args.warmup if args.warmup is not None else (QUICK_WARMUP if args.quick
                                                          else WARMUP)
    # Explicit step counts are taken as given; the default ones are lengthened where fast.
    min_repeat_s = 0.0 if (args.quick or args.steps) else MIN_REPEAT_S

    torch_threads = None
    if not args.no_torch:
        try:
            import torch
        except ImportError as e:
            print(f"PyTorch peer skipped: `import torch` failed ({e}); "
                  "pip install -e '.[bench]'", file=sys.stderr)
        else:
            torch_threads = args.torch_threads
            torch.set_num_threads(torch_threads)
    with_torch = torch_threads is not None
    info = machine_info(torch_threads)

    data = load("synthetic")
    device = jax.devices()[0]
    sides = []
    for row in ROWS:
        steps = args.steps or (row.quick_steps if args.quick else row.steps)
        print(f"preparing {row.name} ...", file=sys.stderr)
        if row.kind == "train":
            runners = [jax_train(data, row.batch_size, [device], args.per_call)]
            if with_torch:
                runners.append(torch_train(data, row.batch_size))
        else:
            runners = [jax_infer(data, row.batch_size, device)]
            if with_torch:
                runners.append(torch_infer(data, row.batch_size))
        # The same number of optimizer steps on each side: a jaxcnn call may take several.
        sides.append([prepare(r, max(1, round(steps / r.per_call)), warmup, min_repeat_s)
                      for r in runners])
    print(f"timing {repeats} interleaved repeats ...", file=sys.stderr)
    measure(sides, repeats, log=lambda s: print(s, file=sys.stderr))
    info["load_avg_1m_end"] = os.getloadavg()[0]

    results = []
    for row, row_sides in zip(ROWS, sides, strict=True):
        j = row_sides[0].summary(row)
        t = row_sides[1].summary(row) if with_torch else None
        results.append({"name": row.name, "kind": row.kind, "batch_size": row.batch_size,
                        "jaxcnn": j, "pytorch": t,
                        "ratio": j["images_per_s"] / t["images_per_s"] if t else None})
    notes = notes_for(results, with_torch, repeats)
    print(markdown(info, results, notes))
    scaling = measure_scaling(data, args, repeats, warmup, min_repeat_s) if args.scaling else []
    if scaling:
        print(scaling_markdown(scaling, info))
    airbench = measure_airbench(args.airbench, args.airbench_epochs,
                                args.airbench_seeds) if args.airbench else []
    if airbench:
        print(airbench_markdown(airbench))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": results, "notes": notes, "scaling": scaling,
                       "airbench": airbench},
                      f, indent=2)
            f.write("\n")
    return 0


# ---------------------------------------------------------------- scaling over devices

SCALING_BATCH = 512  # global batch, split over the devices
SCALING_STEPS, QUICK_SCALING_STEPS = 12, 2


def measure_scaling(data: Dataset, args, repeats: int, warmup: int,
                    min_repeat_s: float) -> list[dict]:
    """Seed CNN train images/s on meshes of 1, 2, 4, 8 devices (as many as there are)."""
    devices = jax.devices()
    counts = [n for n in (1, 2, 4, 8) if n <= len(devices)]
    steps = args.steps or (QUICK_SCALING_STEPS if args.quick else SCALING_STEPS)
    row = Row(f"train b{SCALING_BATCH}", "train", SCALING_BATCH, steps, steps)
    sides = []
    for n in counts:
        print(f"preparing scaling over {n} device(s) ...", file=sys.stderr)
        runner = jax_train(data, SCALING_BATCH, devices[:n], args.per_call)
        sides.append([prepare(runner, max(1, round(steps / runner.per_call)), warmup,
                              min_repeat_s)])
    measure(sides, repeats, log=lambda s: print(s, file=sys.stderr))
    out = [dict(devices=n, **side[0].summary(row)) for n, side in zip(counts, sides,
                                                                          strict=True)]
    for r in out:
        r["speedup"] = r["images_per_s"] / out[0]["images_per_s"]
    return out


def scaling_markdown(scaling: list[dict], info: dict) -> str:
    lines = ["", f"## Scaling: seed CNN training, global batch {SCALING_BATCH}, "
             f"{info['jax_backend']} devices", "",
             "| devices | img/s median [min–max] | speedup vs 1 | compile s |",
             "|---:|---:|---:|---:|"]
    for r in scaling:
        lines.append(f"| {r['devices']} | {_cell(r)} | {r['speedup']:.2f} | "
                     f"{r['first_call_s']:.2f} |")
    if info["jax_backend"] == "cpu":
        lines += ["", "Forced CPU devices (`--cpu-devices N`) share the same cores: this table "
                  "shows the overhead of splitting a batch over a mesh, not a speedup."]
    return "\n".join(lines)


# ---------------------------------------------------------------- airbench: time to accuracy

def measure_airbench(data: str, epochs: int | None, seeds: int) -> list[dict]:
    """The airbench recipe through `train_and_evaluate`, once per seed: its final (TTA) test
    accuracy and its time as airbench counts it (init + training + final evaluation, with
    compilation excluded and reported apart)."""
    import importlib.util

    from jaxcnn.train import train_and_evaluate
    spec = importlib.util.spec_from_file_location(
        "cifar10_airbench", os.path.join(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), "configs", "cifar10_airbench.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dataset = load(data)
    out = []
    for seed in range(seeds):
        config = module.get_config()
        config.data.name = data
        config.seed = seed
        if epochs:
            config.train.epochs = epochs
        print(f"airbench seed {seed} ...", file=sys.stderr)
        final = train_and_evaluate(config, dataset=dataset, progress=False,
                                   log=lambda *_: None).final
        out.append({"seed": seed, "epochs": config.train.epochs,
                    **{k: final[k] for k in ("test_accuracy", "test_accuracy_no_tta",
                                             "tta_level", "run_seconds", "train_seconds",
                                             "compile_seconds") if k in final}})
    return out


def airbench_markdown(runs: list[dict]) -> str:
    acc = [r["test_accuracy"] for r in runs]
    secs = [r["run_seconds"] for r in runs]
    spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
    lines = [f"## airbench recipe, {runs[0]['epochs']} epochs: time to accuracy", "",
             "| seed | test accuracy (TTA) | without TTA | run s (compile excluded) | compile s |",
             "|---:|---:|---:|---:|---:|"]
    for r in runs:
        lines.append(f"| {r['seed']} | {r['test_accuracy']:.4f} | "
                     f"{r.get('test_accuracy_no_tta', r['test_accuracy']):.4f} | "
                     f"{r['run_seconds']:.1f} | {r['compile_seconds']:.1f} |")
    lines += ["", f"Mean test accuracy {statistics.mean(acc):.4f} ± {spread:.4f} (std over "
              f"{len(acc)} seeds); run time median {statistics.median(secs):.1f} s "
              f"[{min(secs):.1f}–{max(secs):.1f}]."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

