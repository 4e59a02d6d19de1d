"""A model at a glance: parameters per layer and forward FLOPs per image, as one compact table.

    from jaxcnn import summary
    print(summary.table(model, (32, 32, 3)))  # or: python3 scripts/summary.py cnn

FLOPs are counted analytically, 2 x multiply-adds of every convolution and matrix product, from
the shapes in the model's traced forward pass (its jaxpr) at batch 1: the figure papers quote,
the same on every device. Like the papers' counts (torchvision's 4.09 G multiply-adds for
ResNet-50, Li et al.'s 1.25e8 for ResNet-56), it leaves out the elementwise and data-movement
work: BatchNorm, activations, residual additions, max and average pooling (strided slices and
additions in jaxcnn's models), concatenation (DenseNet) and padding; tests/test_zoo.py checks
the zoo against the published figures.

Not XLA's `jax.jit(f).lower(x).compile().cost_analysis()`: it works on CPU (jax 0.10.2), but
its count depends on the backend and on the kernels XLA picks (on CPU jaxcnn runs some 3x3
convolutions as matmuls) and takes in elementwise ops; for the seed CNN it reports 18,946,058
on CPU against the analytic 19,615,744.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcnn import models
from jaxcnn.errors import UserError


class Layer(NamedTuple):
    path: str  # module path, e.g. `blocks.0.conv1`
    shapes: dict[str, tuple[int, ...]]  # parameter name -> shape, e.g. {"kernel": (3, 3, 3, 32)}
    count: int  # parameters in this layer


class Summary(NamedTuple):
    layers: list[Layer]  # modules holding nnx.Param leaves, in the order the forward uses them
    params: int  # their total: models.count_params(model)
    flops: int  # forward FLOPs for one image (2 x multiply-adds), inference mode


def summarize(model: nnx.Module, image_shape_HxWxC: tuple[int, int, int]) -> Summary:
    """Trace the forward pass at batch 1 (not run: an `nnx.eval_shape` model is enough)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.ShapeDtypeStruct((1, *image_shape_HxWxC), jnp.float32)
    closed = jax.make_jaxpr(lambda p, r, x: nnx.merge(graphdef, p, r)(x, train=False))(
        params, rest, x)
    # The jaxpr's first inputs are the parameter leaves, in the order of `to_flat_state`; the
    # first equation reading one tells where its layer runs (flax itself sorts by name).
    flat = list(nnx.to_flat_state(params))
    inputs = closed.jaxpr.invars[:len(flat)]
    assert [v.aval.shape for v in inputs] == [tuple(var.shape) for _, var in flat]
    leaf = {id(v): k for k, v in enumerate(inputs)}
    first = [math.inf] * len(flat)
    for i, eqn in enumerate(closed.jaxpr.eqns):
        for v in eqn.invars:
            k = leaf.get(id(v))
            if k is not None and first[k] == math.inf:
                first[k] = i
    rows: dict[str, dict] = {}
    order: dict[str, float] = {}
    for (path, var), when in zip(flat, first, strict=True):
        *module, name = (str(k) for k in path)
        key = ".".join(module) or "(model)"
        rows.setdefault(key, {})[name] = tuple(var.shape)
        order[key] = min(order.get(key, math.inf), when)
    layers = [Layer(p, s, sum(math.prod(v) for v in s.values()))
              for p, s in sorted(rows.items(), key=lambda kv: order[kv[0]])]
    return Summary(layers, sum(r.count for r in layers), _flops(closed.jaxpr))


def _flops(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            # each output element: a dot over the kernel's input features x its window
            rhs = eqn.invars[1].aval.shape
            rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial)
            per_output = math.prod(rhs[d] for d in rhs_spec[1:])
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * per_output
        elif name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
        if name == "cond":  # per-platform code (layers.py): alternatives of the same work
            total += max(_flops(b.jaxpr) for b in eqn.params["branches"])
            continue
        # nested computations: jit, custom_vjp/custom_jvp (the CPU conv path), scan bodies
        times = eqn.params.get("length", 1) if name == "scan" else 1
        for sub in eqn.params.values():
            sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
            if hasattr(sub, "eqns"):
                total += times * _flops(sub)
    return total


def table(model: nnx.Module, image_shape_HxWxC: tuple[int, int, int]) -> str:
    """Layers with their parameter shapes and counts, the total, and FLOPs per image."""
    s = summarize(model, image_shape_HxWxC)
    width = max([len(r.path) for r in s.layers] + [5])
    lines = [f"{'layer':<{width}}  {'params':>11}  shapes"]
    for r in s.layers:
        shapes = ", ".join(f"{n} {'x'.join(map(str, v))}" for n, v in r.shapes.items())
        lines.append(f"{r.path:<{width}}  {r.count:>11,}  {shapes}")
    lines.append(f"{'total':<{width}}  {s.params:>11,}  {s.flops / 1e6:,.1f} MFLOPs per "
                 f"{'x'.join(map(str, image_shape_HxWxC))} image (forward, 2 x multiply-adds)")
    return "\n".join(lines)


def abstract_model(name: str, num_classes: int, image_shape_HxWxC: tuple[int, int, int]
                   ) -> nnx.Module:
    """Model `name` with shapes but no values (nothing initialised), sized for the images."""
    def build():
        rngs = nnx.Rngs(0)
        # The streams' counters as host integers: traced, every `rngs.params()` would update
        # a traced counter, and flax's check of that update costs time in proportion to all
        # that was traced before it (jax 0.10.2, flax 0.12.8): quadratic in the layers, 3.9 s
        # instead of 0.6 s for DenseNet-BC-100. Only the keys' values change, which no
        # abstract model has.
        for _, v in nnx.iter_graph(rngs):
            if isinstance(v, nnx.RngCount):
                v.set_value(np.zeros(v.shape, np.uint32))
        return models.create(name, num_classes=num_classes, rngs=rngs,
                             image_shape=image_shape_HxWxC)

    return nnx.eval_shape(build)


def parse_image_shape(text: str) -> tuple[int, int, int]:
    """`32x32x3` -> (32, 32, 3)."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--image {text!r} is not HxWxC: give three positive integers, e.g. "
                        "32x32x3")
    return tuple(int(p) for p in parts)
