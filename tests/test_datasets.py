"""The Delphes-like generator: real TTrees with Delphes names/types, deterministic, plausible and
separable-but-not-trivially physics, readable through read_root, and its CLI."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import awkward as ak
import numpy as np
import pytest
import uproot

from distkeras.datasets.delphes import BRANCHES, PROCESSES, generate_block, generate_delphes, main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def stats_sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("stats")
    generate_delphes(out, 2500, seed=5, events_per_file=2500, compression="lz4")
    arrays = {}
    for p in PROCESSES:
        with uproot.open(out / p / f"{p}_000.root") as f:
            arrays[p] = f["Delphes"].arrays(library="ak")
    return out, arrays


def test_layout_names_and_types(tmp_path):
    paths = generate_delphes(tmp_path, 150, seed=1, events_per_file=100, basket_events=40)
    assert paths == [str(tmp_path / p / f"{p}_{i:03d}.root") for p in ("qcd", "ttbar", "wjets") for i in (0, 1)]
    want = set()
    for coll, fields in BRANCHES.items():
        want |= {f"{coll}_size"} | {f"{coll}.{k}" for k in fields}
    for path, n in zip(paths, [100, 50] * 3):
        with uproot.open(path) as f:
            assert f.classname_of("Delphes") == "TTree"          # not RNTuple
            t = f["Delphes"]
            assert t.num_entries == n and set(t.keys()) == want
            assert t["EFlowTrack_size"].typename == "int32_t"
            assert t["EFlowTrack.PT"].typename == "float[]" and t["EFlowTrack.PID"].typename == "int32_t[]"
            assert t["Jet.BTag"].typename == "uint32_t[]" and t["Electron.Charge"].typename == "int32_t[]"
            assert list(t.common_entry_offsets()) == list(range(0, n, 40)) + [n]   # one cluster per basket
            sizes = t["Jet_size"].array(library="np")
            assert np.array_equal(sizes, ak.num(t["Jet.PT"].array(), axis=1).to_numpy())


def test_deterministic_for_a_seed(tmp_path):
    a = generate_delphes(tmp_path / "a", 60, ["ttbar"], seed=9, events_per_file=60, basket_events=25)
    b = generate_delphes(tmp_path / "b", 60, ["ttbar"], seed=9, events_per_file=60, basket_events=25)
    c = generate_delphes(tmp_path / "c", 60, ["ttbar"], seed=10, events_per_file=60, basket_events=25)
    read = [uproot.open(p[0])["Delphes"].arrays(["EFlowTrack.PT", "Jet.BTag", "MissingET.MET"]) for p in (a, b, c)]
    assert ak.array_equal(read[0], read[1])
    assert not ak.array_equal(read[0]["EFlowTrack.PT"], read[2]["EFlowTrack.PT"])


def test_vectorised_speed():
    rng = np.random.default_rng(0)
    t0 = time.process_time()
    for p in PROCESSES:
        generate_block(p, 1000, rng)
    assert time.process_time() - t0 < 3.0   # ~0.5 s here: 100k events/process ~ 15-60 s with I/O


def test_multiplicities_and_collections(stats_sample):
    _, arrays = stats_sample
    for p, a in arrays.items():
        for coll, (lo, hi) in {"EFlowTrack": (160, 470), "EFlowPhoton": (230, 580),
                               "EFlowNeutralHadron": (210, 430)}.items():
            n = a[f"{coll}_size"].to_numpy()
            assert lo <= n.min() and n.max() <= hi + 5, (p, coll, n.min(), n.max())
            assert np.ptp(n) > (hi - lo) / 3                  # spread over the range
        assert ak.all(a["MissingET_size"] == 1)
        nlep = (a["Electron_size"] + a["MuonTight_size"]).to_numpy()
        assert set(np.unique(nlep)) <= {0, 1}
        assert ak.all(a["Jet.PT"][:, :-1] >= a["Jet.PT"][:, 1:])  # pT ordered
        # the lepton's own track is in EFlowTrack (same pT, PID = -11*charge or -13*charge)
        for coll, pid in (("Electron", 11), ("MuonTight", 13)):
            has = a[f"{coll}_size"] == 1
            lep_pt, q = ak.firsts(a[f"{coll}.PT"][has]), ak.firsts(a[f"{coll}.Charge"][has])
            tracks = a[has]
            match = (tracks["EFlowTrack.PT"] == lep_pt) & (tracks["EFlowTrack.PID"] == -pid * q)
            assert ak.all(ak.sum(match, axis=1) == 1)
        assert set(np.unique(np.abs(ak.flatten(a["EFlowTrack.PID"]).to_numpy()))) <= {11, 13, 211, 321, 2212}


def hlf(a):
    """HLF features of the DESIGN (section 5) with the lepton selection; returns (X, selected)."""
    def dphi(x, y):
        return np.mod(x - y + np.pi, 2 * np.pi) - np.pi

    def iso(lep, pt, eta, phi, thr, own=False):
        dr = np.hypot(eta - lep[1], dphi(phi, lep[2]))
        m = (dr < 0.3) & (pt > thr) & ((dr > 1e-5) if own else True)
        return ak.sum(pt * m, axis=1) / lep[0]

    cands = []
    for coll in ("Electron", "MuonTight"):
        lep = [ak.fill_none(ak.firsts(a[f"{coll}.{k}"]), 1.0) for k in ("PT", "Eta", "Phi", "Charge")]
        isos = [iso(lep, a["EFlowTrack.PT"], a["EFlowTrack.Eta"], a["EFlowTrack.Phi"], 0.5, own=True),
                iso(lep, a["EFlowPhoton.ET"], a["EFlowPhoton.Eta"], a["EFlowPhoton.Phi"], 1.0),
                iso(lep, a["EFlowNeutralHadron.ET"], a["EFlowNeutralHadron.Eta"], a["EFlowNeutralHadron.Phi"], 1.0)]
        ok = (a[f"{coll}_size"] > 0) & (lep[0] > 23) & (isos[0] + isos[1] + isos[2] < 0.45)
        cands.append((np.asarray(ok), [np.asarray(x, dtype=float) for x in lep + isos]))
    (ok_e, e), (ok_m, m) = cands
    use_e = ok_e & (~ok_m | (e[0] >= m[0]))
    lep = [np.where(use_e, x, y) for x, y in zip(e, m)]
    good = (a["Jet.PT"] > 30) & (abs(a["Jet.Eta"]) < 2.6)
    ht = np.asarray(ak.sum(a["Jet.PT"] * good, axis=1))
    nj, nb = np.asarray(ak.sum(good, axis=1)), np.asarray(ak.sum(good & (a["Jet.BTag"] > 0), axis=1))
    met, mphi = np.asarray(ak.firsts(a["MissingET.MET"])), np.asarray(ak.firsts(a["MissingET.Phi"]))
    mt = np.sqrt(2 * met * lep[0] * (1 - np.cos(dphi(mphi, lep[2]))))
    X = np.stack([ht, met, mphi, mt, nj, nb, lep[0], lep[1], lep[2], lep[4], lep[5], lep[6], lep[3],
                  use_e.astype(float)], axis=1)
    return X, ok_e | ok_m


def test_class_differences_and_separability(stats_sample):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    _, arrays = stats_sample
    feats = {p: hlf(a) for p, a in arrays.items()}
    sel = {p: s.mean() for p, (_, s) in feats.items()}
    assert 0.15 < sel["qcd"] < 0.5 and sel["ttbar"] > 0.6 and sel["wjets"] > 0.6   # QCD passes sometimes
    mean = {p: X[s].mean(axis=0) for p, (X, s) in feats.items()}
    HT, MET, MT, NJ, NB, ISO = 0, 1, 3, 4, 5, slice(9, 12)
    assert mean["ttbar"][NJ] > mean["qcd"][NJ] > mean["wjets"][NJ]
    assert mean["ttbar"][HT] > mean["qcd"][HT] > mean["wjets"][HT]
    assert 1.0 < mean["ttbar"][NB] < 1.8 and mean["wjets"][NB] < 0.1 and 0.1 < mean["qcd"][NB] < 0.6
    assert mean["wjets"][MET] > mean["qcd"][MET] and mean["ttbar"][MET] > mean["qcd"][MET]
    assert 50 < np.median(feats["wjets"][0][feats["wjets"][1], MT]) < 85      # Jacobian peak near m_W
    assert np.median(feats["qcd"][0][feats["qcd"][1], MT]) < 40
    iso_all = {p: np.asarray(hlf_iso) for p, hlf_iso in
               ((p, X[:, ISO].sum(axis=1)) for p, (X, _) in feats.items())}
    assert np.median(iso_all["qcd"]) > 3 * np.median(iso_all["wjets"])       # QCD leptons non-isolated
    X = np.concatenate([feats[p][0][feats[p][1]] for p in PROCESSES])
    y = np.concatenate([np.full(feats[p][1].sum(), PROCESSES[p].label) for p in PROCESSES])
    idx = np.random.default_rng(0).permutation(len(y))
    X, y = X[idx], y[idx]
    k = len(y) * 2 // 3
    with threadpool_limits(1):  # OpenMP spinning on a shared 2-core machine is slow
        clf = HistGradientBoostingClassifier(random_state=0).fit(X[:k], y[:k])
    acc = (clf.predict(X[k:]) == y[k:]).mean()
    assert 0.8 <= acc <= 0.95, acc


def test_reads_back_through_spark(spark, stats_sample):
    from pyspark.sql import types as T

    from distkeras.io.root import read_root

    out, arrays = stats_sample
    df = read_root(spark, str(out), "Delphes", labels={str(out / p): PROCESSES[p].label for p in PROCESSES})
    types = {f.name: f.dataType for f in df.schema.fields}
    assert types["EFlowTrack_PID"] == T.ArrayType(T.IntegerType(), True)
    assert types["EFlowTrack_PT"] == T.ArrayType(T.FloatType(), True)
    assert types["Jet_BTag"] == T.ArrayType(T.LongType(), True)
    assert types["MissingET_MET"] == T.ArrayType(T.FloatType(), True)
    assert types["Jet_size"] == T.IntegerType() and types["label"] == T.IntegerType()
    assert len(types) == sum(len(f) + 1 for f in BRANCHES.values()) + 1
    counts = {r["label"]: r["count"] for r in df.groupBy("label").count().collect()}
    assert counts == {0: 2500, 1: 2500, 2: 2500}
    from pyspark.sql import functions as F

    row = df.agg(F.sum("EFlowTrack_size").alias("n"), F.sum(F.size("EFlowTrack_PT")).alias("m")).first()
    assert row["n"] == row["m"] == sum(int(ak.sum(a["EFlowTrack_size"])) for a in arrays.values())


def test_cli(tmp_path, capsys):
    assert main([str(tmp_path / "cli"), "-n", "30", "--processes", "wjets", "--seed", "2",
                 "--events-per-file", "20", "--compression", "lzma"]) == 0
    assert "wrote 2 file(s)" in capsys.readouterr().out
    with uproot.open(tmp_path / "cli" / "wjets" / "wjets_001.root") as f:
        assert f["Delphes"].num_entries == 10 and f.file.fCompress // 100 == 2   # lzma
    res = subprocess.run([sys.executable, "-m", "distkeras.datasets.delphes", "--help"], capture_output=True,
                         text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, timeout=60)
    assert res.returncode == 0 and "--events-per-file" in res.stdout and "--compression" in res.stdout
    with pytest.raises(ValueError, match="unknown process"):
        generate_delphes(tmp_path, 10, ["zjets"])
    with pytest.raises(ValueError, match="compression must be one of"):
        generate_delphes(tmp_path, 10, ["qcd"], compression="brotli")
