# Sourced by the job scripts (`. benchmarks/gpu/device-env.sh || exit 1`) on the lent GPU machine: diffusers from
# the carried wheels in .whl/, this checkout importable as `lsb` and `lsb_pipelines` (what `pip install -e .` maps),
# unbuffered output, offline hub, and CUDA MPS so that concurrent processes share the GPU (switched off again if a
# CUDA context cannot be made under it). Without .whl/ (a CPU dry run in the project's venv) only the rest applies.
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
  mkdir -p /tmp/pp && ln -sfn "$PWD/pipelines" /tmp/pp/lsb_pipelines
  export PYTHONPATH=/tmp/site:$PWD:/tmp/pp
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d 2>/dev/null; then
  timeout 60 python3 -c "import torch; torch.zeros(1).cuda(); print('MPS on')" || { echo quit | nvidia-cuda-mps-control; echo "MPS off"; }
fi
