"""Per-HLO-op time of the engine's 16-step loop for a model, from a jax.profiler trace."""
import sys, glob, gzip, json, collections, os, time
import jax
from jaxcnn import train, parallel
from jaxcnn.config import default_config
from jaxcnn.data import load
from jaxcnn.steps import initial_train_sums
import importlib
name, B = sys.argv[1], int(sys.argv[2])
cfgs = {"cnn": None, "resnet20": "cifar10_resnet20", "resnet18": "cifar10_resnet20", "airbench": "cifar10_airbench"}
c = importlib.import_module(f"configs.{cfgs[name]}").get_config() if cfgs[name] else default_config()
c.model.name = name; c.train.batch_size = B
job, state = train.build(c, dataset=load("synthetic"), devices="1")
sums = jax.device_put(initial_train_sums(), parallel.replicated(job.mesh))
k = job.feed.per_call
for i in range(2):
    state, sums = job.advance(state, sums, 0, k * i, k)
jax.block_until_ready(sums)
d = f"/tmp/prof_{name}"
os.system(f"rm -rf {d}")
t = time.perf_counter()
with jax.profiler.trace(d, create_perfetto_trace=True):
    state, sums = job.advance(state, sums, 0, 2 * k, k)
    jax.block_until_ready(sums)
wall = time.perf_counter() - t
f = glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)[0]
tr = json.load(gzip.open(f))
ev = [e for e in tr["traceEvents"] if e.get("ph") == "X"]
tot = collections.Counter(); cnt = collections.Counter()
for e in ev:
    n = e["name"]
    tot[n] += e["dur"]; cnt[n] += 1
print(f"wall {wall*1e3/k:.1f} ms/step")
for n, us in tot.most_common(45):
    print(f"{us/1e3/k:8.2f} ms/step  x{cnt[n]//k:3d}  {n[:110]}")
import re
cat = collections.Counter()
for n, us in tot.items():
    if n.startswith("$") or "ThunkExecutor" in n or "block_until" in n: continue
    cat[re.sub(r"[.\d]+$", "", n)] += us
print("---- by kind")
s = sum(cat.values())
for n, us in cat.most_common(25):
    print(f"{us/1e3/k:8.2f} ms/step {100*us/s:5.1f}%  {n}")
txt = job.feed._compiled(k, job.steps).lower(state, sums, *job.feed._args(0, job.keys), 0, 0, job.keys.aug).compile().as_text()
open(f"/tmp/prof_{name}.hlo", "w").write(txt)
