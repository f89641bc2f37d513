"""Convergence of every trainer against the single-worker baseline, on a real local Spark.

Each distributed trainer must reach the accuracy of SingleTrainer (same model, data, epochs)
within a few points; an algorithm that silently does not train fails here.
"""
from __future__ import annotations

import numpy as np
import pytest

import distkeras as dk
from tests.data import blobs, blobs_df, mlp

TOLERANCE = 0.05
EPOCHS = 3


@pytest.fixture(scope="module")
def data(spark):
    return blobs_df(spark, 4000, seed=0), blobs(1500, seed=1)


def accuracy(fitted, test) -> float:
    x, y = test
    return float((fitted.predict([x]).argmax(axis=1) == y).mean())


@pytest.fixture(scope="module")
def baseline(data):
    train, test = data
    fitted = dk.trainers.SingleTrainer(mlp(), loss="categorical_crossentropy",
                                       worker_optimizer="adam", learning_rate=0.01,
                                       batch_size=32, epochs=EPOCHS, verbose=False).fit(train)
    acc = accuracy(fitted, test)
    assert acc > 0.8, f"the baseline itself did not learn ({acc:.3f})"
    return acc


CASES = {
    "AveragingTrainer": dict(learning_rate=0.01),
    "LocalSGD": dict(learning_rate=0.01, communication_window=12),
    "EnsembleTrainer": dict(learning_rate=0.01),
    "DOWNPOUR": dict(learning_rate=0.01),
    "Hogwild": dict(learning_rate=0.01),
    # AGN/ADAG commit Δ/λ (a λ-times larger batch): they take a larger learning rate
    "AGN": dict(learning_rate=0.03),
    "ADAG": dict(learning_rate=0.03),
    "ADAG-overlap": dict(learning_rate=0.03, overlap_communication=True),
    "AEASGD-overlap": dict(overlap_communication=True),
    "DynSGD": dict(learning_rate=0.01),
    "EASGD": dict(learning_rate=0.01),
    "AEASGD": dict(),
    "EAMSGD": dict(),
    # workers that talk to each other (ring all-reduce, gossip)
    "ARSGD": dict(learning_rate=0.01),
    "LocalSGD-ring": dict(learning_rate=0.01, communication_window=12, via="ring"),
    "DPSGD": dict(learning_rate=0.01),
    "ADPSGD": dict(learning_rate=0.01),
    "SwarmSGD": dict(learning_rate=0.01, local_steps=3),
    "SwarmSGD-geometric": dict(learning_rate=0.01, local_steps=3, geometric=True),
    "SlowMo-localsgd": dict(learning_rate=0.01, base="localsgd"),
    "SlowMo-dpsgd": dict(learning_rate=0.01, base="dpsgd"),
    "SlowMo-adpsgd": dict(learning_rate=0.01, base="adpsgd"),
    "SlowMo-adpsgd-noavg": dict(learning_rate=0.01, base="adpsgd", average=False),
    "SlowMo-swarmsgd": dict(learning_rate=0.01, base="swarmsgd"),
}
DECENTRALISED = {"DPSGD", "ADPSGD", "SwarmSGD", "SwarmSGD-geometric", "SlowMo-localsgd",
                 "SlowMo-dpsgd", "SlowMo-adpsgd", "SlowMo-adpsgd-noavg", "SlowMo-swarmsgd", "ARSGD",
                 "LocalSGD-ring"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_trainer_converges_like_single_worker(name, data, baseline):
    train, test = data
    trainer = getattr(dk.trainers, name.split("-")[0])(mlp(), loss="categorical_crossentropy",
                                                       num_workers=2,
                                         batch_size=32, epochs=EPOCHS, verbose=False,
                                         **CASES[name])
    fitted = trainer.fit(train)
    acc = accuracy(fitted, test)
    print(f"{name}: accuracy {acc:.3f} baseline {baseline:.3f}")
    assert acc >= baseline - TOLERANCE, f"{name}: accuracy {acc:.3f} vs baseline {baseline:.3f}"
    assert len(fitted.history["loss"]) == EPOCHS
    assert np.isfinite(fitted.history["loss"]).all()
    workers = fitted.history.ps_stats["workers"]
    assert set(workers) == {0, 1} and all(w["done"] for w in workers.values())
    t0 = min(w["started_at"] for w in fitted.history.workers)
    timeline = [(w["worker"], w["exchanges"], round(w["started_at"] - t0, 2),
                 round(w["training_from"] - t0, 2), round(w["finished_at"] - t0, 2))
                for w in fitted.history.workers]
    for w in fitted.history.workers:     # where each worker's time went
        assert w["started_at"] <= w["training_from"] <= w["finished_at"], timeline
        assert 0 < w["compute_seconds"] + w["exchange_seconds"] <= w["seconds"], w
        assert (w["exchange_seconds"] > 0) == (name != "EnsembleTrainer"), w
        # (worker, exchanges, started, training from, finished) of every worker on failure
        assert (w["exchanges"] >= EPOCHS) == (name != "EnsembleTrainer"), timeline
        if name in DECENTRALISED:        # bytes between peers, and who met whom
            assert w["bytes_sent"] > 0 and w["bytes_received"] > 0 and w["peers"], w
        # the extra staleness of overlapped commits: others' commits a window did not see
        assert (w["missed_commits"] >= 0) if name.endswith("-overlap") else (
            w["missed_commits"] == 0), w
    if name in DECENTRALISED:            # Γ per epoch; identical replicas for the exact averages
        gamma = fitted.history["consensus_distance"]
        assert len(gamma) == EPOCHS and all(g >= 0 for g in gamma)
        if name in ("ARSGD", "LocalSGD-ring", "SlowMo-localsgd"):
            assert max(gamma) < 1e-6, gamma


class ScaledDOWNPOUR(dk.algorithms.DOWNPOUR):
    """A rule subclassed in user code: workers send Δ/1000 (executor side), the server adds
    1000·(Δ/1000) (driver side) and counts its commits. Only both halves together are DOWNPOUR:
    had the executors used the built-in worker rule, θ̃ would move by 1000·Δ and diverge."""

    name = "scaled-downpour"
    server_commits = 0

    def worker_send(self, theta, anchor):
        return (theta - anchor) * np.float32(1e-3)

    def server_commit(self, centre, payload, worker, version):
        type(self).server_commits += 1
        centre += payload * np.float32(1e3)
        return centre


def test_user_defined_rule_trains_end_to_end(data, baseline):
    train, test = data
    trainer = dk.trainers.Trainer(mlp(), algorithm=ScaledDOWNPOUR, loss="categorical_crossentropy",
                                  num_workers=2, batch_size=32, epochs=EPOCHS,
                                  learning_rate=0.01, verbose=False)
    fitted = trainer.fit(train)
    commits = sum(w["exchanges"] for w in fitted.history.workers)
    assert ScaledDOWNPOUR.server_commits == commits > 0
    assert accuracy(fitted, test) >= baseline - TOLERANCE


def test_workers_run_as_many_threads_as_the_local_master_gives_them(data, caplog):
    """local[2,2]: one worker runs TensorFlow on both cores, each of two workers on one, and
    cores_per_worker overrides the share (each thread count in Python workers of its own)."""
    import inspect

    from pyspark.sql import DataFrame

    from distkeras.driver.resources import _task_profile

    train, _ = data
    common = dict(loss="categorical_crossentropy", batch_size=64, epochs=1, verbose=False)
    single = dk.trainers.SingleTrainer(mlp(), **common).fit(train)
    assert [w["threads"] for w in single.history.workers] == [2]
    shared = dk.trainers.ADAG(mlp(), num_workers=2, **common).fit(train)
    assert [w["threads"] for w in shared.history.workers] == [1, 1]
    with caplog.at_level("WARNING", logger="distkeras.driver.resources"):
        pinned = dk.trainers.ADAG(mlp(), num_workers=2, cores_per_worker=2, **common).fit(train)
    assert [w["threads"] for w in pinned.history.workers] == [2, 2]
    assert "compete for them" in caplog.text
    assert not {w["pid"] for w in shared.history.workers} & {w["pid"] for w in
                                                              pinned.history.workers}
    # on a cluster the count is requested per task (stage-level scheduling of DataFrame stages,
    # pyspark >= 4); an older pyspark is told what to set instead
    if "profile" in inspect.signature(DataFrame.mapInArrow).parameters:
        assert _task_profile(3).taskResources["cpus"].amount == 3
    else:
        with pytest.raises(ValueError, match=r"set spark.task.cpus=3 for the session"):
            _task_profile(3)
