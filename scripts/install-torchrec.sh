#!/usr/bin/env bash
# Install the optional TorchRec extra (model-parallel embeddings) into the active environment.
#   . .venv/bin/activate && scripts/install-torchrec.sh
# TorchRec is installed WITHOUT its dependency resolution (--no-deps): its declared dependencies would
# replace the CPU torch by a CUDA build. The few packages it needs at import time are installed beside it,
# every version (torch included) held at CI's by constraints.txt. (torchmetrics and iopath, which TorchRec
# also declares, are only used by torchrec.metrics / torchrec.datasets, which pepnet does not import.)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python -m pip install -q -c "$here/../constraints.txt" "fbgemm-gpu-cpu==1.8.0" "tensordict==0.15.3" "pyre-extensions==0.0.32"
python -m pip install -q --no-deps -c "$here/../constraints.txt" "torchrec==1.8.0"
python - <<'PY'
import torch, torchrec
print(f"torchrec {torchrec.__version__ if hasattr(torchrec, '__version__') else '?'} imports with torch {torch.__version__}")
PY
