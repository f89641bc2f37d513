"""distkeras: Spark-native distributed training for Keras 3 (successor of CERN's Distributed Keras).

Public names are exported lazily (PEP 562 ``__getattr__``), so ``import distkeras`` imports
neither Spark nor TensorFlow; the first use of a name imports its module.

Example::

    import distkeras as dk
    events = dk.read_root(spark, "data/*.root", tree="Delphes", branches=["Jet.*"])
    trainer = dk.trainers.ADAG(model, loss="categorical_crossentropy", num_workers=2,
                               features_col="hlf", label_col="label")
    fitted = trainer.fit(train_df)
"""
from __future__ import annotations

from distkeras.lazy import lazy

__version__ = "0.1.0"

# name -> module that defines it (None: the name is a submodule). Add entries here; keep the
# module imports lazy.
_LAZY = {
    "algorithms": None,
    "evaluation": None,
    "features": None,
    "models": None,
    "pipeline": None,
    "spark": None,
    "study": None,
    "trainers": None,
    "transport": None,
    "tuning": None,
    "tracking": None,
    "params": None,
    "persistence": None,
    "KerasModel": "distkeras.model",
    "ModelError": "distkeras.errors",
    "PortableModel": "distkeras.portable",
    "load_model": "distkeras.model",
    "read_root": "distkeras.io.root",
    "register_root_source": "distkeras.io.root",
    "RootReadError": "distkeras.io.errors",
    "warm_up_workers": "distkeras.driver.warm_up",
}

__getattr__, __dir__, __all__ = lazy(__name__, _LAZY)
