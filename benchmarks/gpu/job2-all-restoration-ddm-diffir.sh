# One GPU slot: train every restoration / DDM / DiffIR model concurrently, then run their benchmarks on the
# GPU and bring back the result tables (models stay there: too big to return, reproducible by these commands).
set -u
T0=$(date +%s); left() { echo $(( ${BUDGET:-575} - ($(date +%s) - T0) )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
SRC=${SRC:-$PWD}
mkdir -p /tmp/pp && ln -sfn $SRC/pipelines /tmp/pp/lsb_pipelines
export PYTHONPATH=/tmp/site:$SRC:/tmp/pp PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
cd $SRC
if [ -n "${MPS:-}" ] && nvidia-cuda-mps-control -d 2>/dev/null; then
  timeout 60 python3 -c "import torch; torch.zeros(1).cuda(); print('MPS on')" || { echo quit | nvidia-cuda-mps-control; echo "MPS off"; }
fi
R=${R:-/tmp/r}; RES=${RES:-/tmp/res}; L=${L:-/tmp/logs}; mkdir -p $R $RES $L
CAP=${CAP:-200}; STEPS=${STEPS:-4000}; B=${B:-256}; N=${N:-300}
nvidia-smi -L 2>/dev/null; python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())"
for t in inpaint sr4; do for b in i2sb ddbm-vp palette; do
  python3 -m lsb.training.bridge --task $t --bridge $b --out $R/bridge-$t-$b --steps $STEPS --batch-size $B \
    --max-seconds $CAP --checkpoint-every 100000 --no-progress ${PAIRS:+--pairs $PAIRS} > $L/bridge-$t-$b.log 2>&1 &
done; done
for k in "ddm t2i" "ddpm t2i" "ddm sr4"; do set -- $k
  python3 -m lsb.training.ddm --kind $1 --task $2 --out $R/$1-$2 --steps $STEPS --batch-size $B --max-seconds $CAP \
    --checkpoint-every 100000 --no-progress ${DDM_EXTRA:-} > $L/$1-$2.log 2>&1 &
done
for t in inpaint sr4; do
  python3 -m lsb.training.diffir --task $t --stage diffir --out $R/diffir-$t --steps $STEPS --batch-size 128 \
    --max-seconds $((CAP / 2)) --checkpoint-every 100000 --workers 2 --no-progress ${DIFFIR_EXTRA:-} > $L/diffir-$t.log 2>&1 &
  python3 -m lsb.training.diffir --task $t --stage plain --out $R/diffir-$t --steps $STEPS --batch-size 128 \
    --max-seconds $CAP --checkpoint-every 100000 --workers 2 --no-progress ${DIFFIR_EXTRA:-} > $L/plain-$t.log 2>&1 &
done
if [ -n "${MINISD:-}" ]; then
  (python3 -m lsb train mini-sd --stage unet --out $R/minisd --unet-init $MINISD --unet-steps ${MS_STEPS:-2500} --unet-batch $B \
     --cached-scenes ${MS_SCENES:-50000} --unet-lr 1.5e-4 --unet-max-minutes $(( CAP / 60 + 1 )) 2>&1 | tr '\r' '\n' | grep -v "it/s" > $L/minisd.log
   python3 -m lsb train mini-sd --stage export --out $R/minisd >> $L/minisd.log 2>&1) &
fi
wait
echo "training done at $(( $(date +%s) - T0 )) s"
for f in $R/*/result.json $R/*/*_result.json; do echo "$f: $(tr -d '\n ' < $f | cut -c1-220)"; done
TL=$(( $(left) - 30 )); [ $TL -lt 10 ] && TL=10; echo "benchmarks get $TL s"
for t in inpaint sr4; do
  timeout $TL python3 -m benchmarks.restoration --task $t --i2sb $R/bridge-$t-i2sb/final \
    --ddbm $R/bridge-$t-ddbm-vp/final --palette $R/bridge-$t-palette/final --extra DiffIR=$R/diffir-$t/s2/final \
    --nfes ${NFES:-1 2 5 10 20 50 100} --split test --n $N --batch $N --out $RES > $L/bench-restoration-$t.log 2>&1 &
done
timeout $TL python3 -m benchmarks.ddm --ddm $R/ddm-t2i/final --ddpm $R/ddpm-t2i/final \
  --sr $R/ddm-sr4/final --nfe ${DDM_NFES:-2 5 10 20 50} --n $N --batch $N --out $RES --tag ddm > $L/bench-ddm.log 2>&1 &
timeout $TL python3 -m benchmarks.diffir --diffir $R/diffir-inpaint/s2/final $R/diffir-sr4/s2/final \
  --plain $R/diffir-inpaint/plain/final $R/diffir-sr4/plain/final --bridge $R/bridge-inpaint-i2sb/final $R/bridge-sr4-i2sb/final \
  --palette $R/bridge-inpaint-palette/final $R/bridge-sr4-palette/final --n $N --out $RES --tag diffir > $L/bench-diffir.log 2>&1 &
wait
echo "benchmarks done at $(( $(date +%s) - T0 )) s"
for f in $L/bench-*.log; do echo "== $f"; grep -v "Warn\|Loading\|^{" $f | tail -25; done
O=${OUT:-/tmp/out}; mkdir -p $O
tar czf $O/results.tgz -C $RES .
tar czf $O/logs.tgz -C $R $(cd $R && ls -d */train_log.jsonl */*/train_log.jsonl */result.json */*_result.json 2>/dev/null) -C $L .
(cd $R && tar czf $O/diffir-models.tgz diffir-inpaint/s2/final diffir-sr4/s2/final diffir-inpaint/plain/final diffir-sr4/plain/final 2>/dev/null)
[ -d $R/minisd/pipeline ] && tar czf $O/mini-sd-v3.tgz -C $R/minisd/pipeline unet text_encoder && tail -3 $L/minisd.log
echo "total $(( $(date +%s) - T0 )) s"; ls -la $O
