#!/usr/bin/env bash
# The ResNet and airbench training rows of scripts/bench.py on three JAX setups, one after the
# other on the same quiet machine: Python 3.11 + jax 0.10.2 with the PyTorch peer (the committed
# setup), Python 3.12 + jax 0.12.0 without and with XLA's oneDNN convolutions (no PyTorch build
# for the CPU on 3.12 here, so those runs carry no peer: compare them with the first run's).
# Run from the repository root; PY312 is a Python 3.12 environment with `pip install -e .`.
set -euo pipefail
out=results/cpu-jax-versions-2026-11-30
rows="train resnet20 b64,train resnet18 b64,train airbench b128"
python3 scripts/bench.py --rows "$rows" --json $out/jax0.10.2-py3.11.json > $out/jax0.10.2-py3.11.md
"$PY312" scripts/bench.py --no-torch --rows "$rows" --json $out/jax0.12.0-py3.12.json > $out/jax0.12.0-py3.12.md
XLA_FLAGS="--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true" \
  "$PY312" scripts/bench.py --no-torch --rows "$rows" --json $out/jax0.12.0-py3.12-onednn.json \
  > $out/jax0.12.0-py3.12-onednn.md
