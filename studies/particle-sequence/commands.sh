#!/bin/sh
# Table 4.3 at a reduced size: the particle-sequence (GRU) classifier on 1,000 generated
# events per class (the simulation holds each worker's partition on the driver: 801x19 floats
# an event), 4 simulated workers, 2 repeats.
set -e
export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}
DATA=${DATA:-/tmp/study-seq1k}
OUT=studies/particle-sequence
if [ ! -e "$DATA/features/train.parquet" ]; then
  python -c "
from distkeras import pipeline
from distkeras.pipeline.cli import start_session
pipeline.generate_sample('$DATA/sample', 1000)
spark = start_session(None, 'study-data', num_workers=2)
pipeline.ingest_sample(spark, pipeline.sample_labels('$DATA/sample'), '$DATA/events.parquet')
pipeline.make_features(spark, '$DATA/events.parquet', '$DATA/features')"
fi
python jobs/study.py --data "$DATA/features" --model particle_sequence --quiet \
  --algorithms single,arsgd,adpsgd --slowmo none,avg,noavg --workers 4 \
  --epochs 2 --repeats 2 --simulate --network 10gbit:0.1ms --out $OUT
