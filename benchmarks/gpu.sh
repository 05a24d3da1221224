#!/usr/bin/env bash
# Everything measured on the lent GPU in one device call: CUDA tests, `pepnet bench` variants on the
# industrial config (plain, then torch.compile), a profile of the bf16 step. Results land in $OUT.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.draw --format=csv | tee $OUT/env.txt
python3 -c "import torch, polars; print(torch.__version__, torch.version.cuda, polars.__version__)" | tee -a $OUT/env.txt
timeout 60 python3 -m pytest tests/test_cuda.py tests/bench/test_sparse_adagrad.py -q -p no:cacheprovider 2>&1 | tail -4 | tee $OUT/pytest.txt
B="python3 -m pepnet bench industrial --device cuda --batch-size 65536 --infer-batch-size 131072 --steps 20 --repeats 5 --warmup 3"
timeout 200 $B --ablations --json $OUT/gpu_industrial.json \
  --variant "fp32: " --variant "bf16: train.amp=bf16" \
  --variant "bf16_ondev: train.amp=bf16 train.data_on_device=true" \
  --variant "bf16_ondev_128k: train.amp=bf16 train.data_on_device=true train.batch_size=131072" \
  2>&1 | grep -v -i warn | tee $OUT/gpu_bench.txt
timeout 250 $B --no-reference --json $OUT/gpu_industrial_compile.json \
  --variant "bf16_ondev_compile: train.amp=bf16 train.data_on_device=true train.compile=true" \
  --variant "bf16_ondev_compile_128k: train.amp=bf16 train.data_on_device=true train.compile=true train.batch_size=131072" \
  2>&1 | grep -v -i warn | tee $OUT/gpu_bench_compile.txt
timeout 70 python3 benchmarks/profile_step.py industrial --device cuda --batch-size 65536 --set train.amp=bf16 \
  2>&1 | grep -v -i warn | head -40 | tee $OUT/gpu_profile.txt
