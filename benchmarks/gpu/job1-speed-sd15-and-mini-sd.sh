set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.gpu/src PYTHONUNBUFFERED=1
nvidia-smi -L; nproc
python3 -c "import torch,transformers,diffusers,accelerate;print(torch.__version__,transformers.__version__,diffusers.__version__,accelerate.__version__)"
timeout 170 python3 .gpu/src/benchmarks/speed.py --real sd15 --configs .gpu/configs --size 512 --batch 1 16 --nfe 8 --repeats 3 --out /tmp/speed --tag speed-sd15-gpu 2>&1 | grep -v Warning | tail -12
cat /tmp/speed/speed-sd15-gpu.md
python3 -m lsb train mini-sd --stage unet --out /tmp/run --unet-init .gpu/src/lsb/assets/mini-sd --unet-steps 8000 --unet-batch 256 --cached-scenes 50000 --unet-lr 3e-4 --unet-max-minutes 5.3 2>&1 | tr '\r' '\n' | grep -v "it/s" | tail -15
tail -3 /tmp/run/unet/train_log.jsonl
python3 -m lsb train mini-sd --stage export --out /tmp/run 2>&1 | tail -1
mkdir -p $OUT/unet $OUT/text_encoder
cp /tmp/run/pipeline/unet/* $OUT/unet/; cp /tmp/run/pipeline/text_encoder/* $OUT/text_encoder/
cp $(ls /tmp/run/unet/samples/*.png | tail -1) $OUT/ 2>/dev/null
ls -la $OUT $OUT/unet
