"""ms/step: plain jit step vs fori_loop of k steps (traced n), per model."""
import sys, time, functools, statistics
import jax, jax.numpy as jnp, numpy as np, optax
from flax import nnx
from jaxcnn import models
from jaxcnn.train import create_state, train_step, StepFns
from jaxcnn.data.pipeline import Batch

name, B, k, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
model = models.create(name, num_classes=10, rngs=nnx.Rngs(0))
tx = optax.sgd(0.01, momentum=0.9)
graphdef, state = create_state(model, tx)
fns = StepFns(graphdef, tx, (0.5,)*3, (0.5,)*3, 0, False, 0.0, jnp.float32)
rng = np.random.default_rng(0)
batch = Batch(jnp.asarray(rng.integers(0,256,(B,32,32,3)), jnp.uint8), jnp.asarray(rng.integers(0,10,B), jnp.int32))
key = jax.random.key(0)
plain = jax.jit(lambda s, b: train_step(s, b, key, fns)[0], donate_argnums=0)
loop = jax.jit(lambda s, b: jax.lax.fori_loop(0, k, lambda i, s: train_step(s, b, key, fns)[0], s), donate_argnums=0)
s = jax.tree.map(jnp.copy, state)
s = plain(s, batch); s = loop(s, batch); jax.block_until_ready(s)
res = {"plain": [], "loop": []}
for r in range(reps):
    t = time.perf_counter()
    for _ in range(k): s = plain(s, batch)
    jax.block_until_ready(s); res["plain"].append((time.perf_counter()-t)/k*1e3)
    t = time.perf_counter()
    s = loop(s, batch); jax.block_until_ready(s); res["loop"].append((time.perf_counter()-t)/k*1e3)
print(name, B, k, {m: f"{statistics.median(v):.1f} [{min(v):.1f}-{max(v):.1f}]" for m, v in res.items()})
