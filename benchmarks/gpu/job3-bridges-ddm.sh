# Last GPU slot: bridges (I2SB, DDBM-VP, Palette; inpaint + sr4) and DDM/DDPM t2i, then the claim-relevant benchmark rows
set -u
T0=$(date +%s); left() { echo $(( ${BUDGET:-400} - ($(date +%s) - T0) )); }
. benchmarks/gpu/device-env.sh || exit 1
R=/tmp/r; RES=/tmp/res; L=/tmp/logs; mkdir -p $R $RES $L
CAP=${CAP:-140}; STEPS=${STEPS:-1200}; B=256; N=${N:-200}
for t in inpaint sr4; do for b in i2sb ddbm-vp palette; do
  python3 -m lsb.training.bridge --task $t --bridge $b --out $R/bridge-$t-$b --steps $STEPS --batch-size $B \
    --max-seconds $CAP --checkpoint-every 100000 --no-progress --pairs ${PAIRS:-8000} > $L/bridge-$t-$b.log 2>&1 &
done; done
for k in ddm ddpm; do
  python3 -m lsb.training.ddm --kind $k --task t2i --out $R/$k-t2i --steps $STEPS --batch-size $B --max-seconds $CAP \
    --checkpoint-every 100000 --no-progress --cached-scenes 12000 > $L/$k-t2i.log 2>&1 &
done
wait
echo "training done at $(( $(date +%s) - T0 )) s"
for f in $R/*/result.json; do echo "$f: $(tr -d '\n ' < $f | cut -c1-120)"; done
TL=$(( $(left) - 15 )); [ $TL -lt 10 ] && TL=10; echo "benchmarks get $TL s"
export OMP_NUM_THREADS=2
NF="10 50 100 5 20 2 1"
for t in inpaint sr4; do
  timeout $TL python3 -m benchmarks.restoration --task $t --i2sb $R/bridge-$t-i2sb/final --nfes $NF --split test --n $N --batch $N --out $RES --tag r-$t-i2sb > $L/bench-$t-i2sb.log 2>&1 &
  timeout $TL python3 -m benchmarks.restoration --task $t --ddbm $R/bridge-$t-ddbm-vp/final --nfes $NF --split test --n $N --batch $N --out $RES --tag r-$t-ddbm > $L/bench-$t-ddbm.log 2>&1 &
  timeout $TL python3 -m benchmarks.restoration --task $t --palette $R/bridge-$t-palette/final --nfes $NF --split test --n $N --batch $N --out $RES --tag r-$t-palette > $L/bench-$t-palette.log 2>&1 &
done
timeout $TL python3 -m benchmarks.ddm --ddm $R/ddm-t2i/final --ddpm $R/ddpm-t2i/final --nfe 10 20 50 5 2 --n 300 --batch 300 --out $RES --tag ddm > $L/bench-ddm.log 2>&1 &
wait
echo "benchmarks done at $(( $(date +%s) - T0 )) s"
for f in $L/bench-*.log; do echo "== $f"; grep '^{' $f | cut -c1-330; done
O=${OUT:-/tmp/out}; mkdir -p $O
tar czf $O/results.tgz -C $RES . ; tar czf $O/logs.tgz -C $L . $(cd $R && ls */train_log.jsonl */result.json | sed "s#^#-C $R #" | head -0)
(cd $R && tar czf $O/trainlogs.tgz */train_log.jsonl */result.json)
echo "total $(( $(date +%s) - T0 )) s"
