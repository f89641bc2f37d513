"""Delphes-like events with realistic multiplicities for the feature tests and benchmark.

Columns follow the `read_root` contract: ``Coll_Field`` list columns (float32; int32 for PID,
Charge, BTag), ``Coll_size`` int32 counters, ``label`` int32. Lepton tracks are copied into
``EFlowTrack`` (as Delphes does), so the own-track removal of the isolation is exercised.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

FIELDS = {
    "EFlowTrack": {"PID": np.int32, "Charge": np.int32, "PT": np.float32, "Eta": np.float32,
                   "Phi": np.float32, "X": np.float32, "Y": np.float32, "Z": np.float32},
    "EFlowPhoton": {"ET": np.float32, "Eta": np.float32, "Phi": np.float32},
    "EFlowNeutralHadron": {"ET": np.float32, "Eta": np.float32, "Phi": np.float32},
    "Electron": {"PT": np.float32, "Eta": np.float32, "Phi": np.float32, "Charge": np.int32},
    "MuonTight": {"PT": np.float32, "Eta": np.float32, "Phi": np.float32, "Charge": np.int32},
    "Jet": {"PT": np.float32, "Eta": np.float32, "Phi": np.float32, "Mass": np.float32,
            "BTag": np.int32},
    "MissingET": {"MET": np.float32, "Phi": np.float32},
}


def _list_column(counts: np.ndarray, values: np.ndarray) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def make_events(n: int, seed: int = 0, scale: float = 1.0, muon: str = "MuonTight") -> pa.Table:
    """``n`` events; ``scale`` multiplies the particle multiplicities (1.0 = Delphes-like)."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n).astype(np.int32)
    n_trk = (rng.integers(160, 471, n) * scale).astype(np.int64)
    n_pho = (rng.integers(230, 581, n) * scale).astype(np.int64)
    n_neu = (rng.integers(210, 431, n) * scale).astype(np.int64)
    n_ele = rng.choice([0, 1, 2], n, p=[0.45, 0.45, 0.1])
    n_mu = rng.choice([0, 1, 2], n, p=[0.5, 0.4, 0.1])
    n_jet = rng.integers(0, 4, n) + 2 * label
    cols: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}

    def phi(k):  # include exact ±π-ish values to exercise the wrapping
        p = rng.uniform(-np.pi, np.pi, k)
        edge = rng.random(k) < 0.05
        p[edge] = np.sign(p[edge]) * rng.uniform(np.pi - 0.2, np.pi, edge.sum())
        return p

    def leptons(counts):
        k = counts.sum()
        return {"PT": rng.uniform(10, 90, k), "Eta": rng.uniform(-2.4, 2.4, k), "Phi": phi(k),
                "Charge": rng.choice([-1, 1], k)}

    ele, mu = leptons(n_ele), leptons(n_mu)
    k = n_trk.sum()
    trk = {"PID": rng.choice([211, -211, 321, -321, 2212], k), "PT": rng.exponential(1.6, k),
           "Eta": rng.uniform(-2.5, 2.5, k), "Phi": phi(k), "X": rng.normal(0, 0.01, k),
           "Y": rng.normal(0, 0.01, k), "Z": rng.normal(0, 30, k)}
    trk["Charge"] = np.sign(trk["PID"])
    # Append the lepton tracks (same kinematics) to each event's track list.
    evt_t = np.repeat(np.arange(n), n_trk)
    evt_e, evt_m = np.repeat(np.arange(n), n_ele), np.repeat(np.arange(n), n_mu)
    lep_trk = {"PID": np.concatenate([-11 * ele["Charge"], -13 * mu["Charge"]]),
               "Charge": np.concatenate([ele["Charge"], mu["Charge"]]),
               "PT": np.concatenate([ele["PT"], mu["PT"]]),
               "Eta": np.concatenate([ele["Eta"], mu["Eta"]]),
               "Phi": np.concatenate([ele["Phi"], mu["Phi"]])}
    kl = len(lep_trk["PT"])
    lep_trk.update(X=rng.normal(0, 0.01, kl), Y=rng.normal(0, 0.01, kl), Z=rng.normal(0, 30, kl))
    evt_all = np.concatenate([evt_t, evt_e, evt_m])
    order = np.argsort(evt_all, kind="stable")
    trk = {f: np.concatenate([trk[f], lep_trk[f]])[order] for f in trk}
    cols["EFlowTrack"] = (n_trk + n_ele + n_mu, trk)
    for name, counts, eta_max, mean in (("EFlowPhoton", n_pho, 4.0, 1.0),
                                        ("EFlowNeutralHadron", n_neu, 4.0, 1.5)):
        k = counts.sum()
        cols[name] = (counts, {"ET": rng.exponential(mean, k), "Eta": rng.uniform(-eta_max, eta_max, k),
                               "Phi": phi(k)})
    cols["Electron"] = (n_ele, ele)
    cols[muon] = (n_mu, mu)
    k = n_jet.sum()
    cols["Jet"] = (n_jet, {"PT": rng.uniform(20, 200, k), "Eta": rng.uniform(-3, 3, k), "Phi": phi(k),
                           "Mass": rng.uniform(0, 20, k), "BTag": rng.integers(0, 2, k)})
    cols["MissingET"] = (np.ones(n, dtype=np.int64), {"MET": rng.exponential(40, n), "Phi": phi(n)})
    arrays, names = [], []
    for coll, (counts, fields) in cols.items():
        spec = FIELDS["MuonTight" if coll == muon else coll]
        for f, dtype in spec.items():
            names.append(f"{coll}_{f}")
            arrays.append(_list_column(counts, np.asarray(fields[f]).astype(dtype)))
        names.append(f"{coll}_size")
        arrays.append(pa.array(counts.astype(np.int32)))
    names.append("label")
    arrays.append(pa.array(label))
    return pa.Table.from_arrays(arrays, names=names)


def to_spark(spark, table: pa.Table):
    """Arrow table → Spark DataFrame on pyspark 4 (Arrow directly) and 3.5 (via pandas + schema)."""
    try:
        return spark.createDataFrame(table)
    except (TypeError, ValueError):
        from pyspark.sql.pandas.types import from_arrow_schema

        return spark.createDataFrame(table.to_pandas(), schema=from_arrow_schema(table.schema))
