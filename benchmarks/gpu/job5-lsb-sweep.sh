# Issue 3: one dense, low-noise hyperparameter map of LSB at NFE 8 on the val split (100 scenes per direction,
# vs 30 in the CPU sweeps), for the shipped model with text prompts and learned tokens, and for job 4's best
# UNet continuation (focus500-lr1e-4) with text prompts; Euler and the multistep solver. Twelve processes
# share the GPU (MPS); each writes benchmarks/translation.py's json for its half of the grid.
#
#   carry: .whl (diffusers wheel), .gpu (focus500/ = shipped pipeline with job 4's unet + text_encoder;
#          domains/<shape>/ = the learned tokens of `benchmarks/learn_domains.py --images 200 --steps 600`)
#   run:   bash benchmarks/gpu/job5-lsb-sweep.sh        back: $OUT/job5.tgz (json + md per process), $OUT/job5.log
set -u
. benchmarks/gpu/device-env.sh || exit 1
export OMP_NUM_THREADS=1
RES=/tmp/res5; mkdir -p $RES
GRID="tau=${TAUS:-0.5,1,1.5,2.5} guidance=${WS:-2,3,4,6}"
one() {  # tag, t0, solver, extra args
  local tag=$1 t0=$2 solver=$3; shift 3
  timeout ${CAP:-480} python3 -m benchmarks.translation --split val --n ${N:-100} --nfe 8 --solver $solver --t0 $t0 \
    --sweep $GRID --device ${DEV:-cuda} --out $RES --tag $tag "$@" > $RES/$tag.log 2>&1
  echo "$tag rc=$? $(grep -c '^{' $RES/$tag.log) configs"
}
for t0 in ${T0S:-0.02 0.05}; do for solver in euler multistep; do
  one shipped-text-$solver-t0$t0 $t0 $solver &
  one focus500-text-$solver-t0$t0 $t0 $solver --model .gpu/focus500 &
  one shipped-tokens-$solver-t0$t0 $t0 $solver --domains .gpu/domains &
done; done
wait
grep -h '^{' $RES/*.log | sort -t: -k8 | tail -5
O=${OUT:-/tmp/out5}; mkdir -p $O
tar czf $O/job5.tgz -C $RES .
