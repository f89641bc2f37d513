"""Feature engineering for the topology classifier (Nguyen et al. 2019), columnar in Spark.

* `compute_topology_features` / `TopologyConfig` — the pure awkward/numpy computation.
* `TopologyFeatures` — the Spark ML Transformer (``mapInArrow``) around it.
* `preprocessing_pipeline`, `LLFStandardizer`, `ArrayToVector`, `VectorToArray` — scaling fitted
  on the training split, saved and reloaded as a Spark ``PipelineModel``.

Example::

    feats = TopologyFeatures().transform(events)
    prep = preprocessing_pipeline().fit(train)      # HLF StandardScaler, LLF standardiser, one-hot
    prep.write().overwrite().save("prep"); PipelineModel.load("prep").transform(test)
"""
from __future__ import annotations

from distkeras.lazy import lazy

_LAZY = {
    "TopologyConfig": "distkeras.features.topology",
    "compute_topology_features": "distkeras.features.topology",
    "LLF_FEATURES": "distkeras.features.topology",
    "HLF_FEATURES": "distkeras.features.topology",
    "TopologyFeatures": "distkeras.features.transformer",
    "SelectionCounters": "distkeras.features.transformer",
    "ArrayToVector": "distkeras.features.preprocessing",
    "VectorToArray": "distkeras.features.preprocessing",
    "LLFStandardizer": "distkeras.features.preprocessing",
    "LLFStandardizerModel": "distkeras.features.preprocessing",
    "preprocessing_pipeline": "distkeras.features.preprocessing",
}
__getattr__, __dir__, __all__ = lazy(__name__, _LAZY)
