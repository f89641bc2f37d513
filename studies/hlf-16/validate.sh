#!/bin/sh
# Table 4.2's configurations trained for real with 16 worker processes on this machine's 2
# cores (1 repeat), and simulated the same way (loopback links, 2 cores shared): the
# simulation's check at 16 workers. Appends to studies/hlf-16/runs.jsonl.
set -e
export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}
DATA=${DATA:-/tmp/study-data}
COMMON="--data $DATA/features --model hlf --quiet --algorithms single,arsgd,adpsgd
  --slowmo none,avg --workers 16 --epochs 4 --out studies/hlf-16"
python jobs/study.py $COMMON
python jobs/study.py $COMMON --simulate --network loopback --cores 2
