"""Every trainer family trains with compressed exchanges, on a real local Spark: within 2 points
of its uncompressed run on the HLF-sized problem (a 14-50-20-3 MLP), with the bytes it saves in
``history.workers``; what an algorithm cannot take is refused before any task starts."""
from __future__ import annotations

import numpy as np
import pytest

import distkeras as dk
from tests.data import blobs, blobs_df

EPOCHS = 3
TOLERANCE = 0.02
FAMILIES = {                      # trainer, its settings
    # λ = 4: with top-1 % of a window's update and 5 commits an epoch (λ = 12), the compressed
    # run ended 0.005-0.025 behind after 3 epochs, and 3 of 7 runs missed the 2 points (2 of
    # 3 on the code before 2026-12-05's window change, 1 of 4 after); at λ = 4: within 0.003
    # (3 runs)
    "parameter server": ("ADAG", dict(learning_rate=0.03, communication_window=4)),
    "ring all-reduce": ("ARSGD", dict(learning_rate=0.01)),
    "gossip": ("DPSGD", dict(learning_rate=0.01)),
}


def hlf_mlp():
    import keras

    return keras.Sequential([keras.Input((14,)), keras.layers.Dense(50, activation="relu"),
                             keras.layers.Dense(20, activation="relu"),
                             keras.layers.Dense(3, activation="softmax")])


@pytest.fixture(scope="module")
def data(spark):
    return blobs_df(spark, 4000, dim=14, seed=0, partitions=2), blobs(3000, dim=14, seed=1)


def fit(family, compression, train):
    name, settings = FAMILIES[family]
    trainer = getattr(dk.trainers, name)(hlf_mlp(), loss="categorical_crossentropy",
                                         num_workers=2, batch_size=32, epochs=EPOCHS,
                                         verbose=False, compression=compression, **settings)
    return trainer.fit(train)


def accuracy(fitted, test) -> float:
    x, y = test
    return float((fitted.predict([x]).argmax(axis=1) == y).mean())


@pytest.fixture(scope="module")
def uncompressed(data):
    return {family: accuracy(fit(family, None, data[0]), data[1]) for family in FAMILIES}


@pytest.mark.parametrize("compression", ["int8", "topk:0.01"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_converges_with_compression_like_without(family, compression, data,
                                                        uncompressed):
    fitted = fit(family, compression, data[0])
    acc = accuracy(fitted, data[1])
    print(f"{family} {compression}: {acc:.3f} (uncompressed {uncompressed[family]:.3f})")
    assert acc >= uncompressed[family] - TOLERANCE, (family, compression, acc, uncompressed)
    for w in fitted.history.workers:
        ratio = w["raw_bytes_sent"] / w["bytes_sent"]
        assert w["compression_ratio"] == pytest.approx(ratio)
        # int8: ~3.9x (framing and the float32 statistics aside); top-k 1 %: 8 bytes per kept
        # value, ~2 % (the ring all-gathers each worker's share whole: (n-1) shares of 2 %)
        assert ratio > (3.5 if compression == "int8" else 15), (family, compression, w)
        assert np.isfinite(w["feedback_norm"]) and w["feedback_norm"] >= 0


def test_what_an_exchange_cannot_take_is_refused_before_training(data):
    trainer = dk.trainers.ADPSGD(hlf_mlp(), loss="categorical_crossentropy", num_workers=2,
                                 compression="topk:0.01", verbose=False)
    with pytest.raises(ValueError, match="adpsgd: compression='topk:0.01': pairwise gossip"):
        trainer.fit(data[0])
    with pytest.raises(ValueError, match="ensemble.*nothing to compress"):
        dk.trainers.EnsembleTrainer(hlf_mlp(), loss="categorical_crossentropy", num_workers=2,
                                    compression="fp16", verbose=False).fit(data[0])
    with pytest.raises(TypeError, match="unknown compressor 'gzip'"):
        dk.trainers.ADAG(hlf_mlp(), compression="gzip")


def test_compression_is_a_param_that_persists(tmp_path):
    trainer = dk.trainers.LocalSGD(hlf_mlp(), loss="categorical_crossentropy",
                                   compression="PowerSGD:4")
    assert trainer.getCompression() == "powersgd:4"
    trainer.setCompression("int8:stochastic")
    trainer.save(str(tmp_path / "t"))
    again = type(trainer).load(str(tmp_path / "t"))
    assert again.getCompression() == "int8:stochastic"
