"""Training and inference speed of every model, side by side with the same network in PyTorch.

    python scripts/bench.py --json results/bench-<date>.json   # ~10 minutes on 2 CPU cores
    python scripts/bench.py --quick --no-torch                  # smoke run
    python scripts/bench.py --rows "train cnn b64"              # some rows only
    python scripts/bench.py --sweep                             # steps per compiled call
    python scripts/bench.py --input --json results/bench-input-<date>.json  # decode + augment

Training rows (`train <model> b<batch>`) time three sides on the same synthetic CIFAR-shaped
data (50,000 uint8 images, on the device):
  engine     the training loop's own step: `train.build(config)` then `job.advance`, with the
             steps per compiled call `fit` takes between log points (`train.steps_per_call=0`,
             chosen per backend and model: jaxcnn/feeds.py), batches gathered, augmented and
             normalised inside the compiled call as in training;
  one/step   the same build with `train.steps_per_call=1`: one `jax.jit` dispatch per step, the
             plain jitted train step the engine's loop must not be slower than;
  PyTorch    the same network, loss and optimizer in eager mode on normalised float tensors
             already in memory (scripts/torch_peers.py): no DataLoader, no augmentation.
Inference rows: the seed CNN's jitted forward (`steps.forward`: normalisation inside, inference
mode) on a uint8 batch on the device, against `torch.no_grad()` eval mode on a float batch;
`infer cnn b1` is latency: every call waits for its result, on both sides.

Each side is timed as: compile (`.lower().compile()` alone, jaxcnn only), first call (timed
apart), warm-up calls, then R repeats of S optimizer steps (or forward calls), each ended by
waiting for the device. The repeats of all rows and sides are interleaved, and the side order
rotates from one repeat to the next, so slow drift on a shared machine hits all sides alike.
`--json` writes every repeat, the machine and the versions.

`--input` times the input pipeline alone: decode + augment (random-resized crop + flip, uint8
out) of the CIFAR-10 JPEG copy's train/ files (or `--input-data`), as a streamed jaxcnn run
does (`data.stream.Loader`: Grain worker processes running `data.transforms.train_transform`;
with 0 workers, two threads of this process) and as PyTorch does (DataLoader over torchvision's
ImageFolder, RandomResizedCrop, RandomHorizontalFlip, PILToTensor), on the same images at the
same worker counts and batch size. Each repeat is one pass over the same
images with fresh loaders; img/s counts from the moment every worker has delivered its first
batch to the last batch, so the workers' start (Grain spawns fresh interpreters that import this
script, PyTorch forks) is reported apart.
"""

import argparse
import dataclasses
import datetime
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jaxcnn import models, parallel, train  # noqa: E402
from jaxcnn.config import default_config  # noqa: E402
from jaxcnn.data import Dataset, load, load_options  # noqa: E402
from jaxcnn.inference import forward_config  # noqa: E402
from jaxcnn.steps import forward, initial_train_sums  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"cnn": None, "resnet20": "cifar10_resnet20", "resnet18": "cifar10_resnet20",
           "airbench": "cifar10_airbench"}


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    kind: str  # train | infer | latency
    model: str
    batch_size: int
    steps: int  # optimizer steps (or forward calls) per repeat
    quick_steps: int


ROWS = (
    Row("train cnn b64", "train", "cnn", 64, 96, 16),
    Row("train cnn b512", "train", "cnn", 512, 16, 2),
    Row("train resnet20 b64", "train", "resnet20", 64, 32, 4),
    Row("train resnet20 b512", "train", "resnet20", 512, 8, 2),  # configs/cifar10_resnet20.py
    Row("train resnet18 b64", "train", "resnet18", 64, 8, 2),
    Row("train airbench b128", "train", "airbench", 128, 16, 2),
    Row("infer cnn b1024", "infer", "cnn", 1024, 20, 2),
    Row("infer cnn b1", "latency", "cnn", 1, 200, 20),
)
REPEATS, QUICK_REPEATS = 5, 2
WARMUP, QUICK_WARMUP = 2, 1  # untimed calls after the first one
MIN_REPEAT_S = 2.0  # a repeat is lengthened to at least this (fast machines, GPUs)


@dataclasses.dataclass
class Runner:
    """One side of one row: `step()` queues `per_call` steps of work, `sync()` waits for it."""
    side: str
    images_per_call: int
    step: Callable[[], None]
    sync: Callable[[], None]
    check: Callable[[], None]  # raises if the work went wrong (non-finite loss)
    per_call: int = 1  # optimizer steps one `step()` takes
    compile_s: float | None = None  # `.lower().compile()` alone (jaxcnn)


def run_calls(r: Runner, n: int, blocking: bool = False) -> float:
    """Seconds for `n` calls, up to the end of the last one (of each one, if `blocking`)."""
    gc.collect()  # outside the timer: no collection pause lands inside a repeat
    t0 = time.perf_counter()
    for _ in range(n):
        r.step()
        if blocking:
            r.sync()
    r.sync()
    return time.perf_counter() - t0


# ---------------------------------------------------------------- jaxcnn

def model_config(model: str, batch_size: int, steps_per_call: int = 0):
    """The model's recipe (its configs/ file; the seed recipe for the CNN) at `batch_size`."""
    config = default_config()
    if CONFIGS[model]:
        import importlib
        config = importlib.import_module(f"configs.{CONFIGS[model]}").get_config()
    config.model.name = model
    config.train.batch_size, config.train.steps_per_call = batch_size, steps_per_call
    config.train.epochs, config.train.eval_batch_size = 1, 1000
    return config


def jax_train(data: Dataset, model: str, batch_size: int, devices="1",
              steps_per_call: int = 0) -> Runner:
    """`build` the model's recipe, then time `job.advance` as `fit` calls it: `per_call` steps
    per call, never across an epoch's end (the epoch's sums stay exact)."""
    config = model_config(model, batch_size, steps_per_call)
    job, state = train.build(config, dataset=data, devices=devices)
    k = min(job.feed.per_call, job.steps_per_epoch)
    spe = job.steps_per_epoch
    compile_s = job.compile(state, 0, [k])
    # the sums replicated, as `fit` passes them: the call then hits the executable compiled above
    sums = jax.device_put(initial_train_sums(), parallel.replicated(job.mesh))
    carry = {"state": state, "sums": sums, "done": 0}

    def step():
        epoch, i = divmod(carry["done"], spe)
        if i + k > spe:
            epoch, i = epoch + 1, 0
        carry["state"], carry["sums"] = job.advance(carry["state"], carry["sums"], epoch, i, k)
        carry["done"] = epoch * spe + i + k

    def check():
        loss = float(carry["sums"]["loss"])
        if not math.isfinite(loss):
            raise RuntimeError(f"jaxcnn {model} b{batch_size}: summed loss is {loss}")

    side = "engine" if steps_per_call == 0 else f"{steps_per_call}/call"
    return Runner(side, batch_size * k, step, lambda: jax.block_until_ready(carry["sums"]),
                  check, per_call=k, compile_s=compile_s)


def jax_infer(data: Dataset, model: str, batch_size: int) -> Runner:
    """The jitted `steps.forward` (normalisation inside, inference mode) of the freshly
    initialised model on a uint8 batch on the device."""
    config = model_config(model, 64)
    net = models.create(model, num_classes=data.num_classes, rngs=nnx.Rngs(0),
                        **models.options(config.model))
    cfg, params, model_state = forward_config(net, config, data.image_shape)
    params, model_state = jax.device_put((params, model_state))
    x = jax.device_put(data.train_images[:batch_size])
    t = time.perf_counter()
    compiled = jax.jit(lambda p, s, x: forward(cfg, p, s, x)).lower(params, model_state,
                                                                   x).compile()
    compile_s = time.perf_counter() - t
    out = {"logits": None}

    def step():
        out["logits"] = compiled(params, model_state, x)

    def check():
        if not np.isfinite(np.asarray(out["logits"])).all():
            raise RuntimeError(f"jaxcnn infer {model} b{batch_size}: non-finite logits")

    return Runner("engine", batch_size, step, lambda: jax.block_until_ready(out["logits"]),
                  check, compile_s=compile_s)


# ---------------------------------------------------------------- PyTorch

def torch_train(data: Dataset, model: str, batch_size: int) -> Runner:
    """The same network, loss and optimizer, eager: zero_grad, forward, loss, backward, step."""
    import torch
    import torch_peers
    torch.manual_seed(0)
    make_net, make_opt, smoothing = torch_peers.RECIPES[model]
    net = make_net().to(torch_peers.device()).train()
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=smoothing)
    optimizer = make_opt([p for p in net.parameters() if p.requires_grad])
    batches = torch_peers.batches(data.train_images, data.train_labels, batch_size)
    carry = {"i": 0, "loss": None}

    def step():
        inputs, labels = batches[carry["i"] % len(batches)]
        optimizer.zero_grad()
        loss = criterion(net(inputs), labels)
        loss.backward()
        optimizer.step()
        carry["loss"] = loss  # no .item(): that would wait for a GPU every step
        carry["i"] += 1

    def check():
        loss = carry["loss"].item()
        if not math.isfinite(loss):
            raise RuntimeError(f"PyTorch {model} b{batch_size}: loss is {loss}")

    return Runner("PyTorch", batch_size, step, torch_peers.sync, check)


def torch_infer(data: Dataset, model: str, batch_size: int) -> Runner:
    import torch
    import torch_peers
    torch.manual_seed(0)
    net = torch_peers.RECIPES[model][0]().to(torch_peers.device()).eval()
    inputs, _ = torch_peers.batches(data.train_images, data.train_labels, batch_size)[0]
    out = {"logits": None}

    def step():
        with torch.no_grad():
            out["logits"] = net(inputs)

    def check():
        if not torch.isfinite(out["logits"]).all():
            raise RuntimeError(f"PyTorch infer {model} b{batch_size}: non-finite logits")

    return Runner("PyTorch", batch_size, step, torch_peers.sync, check)


# ---------------------------------------------------------------- measurement

@dataclasses.dataclass
class Side:
    """One side of one row being measured: its runner, its calls per repeat, its samples."""
    runner: Runner
    blocking: bool
    first_call_s: float = 0.0
    calls: int = 0
    seconds: list = dataclasses.field(default_factory=list)

    def summary(self) -> dict:
        r = self.runner
        ips = [self.calls * r.images_per_call / s for s in self.seconds]
        out = {"side": r.side, "images_per_s": statistics.median(ips), "min": min(ips),
               "max": max(ips), "samples": ips, "seconds": self.seconds, "calls": self.calls,
               "steps_per_call": r.per_call, "repeats": len(ips),
               "compile_s": r.compile_s, "first_call_s": self.first_call_s}
        if self.blocking:  # latency: ms per call, each call waited for
            ms = [1e3 * s / self.calls for s in self.seconds]
            out.update(ms_per_call=statistics.median(ms), ms_min=min(ms), ms_max=max(ms))
        return out


def prepare(runner: Runner, steps: int, warmup: int, min_repeat_s: float, blocking: bool
            ) -> Side:
    """The first call (timed apart), warm-up calls; `steps` optimizer steps per repeat, in
    whole calls, lengthened to at least `min_repeat_s` seconds when that is > 0."""
    side = Side(runner, blocking, first_call_s=run_calls(runner, 1, blocking),
                calls=max(1, round(steps / runner.per_call)))
    if warmup:
        per_call = run_calls(runner, warmup, blocking) / warmup
        if min_repeat_s > 0:
            side.calls = max(side.calls, math.ceil(min_repeat_s / per_call))
    return side


def measure(rows: list[list[Side]], repeats: int, log=print) -> None:
    """`repeats` rounds over every row; within a row the side that goes first rotates."""
    for r in range(repeats):
        for sides in rows:
            k = r % len(sides)
            for side in sides[k:] + sides[:k]:
                side.seconds.append(run_calls(side.runner, side.calls, side.blocking))
        log(f"  repeat {r + 1}/{repeats} done")
    for sides in rows:
        for side in sides:
            side.runner.check()


def host_info(packages) -> dict:
    """CPU, cores, load, the versions of `packages`, date and command: what every result says
    of the machine (no JAX backend is started here)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {"python": platform.python_version()}
    for pkg in packages:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg_1m_start": os.getloadavg()[0],
            "versions": versions,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": " ".join(["scripts/bench.py", *sys.argv[1:]])}


def machine_info(torch_threads: int | None) -> dict:
    """Machine, versions, backend and date: the header every result carries."""
    info = host_info(("jax", "jaxlib", "flax", "optax", "torch"))
    dev = jax.devices()[0]
    info.update(jax_backend=jax.default_backend(), jax_device_kind=dev.device_kind,
                jax_devices_used=1, jax_devices_present=jax.device_count())
    if torch_threads is not None:
        import torch
        info["torch_device"] = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                                else "cpu")
        info["torch_threads"] = torch_threads
    return info


# ---------------------------------------------------------------- report

def _cell(s: dict | None) -> str:
    if s is None:
        return "—"
    if "ms_per_call" in s:
        return f"{s['ms_per_call']:.2f} ms [{s['ms_min']:.2f}–{s['ms_max']:.2f}]"
    return f"{s['images_per_s']:,.0f} [{s['min']:,.0f}–{s['max']:,.0f}]"


def _ratio(a: dict | None, b: dict | None) -> str:
    return f"{a['images_per_s'] / b['images_per_s']:.2f}" if a and b else "—"


def markdown(info: dict, results: list[dict]) -> str:
    if results and results[0]["kind"] == "input":  # a --input run's rows
        return input_markdown(info, results)
    v = info["versions"]
    lines = [
        "# jaxcnn benchmark: every model, engine vs one dispatch per step vs PyTorch eager", "",
        f"- machine: {info['cpu']}, {info['cores']} cores; 1-min load average "
        f"{info['load_avg_1m_start']:.2f} at start, {info['load_avg_1m_end']:.2f} at end",
        "- versions: " + ", ".join(f"{k} {x}" for k, x in v.items() if x),
        f"- jaxcnn: backend {info['jax_backend']}, device {info['jax_device_kind']} "
        f"({info['jax_devices_used']} of {info['jax_devices_present']} used)"]
    if "torch_device" in info:
        lines.append(f"- PyTorch: device {info['torch_device']}, {info['torch_threads']} "
                     "intra-op threads")
    lines += [f"- date: {info['date']}", f"- command: `{info['command']}`", "",
              "img/s median [min–max] over the repeats (latency: ms per call, each call waited "
              "for).", "",
              "| row | engine (steps/call) | one dispatch per step | PyTorch eager "
              "| engine / one-per-step | engine / PyTorch | compile s | first call s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        e, one, t = res["engine"], res.get("one_per_step"), res.get("pytorch")
        vs_torch = _ratio(e, t)
        if "ms_per_call" in e and t:  # latency: PyTorch's ms over ours
            vs_torch = f"{t['ms_per_call'] / e['ms_per_call']:.2f}"
        lines.append(f"| {res['name']} | {_cell(e)} ({e['steps_per_call']}) | {_cell(one)} "
                     f"| {_cell(t)} | {_ratio(e, one)} | {vs_torch} | {e['compile_s']:.2f} "
                     f"| {e['first_call_s']:.2f} |")
    return "\n".join(lines)


def sweep_markdown(sweep: list[dict]) -> str:
    lines = ["", "## Steps per compiled call (engine, ms per optimizer step, median [min–max])",
             "", "| model, batch | " + " | ".join(f"{k}/call" for k in SWEEP) + " |",
             "|---|" + "---:|" * len(SWEEP)]
    for row in sweep:
        cells = []
        for k in SWEEP:
            s = row["sides"].get(str(k))
            cells.append("—" if s is None else
                         f"{1e3 * row['batch_size'] / s['images_per_s']:.1f} "
                         f"[{1e3 * row['batch_size'] / s['max']:.1f}–"
                         f"{1e3 * row['batch_size'] / s['min']:.1f}]")
        lines.append(f"| {row['model']} b{row['batch_size']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main

SWEEP = (1, 2, 4, 8, 16, 32)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few steps and repeats: a smoke run")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    p.add_argument("--rows", help="comma list of row names (default: all), e.g. "
                   "'train cnn b64,infer cnn b1'")
    p.add_argument("--sweep", action="store_true",
                   help="also time the engine at 1..32 steps per call for every train row")
    p.add_argument("--scaling", action="store_true",
                   help="also time seed CNN training on meshes of 1, 2, 4 and 8 devices")
    p.add_argument("--cpu-devices", type=int, metavar="N",
                   help="split the CPU into N devices (JAX's jax_num_cpu_devices), for --scaling")
    p.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    p.add_argument("--torch-threads", type=int, default=os.cpu_count(),
                   help="PyTorch intra-op threads (default os.cpu_count())")
    p.add_argument("--steps", type=int, help="optimizer steps per repeat for every row (taken "
                   "as given: no lengthening)")
    p.add_argument("--repeats", type=int, help=f"timed repeats (default {REPEATS}, quick "
                   f"{QUICK_REPEATS})")
    p.add_argument("--warmup", type=int, help=f"untimed calls after the first one (default "
                   f"{WARMUP}, quick {QUICK_WARMUP})")
    p.add_argument("--airbench", metavar="DATA",
                   help="also time the airbench recipe (configs/cifar10_airbench.py) end to end "
                        "on data set DATA, e.g. folder:cifar10-jpeg.tar.gz")
    p.add_argument("--airbench-epochs", type=int, metavar="N",
                   help="epochs of the airbench runs (default: the config's)")
    p.add_argument("--airbench-seeds", type=int, default=3, metavar="N",
                   help="airbench runs, seeds 0..N-1 (default 3)")
    p.add_argument("--input", action="store_true",
                   help="time the input pipeline instead: decode + augment img/s of jaxcnn's "
                        "Grain workers and PyTorch's DataLoader (ImageFolder) per worker count")
    p.add_argument("--input-data", default=input_data_default(), metavar="PATH",
                   help="--input: a class-per-folder directory or .tar(.gz) (its train/ is "
                        "read; default: the CIFAR-10 JPEG copy, $JAXCNN_CIFAR10_JPEG)")
    p.add_argument("--input-workers", default=",".join(map(str, INPUT_WORKERS)),
                   help="--input: comma list of worker counts (default 0,1,2)")
    p.add_argument("--input-images", type=int, metavar="N",
                   help=f"--input: images per repeat (default {INPUT_IMAGES}, quick "
                        f"{QUICK_INPUT_IMAGES})")
    p.add_argument("--input-batch", type=int, default=INPUT_BATCH, metavar="B")
    p.add_argument("--input-cache", metavar="DIR",
                   help="--input: where an archive is extracted (default: jaxcnn's cache dir)")
    p.add_argument("--input-size", type=int, metavar="S",
                   help="--input: crop size (default: the first image's shorter side)")
    args = p.parse_args(argv)
    for name in ("input_images", "input_batch", "input_size"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    try:
        args.input_workers = [int(w) for w in args.input_workers.split(",")]
    except ValueError:
        p.error(f"--input-workers must be a comma list of integers, got {args.input_workers!r}")
    if any(w < 0 for w in args.input_workers):
        p.error(f"--input-workers must be >= 0, got {args.input_workers}")
    if args.input and not args.input_data:
        p.error("--input needs --input-data: the CIFAR-10 JPEG copy was not found")
    for name in ("steps", "repeats", "torch_threads", "airbench_epochs", "airbench_seeds"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.warmup is not None and args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    names = [r.name for r in ROWS]
    args.rows = [r.strip() for r in args.rows.split(",")] if args.rows else names
    unknown = [r for r in args.rows if r not in names]
    if unknown:
        p.error(f"unknown row(s) {', '.join(unknown)}: choose among {', '.join(names)}")
    return args


def torch_threads_or_none(args) -> int | None:
    if args.no_torch:
        return None
    try:
        import torch
    except ImportError as e:
        print(f"PyTorch peer skipped: `import torch` failed ({e}); pip install -e '.[bench]'",
              file=sys.stderr)
        return None
    torch.set_num_threads(args.torch_threads)
    return args.torch_threads


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.input:
        return main_input(args)
    if args.cpu_devices:
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)  # before any device query
    repeats = args.repeats or (QUICK_REPEATS if args.quick else REPEATS)
    warmup = args.warmup if args.warmup is not None else (QUICK_WARMUP if args.quick
                                                          else WARMUP)
    # Explicit step counts are taken as given; the default ones are lengthened where fast.
    min_repeat_s = 0.0 if (args.quick or args.steps) else MIN_REPEAT_S
    threads = torch_threads_or_none(args)
    info = machine_info(threads)
    data = load("synthetic")
    rows = [r for r in ROWS if r.name in args.rows]
    measured = []
    for row in rows:
        print(f"preparing {row.name} ...", file=sys.stderr)
        if row.kind == "train":
            runners = [jax_train(data, row.model, row.batch_size),
                       jax_train(data, row.model, row.batch_size, steps_per_call=1)]
            if threads is not None:
                runners.append(torch_train(data, row.model, row.batch_size))
        else:
            runners = [jax_infer(data, row.model, row.batch_size)]
            if threads is not None:
                runners.append(torch_infer(data, row.model, row.batch_size))
        steps = args.steps or (row.quick_steps if args.quick else row.steps)
        measured.append([prepare(r, steps, warmup, min_repeat_s, row.kind == "latency")
                         for r in runners])
    print(f"timing {repeats} interleaved repeats ...", file=sys.stderr)
    measure(measured, repeats, log=lambda s: print(s, file=sys.stderr))
    info["load_avg_1m_end"] = os.getloadavg()[0]
    results = []
    for row, sides in zip(rows, measured, strict=True):
        by_side = {s.runner.side: s.summary() for s in sides}
        results.append({"name": row.name, "kind": row.kind, "model": row.model,
                        "batch_size": row.batch_size, "engine": by_side["engine"],
                        "one_per_step": by_side.get("1/call"),
                        "pytorch": by_side.get("PyTorch")})
    print(markdown(info, results))
    out = {"machine": info, "rows": results, "sweep": [], "scaling": [], "airbench": []}
    if args.sweep:
        out["sweep"] = measure_sweep(data, rows, args, repeats, warmup, min_repeat_s)
        print(sweep_markdown(out["sweep"]))
    if args.scaling:
        out["scaling"] = measure_scaling(data, args, repeats, warmup, min_repeat_s)
        print(scaling_markdown(out["scaling"], info))
    if args.airbench:
        out["airbench"] = measure_airbench(args.airbench, args.airbench_epochs,
                                           args.airbench_seeds)
        print(airbench_markdown(out["airbench"]))
    if args.json:
        write_json(args.json, out)
    return 0


def write_json(path: str, out: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")


def main_input(args) -> int:
    """--input: the input benchmark alone; its table on stdout, its JSON with --json."""
    out = measure_input(args)
    print(markdown(out["machine"], out["rows"]))
    if args.json:
        write_json(args.json, out)
    return 0


def measure_sweep(data, rows, args, repeats, warmup, min_repeat_s) -> list[dict]:
    """The engine's ms per optimizer step at 1..32 steps per compiled call, per train row."""
    out = []
    for row in (r for r in rows if r.kind == "train"):
        print(f"preparing the steps-per-call sweep of {row.name} ...", file=sys.stderr)
        steps = args.steps or (row.quick_steps if args.quick else 2 * row.steps)
        sides = [prepare(jax_train(data, row.model, row.batch_size, steps_per_call=k),
                         max(steps, k), warmup, min_repeat_s, False) for k in SWEEP]
        measure([sides], repeats, log=lambda s: print(s, file=sys.stderr))
        out.append({"model": row.model, "batch_size": row.batch_size,
                    "sides": {str(k): s.summary() for k, s in zip(SWEEP, sides, strict=True)}})
    return out


# ---------------------------------------------------------------- scaling over devices

SCALING_BATCH = 512  # global batch, split over the devices


def measure_scaling(data: Dataset, args, repeats: int, warmup: int,
                    min_repeat_s: float) -> list[dict]:
    """Seed CNN training img/s on meshes of 1, 2, 4, 8 devices (as many as there are)."""
    devices = jax.devices()
    counts = [n for n in (1, 2, 4, 8) if n <= len(devices)]
    steps = args.steps or (2 if args.quick else 12)
    sides = []
    for n in counts:
        print(f"preparing scaling over {n} device(s) ...", file=sys.stderr)
        runner = jax_train(data, "cnn", SCALING_BATCH, devices=str(n))
        sides.append([prepare(runner, steps, warmup, min_repeat_s, False)])
    measure(sides, repeats, log=lambda s: print(s, file=sys.stderr))
    out = [dict(devices=n, **side[0].summary()) for n, side in zip(counts, sides, strict=True)]
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
                     f"{r['compile_s']:.2f} |")
    if info["jax_backend"] == "cpu":
        lines += ["", "Forced CPU devices (`--cpu-devices N`) share the same cores: this table "
                  "shows the overhead of splitting a batch over a mesh, not a speedup."]
    return "\n".join(lines)


# ---------------------------------------------------------------- airbench: time to accuracy

def measure_airbench(data: str, epochs: int | None, seeds: int) -> list[dict]:
    """The airbench recipe through `train_and_evaluate`, once per seed: its final (TTA) test
    accuracy and its time as airbench counts it (init + training + final evaluation, with
    compilation excluded and reported apart)."""
    import importlib
    module = importlib.import_module("configs.cifar10_airbench")
    dataset = load(data, **load_options(module.get_config().data))
    out = []
    for seed in range(seeds):
        config = module.get_config()
        config.data.name, config.seed = data, seed
        if epochs:
            config.train.epochs = epochs
        print(f"airbench seed {seed} ...", file=sys.stderr)
        final = train.train_and_evaluate(config, dataset=dataset, progress=False,
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


# ---------------------------------------------------------------- input: decode + augment

INPUT_WORKERS, INPUT_BATCH = (0, 1, 2), 128
INPUT_IMAGES, QUICK_INPUT_IMAGES = 5120, 512  # per repeat, the first batch of each not timed
CIFAR10_JPEG = "shared/data/cifar10-jpeg.tar.gz"  # the default --input-data, as tests find it


def input_data_default() -> str | None:
    """$JAXCNN_CIFAR10_JPEG, else shared/data/cifar10-jpeg.tar.gz in or beside the checkout."""
    env = os.environ.get("JAXCNN_CIFAR10_JPEG")
    if env:
        return env
    for base in (REPO, os.path.dirname(REPO)):
        if os.path.isfile(os.path.join(base, CIFAR10_JPEG)):
            return os.path.join(base, CIFAR10_JPEG)
    return None


def input_records(path: str, cache: str | None):
    """The training records of the class-per-folder directory or archive at `path`, as a
    streamed run opens them (`stream.open_stream`: an archive is extracted once into the cache),
    and the train/ folder they sit in, for ImageFolder."""
    import pathlib

    from jaxcnn.data import stream
    records = stream.open_stream(f"folder:{path}", cache_dir=cache).train
    first = pathlib.Path(records.paths[0])
    return records, str(next(p for p in first.parents if p.name == "train"))


def import_torchvision():
    """torchvision; if its compiled ops do not load (PyPI's wheel is built against a CUDA
    PyTorch, and `import torchvision` fails on a CPU-only one), its package without the
    `__init__` that registers them: datasets and transforms are pure Python and do not need them.
    Returns (module, how it was loaded)."""
    import importlib.util
    import types
    try:
        import torchvision
        return torchvision, getattr(torchvision, "loaded_as", "full")
    except (ImportError, RuntimeError, OSError) as e:
        why = f"without its compiled ops ({type(e).__name__}: {str(e)[:80]})"
    for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
        del sys.modules[name]
    spec = importlib.util.find_spec("torchvision")
    pkg = types.ModuleType("torchvision")
    pkg.__path__, pkg.__spec__ = list(spec.submodule_search_locations), spec
    pkg.__version__ = importlib.metadata.version("torchvision")
    pkg.get_image_backend = lambda: "PIL"  # what its __init__ would answer: ImageFolder's loader
    pkg.loaded_as = why
    sys.modules["torchvision"] = pkg
    import torchvision.datasets  # noqa: F401
    import torchvision.transforms  # noqa: F401
    return pkg, why


def grain_loader(records, order, size: int, batch_size: int, workers: int):
    """jaxcnn's streamed input, as training runs it: `stream.Loader` (Grain, `workers` worker
    processes; 0: this process) with `transforms.train_transform` (random-resized crop + flip)."""
    from jaxcnn.data import stream, transforms
    config = default_config()
    config.data.random_resized_crop, config.data.flip = (0.08, 1.0), True
    shape = (size, size, 3)
    loader = stream.Loader(records, shape, workers=workers,
                           transform=transforms.train_transform(config, shape))
    return loader.epoch(order, batch_size)


def torch_loader(train_dir: str, indices, size: int, batch_size: int, workers: int, seed: int):
    """PyTorch's: DataLoader over torchvision's ImageFolder (PIL decode, RGB), RandomResizedCrop
    + RandomHorizontalFlip + PILToTensor (uint8, no float conversion, as the Grain side)."""
    import torch
    torchvision, _ = import_torchvision()
    T = torchvision.transforms
    folder = torchvision.datasets.ImageFolder(train_dir, transform=T.Compose(
        [T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.PILToTensor()]))
    return torch.utils.data.DataLoader(torch.utils.data.Subset(folder, indices),
                                       batch_size=batch_size, shuffle=True, drop_last=True,
                                       num_workers=workers,
                                       generator=torch.Generator().manual_seed(seed))


def _batch_size(batch) -> int:
    return len(batch["image"] if isinstance(batch, dict) else batch[0])


def time_loader(make_iter: Callable, skip: int) -> tuple[float, float, int]:
    """(seconds to the `skip`-th batch, seconds for the rest, images in the rest) of one pass:
    the timer starts once every worker has delivered its first batch."""
    gc.collect()
    t0 = time.perf_counter()
    it = iter(make_iter())
    for _ in range(skip):
        next(it)
    t1 = time.perf_counter()
    n = sum(_batch_size(batch) for batch in it)
    t2 = time.perf_counter()
    if hasattr(it, "close"):
        it.close()  # grain: stop its worker processes now, not at garbage collection
    return t1 - t0, t2 - t1, n


def input_info() -> dict:
    """Machine and versions, without starting a JAX backend (PyTorch's workers fork)."""
    return host_info(("numpy", "pillow", "grain", "jax", "torch", "torchvision"))


def measure_input(args) -> dict:
    """Decode + augment img/s of jaxcnn's Grain input and PyTorch's DataLoader at each worker
    count, the repeats of all sides interleaved (the side that goes first rotates)."""
    info = input_info()
    records, train_dir = input_records(args.input_data, args.input_cache)
    repeats = args.repeats or (QUICK_REPEATS if args.quick else REPEATS)
    b = args.input_batch
    n = min(len(records), args.input_images or (QUICK_INPUT_IMAGES if args.quick
                                                else INPUT_IMAGES))
    n -= n % b  # whole batches only, on both sides
    least = (max(args.input_workers) + 2) * b
    if n < least:
        raise SystemExit(f"--input-images {n} (or the folder's {len(records)} images) must be at "
                         f"least {least}: a first batch per worker, then two timed batches of "
                         f"--input-batch {b}")
    # the same images on both sides: records are ordered as ImageFolder's samples (class, path)
    indices = np.random.default_rng(0).permutation(len(records))[:n]
    from PIL import Image
    with Image.open(records.paths[0]) as im:
        size = args.input_size or min(im.size)
    sides = {}
    for w in args.input_workers:
        sides[("jaxcnn", w)] = lambda w=w: grain_loader(records, indices, size, b, w)
        if not args.no_torch:
            sides[("PyTorch", w)] = lambda w=w: torch_loader(train_dir, indices.tolist(), size,
                                                             b, w, 0)
    if not args.no_torch:
        import torch
        _, how = import_torchvision()
        info["torchvision_import"] = how
        info["torch_threads"] = torch.get_num_threads()
    info.update(images=n, batch_size=b, image_size=size, data=os.path.basename(args.input_data),
                transform="random-resized crop (0.08-1.0 of the area, 3/4-4/3) + flip, uint8")
    samples = {k: [] for k in sides}
    keys = list(sides)
    print(f"timing {len(keys)} loaders x {repeats} repeats over {n} images ...", file=sys.stderr)
    for r in range(repeats):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            samples[k].append(time_loader(sides[k], skip=max(1, k[1])))
        print(f"  repeat {r + 1}/{repeats} done", file=sys.stderr)
    info["load_avg_1m_end"] = os.getloadavg()[0]
    rows = []
    for w in args.input_workers:
        row = {"name": f"input w{w}", "kind": "input", "workers": w, "batch_size": b}
        for side in ("jaxcnn", "PyTorch"):
            got = samples.get((side, w))
            if got is None:
                row[side.lower()] = None
                continue
            ips = [m / s for _, s, m in got]
            row[side.lower()] = {"images_per_s": statistics.median(ips), "min": min(ips),
                                 "max": max(ips), "samples": ips,
                                 "seconds": [s for _, s, _ in got],
                                 "images_timed": got[0][2],
                                 "first_batches_s": [f for f, _, _ in got]}
        rows.append(row)
    return {"machine": info, "rows": rows, "sweep": [], "input": True}


def input_markdown(info: dict, rows: list[dict]) -> str:
    v = info["versions"]
    lines = [
        "# jaxcnn input benchmark: decode + augment, Grain workers vs PyTorch's DataLoader", "",
        f"- machine: {info['cpu']}, {info['cores']} cores; 1-min load average "
        f"{info['load_avg_1m_start']:.2f} at start, {info['load_avg_1m_end']:.2f} at end",
        "- versions: " + ", ".join(f"{k} {x}" for k, x in v.items() if x)]
    if "torchvision_import" in info:
        lines.append(f"- torchvision loaded {info['torchvision_import']}")
    lines += [f"- data: {info['data']}, {info['images']} images per repeat, "
              f"batch {info['batch_size']}, {info['image_size']}x{info['image_size']} out; "
              f"{info['transform']}",
              f"- date: {info['date']}", f"- command: `{info['command']}`", "",
              "img/s median [min–max] over the repeats, from the moment every worker has "
              "delivered its first batch to the last batch; the time to that moment (the "
              "workers' start) is given apart, median seconds.", "",
              "| workers | jaxcnn (Grain) | PyTorch DataLoader | jaxcnn / PyTorch "
              "| start s, jaxcnn | start s, PyTorch |",
              "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        j, t = r["jaxcnn"], r["pytorch"]
        first = [f"{statistics.median(s['first_batches_s']):.2f}" if s else "—"
                 for s in (j, t)]
        lines.append(f"| {r['workers']} | {_cell(j)} | {_cell(t)} | {_ratio(j, t)} "
                     f"| {first[0]} | {first[1]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
