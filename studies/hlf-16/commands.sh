#!/bin/sh
# Table 4.2 at the published scale (16 workers) on the generated Delphes-like sample, and the
# scaling figures 4.1/4.2 past this machine's cores, every number of studies/hlf-16/report.md.
# Rerunning a command skips the runs already in runs.jsonl (an interrupted study resumes).
set -e
export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}
DATA=${DATA:-/tmp/study-data}
OUT=studies/hlf-16

# the sample: 72,000 events per class -> 127,675 selected -> 102,323 training, 25,352 test
if [ ! -e "$DATA/features/train.parquet" ]; then
  python -c "
from distkeras import pipeline
from distkeras.pipeline.cli import start_session
pipeline.generate_sample('$DATA/sample', 72000)
spark = start_session(None, 'study-data', num_workers=2)
pipeline.ingest_sample(spark, pipeline.sample_labels('$DATA/sample'), '$DATA/events.parquet')
pipeline.make_features(spark, '$DATA/events.parquet', '$DATA/features', hlf_only=True)"
fi

# Table 4.2: 16 simulated workers (the real rules on the real data split), 3 repeats
python jobs/study.py --data "$DATA/features" --model hlf --quiet \
  --algorithms single,arsgd,adpsgd,swarmsgd --slowmo none,avg,noavg --workers 16 \
  --epochs 4 --repeats 3 --simulate --network 10gbit:0.1ms --out $OUT
