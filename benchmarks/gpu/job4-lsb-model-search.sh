# Issue 3's open lever, for the next session with a lent GPU: train several continuations of the mini-SD
# UNet at once (MPS shares the GPU) and score each with LSB's own failure diagnostic, so that the model
# is chosen by what LSB needs (val success), not by its training loss.
#
#   run: bash benchmarks/gpu/job4-lsb-model-search.sh      (within the device tool's 10-minute limit)
#   back: $OUT/lsb-failures-<name>.md for each variant and the shipped model (reference), and $OUT/job4.tgz
#         with their .json and the best variant's unet/ and text_encoder/ (to install: copy them over
#         lsb/assets/mini-sd, then rerun translation.py, translation_study.py, learn_domains.py and mini_sd.py
#         as the README lists). Six files: within the device tool's limit of eight.
#
# MIN: training minutes cap per variant (default 6); N: val scenes per direction (default 120). Variants differ
# in timestep focus and learning rate. CPU dry run: MIN=0.05 STEPS=3 SCENES=256 BATCH=8 N=2 bash <this file>
set -u
. benchmarks/gpu/device-env.sh || exit 1
OUT=${OUT:-/tmp/job4-out}; mkdir -p "$OUT"
R=/tmp/job4; mkdir -p $R
BASE=lsb/assets/mini-sd
MIN=${MIN:-6}
STEPS=${STEPS:-2000}       # the cosine schedule's length (decays to 0 within ~5 min on an H100 under MPS); MIN caps it
SCENES=${SCENES:-50000}

variant() {  # name, extra training arguments
  local name=$1; shift
  python3 -m lsb train mini-sd --stage unet --out /tmp/$name --unet-init $BASE --unet-batch ${BATCH:-256} \
      --cached-scenes $SCENES --unet-steps $STEPS --unet-max-minutes $MIN "$@" > /tmp/$name.log 2>&1 &&
  python3 -m lsb train mini-sd --stage export --out /tmp/$name >> /tmp/$name.log 2>&1 &&
  CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=2 python3 -m benchmarks.lsb_failures --n ${N:-120} --model /tmp/$name/pipeline \
      --tag $name --out $R >> /tmp/$name.log 2>&1
  echo "$name rc=$? $(grep -o '^Success [0-9.]*' $R/lsb-failures-$name.md 2>/dev/null)"
}

CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=2 python3 -m benchmarks.lsb_failures --n ${N:-120} --tag shipped --out $R > /tmp/shipped.log 2>&1 &
variant plain-lr1e-4 --unet-lr 1e-4 &
variant focus300-lr1e-4 --unet-lr 1e-4 --unet-focus-fraction 0.7 --unet-focus-max-timestep 300 &
variant plain-lr3e-5 --unet-lr 3e-5 &
variant focus500-lr1e-4 --unet-lr 1e-4 --unet-focus-fraction 0.5 --unet-focus-max-timestep 500 &
wait
grep -H "^Success" $R/lsb-failures-*.md
cp $R/lsb-failures-*.md "$OUT/"
best=$(grep -H "^Success" $R/lsb-failures-*.md | grep -v shipped | sort -t' ' -k2 -nr | head -1 | sed 's/.*lsb-failures-\(.*\)\.md.*/\1/')
if [ -n "$best" ] && [ -d /tmp/$best/pipeline ]; then
  echo "best: $best"; mkdir -p $R/best-$best
  cp -r /tmp/$best/pipeline/unet /tmp/$best/pipeline/text_encoder $R/best-$best/
fi
tar czf "$OUT/job4.tgz" -C $R $(cd $R && ls -d *.json best-* 2>/dev/null)
for f in /tmp/*/unet/train_log.jsonl; do echo "$f $(tail -n 1 $f)"; done
tail -n 3 /tmp/shipped.log /tmp/plain-*.log /tmp/focus*.log | grep -v "it/s" | tail -40
