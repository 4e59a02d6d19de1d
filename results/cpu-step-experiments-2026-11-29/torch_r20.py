import sys, time, statistics, torch
sys.path.insert(0, "/work/main/scripts")
import torch_peers, numpy as np
name, B = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
make_net, make_opt, ls = torch_peers.RECIPES[name]
net = make_net().train(); opt = make_opt([p for p in net.parameters() if p.requires_grad]); crit = torch.nn.CrossEntropyLoss(label_smoothing=ls)
x = torch.randn(B, 3, 32, 32); y = torch.randint(0, 10, (B,))
def step():
    opt.zero_grad(); l = crit(net(x), y); l.backward(); opt.step()
for _ in range(3): step()
ts = []
for _ in range(3):
    t = time.perf_counter()
    for _ in range(8): step()
    ts.append((time.perf_counter() - t) / 8 * 1e3)
print(f"torch {name} b{B}: {statistics.median(ts):.1f} ms/step -> {B/statistics.median(ts)*1e3:.0f} img/s")
