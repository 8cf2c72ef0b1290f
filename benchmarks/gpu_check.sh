#!/usr/bin/env bash
# The CUDA checks of the foundation and the twins, run on a GPU machine from the repository root:
#   bash benchmarks/gpu_check.sh        (needs torch with CUDA, lightning, torch_geometric and this package's other dependencies)
# Prints the machine, the parameter table, pretraining on the real sample (bf16 autocast), one epoch of a simulated
# 500-stock universe, embedding throughput, and batched twin inference on the GPU.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, lightning, torch_geometric, pandas; print('torch', torch.__version__, 'lightning', lightning.__version__, 'pyg', torch_geometric.__version__, 'pandas', pandas.__version__, 'cuda', torch.cuda.is_available())"
timeout 60 python3 benchmarks/bench_foundation.py params 2>&1 | tee "$OUT/params.log"
timeout ${SAMPLE_S:-240} python3 benchmarks/bench_foundation.py sample --epochs ${EPOCHS:-3} --stride ${STRIDE:-1} --max-steps ${SAMPLE_STEPS:--1} 2>&1 | grep -v "it/s\]" | tee "$OUT/sample.log"
timeout ${SIM_S:-150} python3 benchmarks/bench_foundation.py sim --steps ${SIM_STEPS:-3} 2>&1 | grep -v "it/s\]" | tee "$OUT/sim.log"
timeout ${STEP_S:-120} python3 benchmarks/bench_foundation.py step --steps 5 2>&1 | tee "$OUT/step.log"
timeout ${ONEDATE_S:-120} python3 benchmarks/bench_foundation.py onedate 2>&1 | tee "$OUT/onedate.log"
timeout 60 python3 benchmarks/bench_twins.py --gpu-only 2>&1 | tee "$OUT/twins.log"
