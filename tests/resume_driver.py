"""Driver program of test_resume.py, run in its own process so that the test can SIGKILL it:
trains ADAG with a checkpoint directory (argv[1]) and writes what the test checks to argv[2].
Each epoch end waits ``EPOCH_PAUSE`` s on the driver (a Keras callback), so that a kill lands
mid-training. With argv[3] == "baseline", also trains the same run uninterrupted."""
import json
import os
import sys
import time

import keras

import distkeras as dk
from distkeras.spark import session
from tests.data import blobs, blobs_df, mlp

EPOCHS, EPOCH_PAUSE = 6, 1.0
checkpoint, out = sys.argv[1], sys.argv[2]
spark = session("local[2]", app_name="distkeras-resume-test")
train = blobs_df(spark, 4000, seed=0).cache()
x, y = blobs(1500, seed=1)


def fit(checkpoint_dir):
    keras.utils.set_random_seed(0)
    pause = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: time.sleep(EPOCH_PAUSE))
    trainer = dk.trainers.ADAG(mlp(), loss="categorical_crossentropy", num_workers=2,
                               batch_size=32, epochs=EPOCHS, learning_rate=0.03,
                               verbose=False, callbacks=[pause], checkpoint_dir=checkpoint_dir)
    fitted = trainer.fit(train)
    return fitted, float((fitted.predict([x]).argmax(1) == y).mean())


before = sorted(os.listdir(checkpoint)) if os.path.isdir(checkpoint) else []
fitted, accuracy = fit(checkpoint)
result = {"found": before, "accuracy": accuracy, "loss": fitted.history["loss"],
          "epochs": fitted.history.epoch, "updates": fitted.history.ps_stats["updates"],
          "left": sorted(os.listdir(checkpoint)) if os.path.isdir(checkpoint) else []}
if len(sys.argv) > 3 and sys.argv[3] == "baseline":
    result["baseline_accuracy"] = fit(None)[1]
with open(out, "w") as fh:
    json.dump(result, fh)
spark.stop()
