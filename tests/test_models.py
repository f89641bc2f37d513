"""The three topology classifiers: shapes, parameter counts, compilation, masking, lazy import."""
from __future__ import annotations

import subprocess
import sys

import numpy as np


def test_import_does_not_pull_tensorflow():
    code = "import sys, distkeras.models; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_hlf_classifier_shape_params_and_compile():
    from distkeras.models import hlf_classifier

    m = hlf_classifier()
    assert m.input_shape == (None, 14) and m.output_shape == (None, 3)
    assert m.count_params() == (14 * 50 + 50) + (50 * 20 + 20) + (20 * 10 + 10) + (10 * 3 + 3) == 2013
    assert type(m.optimizer).__name__ == "Adam"
    assert "categorical_crossentropy" in str(m.loss)
    p = m.predict(np.random.default_rng(0).normal(size=(5, 14)).astype("float32"), verbose=0)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    assert getattr(hlf_classifier(compile=False), "optimizer", None) is None


def test_particle_sequence_classifier_masks_padding():
    from distkeras.models import particle_sequence_classifier

    m = particle_sequence_classifier()
    assert m.input_shape == (None, 801, 19) and m.output_shape == (None, 3)
    gru = 3 * (19 * 50 + 50 * 50 + 2 * 50)
    assert m.count_params() == gru + 50 * 3 + 3 == 10803
    assert [type(l).__name__ for l in m.layers] == ["InputLayer", "Masking", "GRU", "Dropout", "Dense"]
    rng = np.random.default_rng(1)
    x = np.zeros((2, 801, 19), "float32")
    x[:, :30] = rng.normal(size=(30, 19))
    # 771 all-zero rows after the 30 real ones are skipped (same output as a 30-step model);
    # a non-zero row among them is not
    a = m.predict(x, verbose=0)
    z = x.copy()
    z[:, 500] = 1.0
    assert not np.allclose(a, m.predict(z, verbose=0), atol=1e-6)
    sub = particle_sequence_classifier(num_particles=30)
    sub.set_weights(m.get_weights())
    np.testing.assert_allclose(sub.predict(x[:, :30], verbose=0), a, rtol=1e-4, atol=1e-6)


def test_inclusive_classifier_two_named_inputs():
    from distkeras.models import inclusive_classifier

    m = inclusive_classifier()
    assert [t.name for t in m.inputs] == ["llf", "hlf"] or [i.name for i in m.inputs] == ["llf", "hlf"]
    assert m.input_shape == [(None, 801, 19), (None, 14)]
    assert m.output_shape == (None, 3)
    n = 3 * (19 * 50 + 50 * 50 + 2 * 50) + (64 * 25 + 25) + (25 * 3 + 3)
    assert m.count_params() == n == 12353
    rng = np.random.default_rng(2)
    llf = np.zeros((4, 801, 19), "float32")
    llf[:, :10] = rng.normal(size=(10, 19))
    hlf = rng.normal(size=(4, 14)).astype("float32")
    by_name = m.predict({"llf": llf, "hlf": hlf}, verbose=0)
    np.testing.assert_allclose(by_name, m.predict([llf, hlf], verbose=0), rtol=1e-5)
    y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    hist = m.fit({"llf": llf, "hlf": hlf}, y, epochs=1, verbose=0)
    assert set(hist.history) >= {"loss", "accuracy"}
    clone = type(m).from_config(m.get_config())      # JSON/config round trip (how models travel)
    assert clone.count_params() == n
