#!/bin/sh
# Figures 4.1 and 4.2: measured on this machine (1, 2 and 4 workers as processes on its 2
# cores), the same configurations simulated on a loopback model sharing 2 cores (the
# validation of the simulation), and simulated past this machine (2..256 workers, a core
# each, 10 and 1 Gbit/s links). Every run joins studies/scaling/runs.jsonl; rerunning a
# command skips the runs already there.
set -e
export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}
DATA=${DATA:-/tmp/study-small}     # 20,000 training and 5,000 test events of the hlf-16 sample
OUT=studies/scaling
ALGORITHMS=single,arsgd,adpsgd,swarmsgd,adag,downpour,agn,dynsgd
COMMON="--data $DATA/features --model hlf --quiet --algorithms $ALGORITHMS --batch-size 32"

if [ ! -e "$DATA/features/train.parquet" ]; then   # a sample of studies/hlf-16's features
  python -c "
import os, numpy as np, pyarrow.parquet as pq
for name, n in (('train', 20000), ('test', 5000)):
    t = pq.read_table('${HLF:-/tmp/study-data}/features/%s.parquet' % name)
    idx = np.sort(np.random.default_rng(0).choice(t.num_rows, n, replace=False))
    os.makedirs('$DATA/features/%s.parquet' % name, exist_ok=True)
    pq.write_table(t.take(idx), '$DATA/features/%s.parquet/part-00000.parquet' % name)"
fi

# measured: real Spark workers over loopback
python jobs/study.py $COMMON --workers 2,4 --epochs 3 --out $OUT
# the validation: the same runs simulated (loopback links, the 2 cores shared)
python jobs/study.py $COMMON --workers 2,4 --epochs 3 --simulate --network loopback --cores 2 \
  --out $OUT
# past this machine, with the times the validation runs measured (medians)
TIMES=$(python -c "
import json, statistics
runs = [json.loads(l)['simulation'] for l in open('$OUT/runs.jsonl') if '|sim=' in l]
median = lambda k: statistics.median(r[k] for r in runs if r.get(k) is not None)
print(f'--step-time {median(\"step_seconds\")} --call-time {median(\"call_seconds\")} '
      f'--gradient-time {median(\"gradient_seconds\")}')")
python jobs/study.py $COMMON --workers 2,4,16,64,256 --epochs 2 --simulate \
  --network 10gbit:0.1ms $TIMES --out $OUT
# 1 Gbit/s: the thesis' three (the parameter-server family's commits are small next to a ring's)
python jobs/study.py $COMMON --algorithms single,arsgd,adpsgd,swarmsgd --workers 2,4,16,64,256 \
  --epochs 2 --simulate --network 1gbit:0.1ms $TIMES --out $OUT
