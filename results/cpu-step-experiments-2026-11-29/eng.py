import sys, time, statistics, importlib
import jax
from jaxcnn import train, parallel
from jaxcnn.config import default_config
from jaxcnn.data import load
from jaxcnn.steps import initial_train_sums
name, B = sys.argv[1], int(sys.argv[2]); reps = int(sys.argv[3]) if len(sys.argv) > 3 else 3
k_set = int(sys.argv[4]) if len(sys.argv) > 4 else 0
cfgs = {"cnn": None, "resnet20": "cifar10_resnet20", "resnet18": "cifar10_resnet20", "airbench": "cifar10_airbench"}
c = importlib.import_module(f"configs.{cfgs[name]}").get_config() if cfgs[name] else default_config()
c.model.name = name; c.train.batch_size = B; c.train.steps_per_call = k_set
job, state = train.build(c, dataset=load("synthetic"), devices="1")
sums = jax.device_put(initial_train_sums(), parallel.replicated(job.mesh))
k = job.feed.per_call
state, sums = job.advance(state, sums, 0, 0, k); jax.block_until_ready(sums)
ts = []
for r in range(reps):
    t = time.perf_counter(); state, sums = job.advance(state, sums, 0, k * (r + 1), k); jax.block_until_ready(sums)
    ts.append((time.perf_counter() - t) / k * 1e3)
print(f"{name} b{B} k{k}: {statistics.median(ts):.1f} ms/step [{min(ts):.1f}-{max(ts):.1f}]  loss {float(sums['loss']):.3f}")
