"""Topology features: the vectorised computation against an independent per-event loop,
hand-made events for the individual rules, the Spark transformer, and the preprocessing."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from distkeras.features.arrow import events_from_arrow
from distkeras.features.topology import TopologyConfig, compute_topology_features
from tests.topology_events import FIELDS, make_events, to_spark


# ----------------------------------------------------------------- independent reference (loops)
def _dphi(a: float, b: float) -> float:
    d = a - b
    while d > math.pi:
        d -= 2 * math.pi
    while d <= -math.pi:
        d += 2 * math.pi
    return d


def _dr(eta1, phi1, eta2, phi2) -> float:
    return math.sqrt((eta1 - eta2) ** 2 + _dphi(phi1, phi2) ** 2)


def reference_event(ev: dict, cfg: TopologyConfig):
    """LLF (801, 19) and HLF (14) of one event, or None if it fails the selection."""
    trk, pho, neu = ev["EFlowTrack"], ev["EFlowPhoton"], ev["EFlowNeutralHadron"]
    tmap = [i for i in range(len(trk["PT"])) if trk["PT"][i] > cfg.track_pt_min]
    pmap = [i for i in range(len(pho["ET"])) if pho["ET"][i] > cfg.photon_et_min]
    nmap = [i for i in range(len(neu["ET"])) if neu["ET"][i] > cfg.neutral_et_min]

    def iso(eta, phi, pt, own_track):
        out = []
        for coll, idx, key in ((trk, tmap, "PT"), (pho, pmap, "ET"), (neu, nmap, "ET")):
            s = 0.0
            for i in idx:
                if coll is trk and i == own_track:
                    continue
                if _dr(eta, phi, coll["Eta"][i], coll["Phi"][i]) < cfg.iso_dr:
                    s += coll[key][i]
            out.append(s / pt)
        return out

    def own(eta, phi):
        best, best_dr = -1, cfg.own_track_dr
        for i in tmap:
            d = _dr(eta, phi, trk["Eta"][i], trk["Phi"][i])
            if d < best_dr:
                best, best_dr = i, d
        return best

    found = {}
    for flavour, coll in (("ele", ev["Electron"]), ("mu", ev[cfg.muon])):
        for i in range(len(coll["PT"])):
            if coll["PT"][i] <= cfg.lepton_pt_min:
                continue
            o = own(coll["Eta"][i], coll["Phi"][i])
            isos = iso(coll["Eta"][i], coll["Phi"][i], coll["PT"][i], o)
            if sum(isos) < cfg.iso_max:
                found[flavour] = dict(pt=coll["PT"][i], eta=coll["Eta"][i], phi=coll["Phi"][i],
                                      charge=coll["Charge"][i], iso=isos, own=o)
                break
    if not found:
        return None
    if "ele" in found and ("mu" not in found or found["ele"]["pt"] > found["mu"]["pt"]):
        lep, is_ele = found["ele"], 1.0
    else:
        lep, is_ele = found["mu"], 0.0

    def row(pt, eta, phi, vtx, isos, flags, charge):
        px, py = pt * math.cos(phi), pt * math.sin(phi)
        pz = pt * math.sinh(eta)
        e = math.sqrt(px * px + py * py + pz * pz)   # massless
        return [e, px, py, pz, pt, eta, phi, *vtx, *isos, *flags, charge]

    o = lep["own"]
    vtx = [trk[k][o] for k in "XYZ"] if o >= 0 else [0.0, 0.0, 0.0]
    lep_row = row(lep["pt"], lep["eta"], lep["phi"], vtx, lep["iso"], [0, 0, 0, is_ele, 1 - is_ele],
                  lep["charge"])
    tracks, photons, neutrals = [], [], []
    for i in tmap:
        if i == o or len(tracks) >= cfg.max_tracks:
            continue
        apid = abs(trk["PID"][i])
        flags = [float(apid not in (11, 13)), 0, 0, float(apid == 11), float(apid == 13)]
        tracks.append(row(trk["PT"][i], trk["Eta"][i], trk["Phi"][i], [trk[k][i] for k in "XYZ"],
                          iso(trk["Eta"][i], trk["Phi"][i], trk["PT"][i], i), flags, trk["Charge"][i]))
    for coll, idx, out, cap, flags in ((pho, pmap, photons, cfg.max_photons, [0, 0, 1, 0, 0]),
                                       (neu, nmap, neutrals, cfg.max_neutrals, [0, 1, 0, 0, 0])):
        for i in idx[:cap]:
            out.append(row(coll["ET"][i], coll["Eta"][i], coll["Phi"][i], [0, 0, 0],
                           iso(coll["Eta"][i], coll["Phi"][i], coll["ET"][i], -1), flags, 0.0))
    llf = np.zeros((cfg.n_particles, 19))
    if cfg.sort_by_dr:
        others = sorted(tracks + photons + neutrals,
                        key=lambda r: -_dr(r[5], r[6], lep["eta"], lep["phi"]))
        for k, r in enumerate(others + [lep_row]):
            llf[k] = r
    else:
        llf[0] = lep_row
        for start, rows in ((1, tracks), (1 + cfg.max_tracks, photons),
                            (1 + cfg.max_tracks + cfg.max_photons, neutrals)):
            for k, r in enumerate(rows):
                llf[start + k] = r
    jets = ev["Jet"]
    good = [i for i in range(len(jets["PT"]))
            if jets["PT"][i] > cfg.jet_pt_min and abs(jets["Eta"][i]) < cfg.jet_eta_max]
    ht = sum(jets["PT"][i] for i in good)
    nb = sum(1 for i in good if jets["BTag"][i] > 0)
    met, met_phi = ev["MissingET"]["MET"][0], ev["MissingET"]["Phi"][0]
    mt = math.sqrt(2 * met * lep["pt"] * (1 - math.cos(_dphi(met_phi, lep["phi"]))))
    hlf = [ht, met, met_phi, mt, len(good), nb, lep["pt"], lep["eta"], lep["phi"], *lep["iso"],
           lep["charge"], is_ele]
    return llf, np.array(hlf)


def events_as_dicts(table: pa.Table, muon: str = "MuonTight") -> list[dict]:
    cols = table.to_pydict()
    out = []
    for i in range(table.num_rows):
        ev = {}
        for coll, fields in FIELDS.items():
            name = muon if coll == "MuonTight" else coll
            ev[name] = {f: [float(v) for v in cols[f"{name}_{f}"][i]] for f in fields}
        out.append(ev)
    return out


def table_from_events(events: list[dict], muon: str = "MuonTight") -> pa.Table:
    """Hand-made events ({collection: {field: list}}) → contract-shaped Arrow table."""
    arrays, names = [], []
    for coll, fields in FIELDS.items():
        name = muon if coll == "MuonTight" else coll
        for f, dtype in fields.items():
            vals = [np.asarray(ev.get(name, {}).get(f, []), dtype=dtype) for ev in events]
            arrays.append(pa.array(vals, type=pa.list_(pa.from_numpy_dtype(dtype))))
            names.append(f"{name}_{f}")
    arrays.append(pa.array(np.arange(len(events)) % 3, pa.int32()))
    names.append("label")
    return pa.Table.from_arrays(arrays, names=names)


def check_against_reference(table: pa.Table, cfg: TopologyConfig):
    llf, hlf, mask = compute_topology_features(events_from_arrow(table), cfg)
    refs = [reference_event(ev, cfg) for ev in events_as_dicts(table, cfg.muon)]
    expected_mask = np.array([r is not None for r in refs])
    np.testing.assert_array_equal(mask, expected_mask)
    kept = [r for r in refs if r is not None]
    assert llf.shape == (len(kept), cfg.n_particles, 19) and hlf.shape == (len(kept), 14)
    for k, (ref_llf, ref_hlf) in enumerate(kept):
        np.testing.assert_allclose(hlf[k], ref_hlf, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(llf[k], ref_llf, rtol=1e-5, atol=1e-4)
    return llf, hlf, mask


# ----------------------------------------------------------------------------------- pure tests
def test_random_events_match_reference_loop():
    table = make_events(40, seed=11, scale=0.15)
    llf, hlf, mask = check_against_reference(table, TopologyConfig())
    assert 0 < mask.sum() < len(mask)          # some selected, some dropped


def test_category_layout_and_caps_match_reference_loop():
    cfg = TopologyConfig(sort_by_dr=False, max_tracks=7, max_photons=3, max_neutrals=4)
    table = make_events(25, seed=5, scale=0.1)
    llf, _, _ = check_against_reference(table, cfg)
    assert llf.shape[1] == 15
    assert np.all(llf[:, 0, 16] + llf[:, 0, 17] == 1)        # row 0 is the lepton
    assert np.all(llf[:, 8:11, 15] == 1)                     # photon block (filled: cap reached)


def test_full_multiplicity_shapes_padding_and_order():
    table = make_events(30, seed=3)
    llf, hlf, mask = compute_topology_features(events_from_arrow(table))
    assert llf.shape == (mask.sum(), 801, 19) and llf.dtype == np.float32
    assert hlf.shape == (mask.sum(), 14) and hlf.dtype == np.float32
    for ev in llf:
        real = np.any(ev != 0, axis=1)
        n = real.sum()
        assert real[:n].all() and not real[n:].any()        # padding rows after, exactly zero
        assert ev[n - 1, 16] + ev[n - 1, 17] == 1            # lepton is the last real row
        dr = np.hypot(ev[:n, 5] - ev[n - 1, 5],
                      np.angle(np.exp(1j * (ev[:n, 6] - ev[n - 1, 6]))))
        assert np.all(np.diff(dr) <= 1e-5)                   # decreasing ΔR to the lepton
        e, p = ev[:n, 0], np.linalg.norm(ev[:n, 1:4], axis=1)
        np.testing.assert_allclose(e, p, rtol=1e-5)         # massless four-vectors
        assert ev[:n, 13:16].sum() + ev[:n, 16:18].sum() == n  # exactly one type flag per row
    # caps: at most 450 tracks (charged rows minus the lepton), 150 photons, 200 neutrals
    assert (llf[:, :, 15] == 1).sum(axis=1).max() <= 150
    assert (llf[:, :, 14] == 1).sum(axis=1).max() <= 200


def _lepton_event(**over):
    ev = {"Electron": {"PT": [30.0], "Eta": [0.5], "Phi": [3.1], "Charge": [-1]},
          "MuonTight": {"PT": [], "Eta": [], "Phi": [], "Charge": []},
          # own track of the electron (identical kinematics) + a track 0.2 away + a far one
          "EFlowTrack": {"PID": [11, 211, -211], "Charge": [-1, 1, -1], "PT": [30.0, 3.0, 5.0],
                         "Eta": [0.5, 0.5, -1.0], "Phi": [3.1, -2.983, 0.0],
                         "X": [0.1, 0.0, 0.0], "Y": [0.2, 0.0, 0.0], "Z": [0.3, 1.0, 2.0]},
          "EFlowPhoton": {"ET": [2.0, 0.5], "Eta": [0.6, 0.5], "Phi": [3.1, 3.1]},
          "EFlowNeutralHadron": {"ET": [1.5], "Eta": [0.3], "Phi": [-3.0]},
          "Jet": {"PT": [50.0, 35.0, 25.0, 60.0], "Eta": [0.1, 2.0, 0.0, 2.7], "Phi": [0, 1, 2, 3],
                  "Mass": [5, 5, 5, 5], "BTag": [1, 0, 1, 1]},
          "MissingET": {"MET": [40.0], "Phi": [-3.1]}}
    for k, v in over.items():
        ev[k] = v
    return ev


def test_hand_made_event_isolation_hlf_and_wrapping():
    llf, hlf, mask = check_against_reference(table_from_events([_lepton_event()]), TopologyConfig())
    assert mask.tolist() == [True]
    h = dict(zip(("HT", "MET", "phiMET", "MT", "nJets", "nBjets", "LepPt", "LepEta", "LepPhi",
                  "IsoCh", "IsoGamma", "IsoNeu", "Charge", "IsEle"), hlf[0]))
    # own track removed; the track at Δφ = 2π - 6.083 = 0.2 (across ±π) is in the cone
    assert h["IsoCh"] == pytest.approx(3.0 / 30.0, rel=1e-5)
    assert h["IsoGamma"] == pytest.approx(2.0 / 30.0, rel=1e-5)        # 0.5 GeV photon below cut
    dr_neu = math.hypot(0.2, 2 * math.pi - 6.1)
    assert dr_neu < 0.3 and h["IsoNeu"] == pytest.approx(1.5 / 30.0, rel=1e-5)
    assert (h["HT"], h["nJets"], h["nBjets"]) == (pytest.approx(85.0), 2, 1)  # pT>30, |η|<2.6
    # MET at -3.1, lepton at 3.1: Δφ wraps to 0.0832, not 6.2
    dphi = 2 * math.pi - 6.2
    assert h["MT"] == pytest.approx(math.sqrt(2 * 40 * 30 * (1 - math.cos(dphi))), rel=1e-4)
    assert h["IsEle"] == 1 and h["Charge"] == -1
    ev = llf[0]
    n = np.any(ev != 0, axis=1).sum()
    assert n == 1 + 2 + 1 + 1            # lepton + 2 tracks (own removed) + 1 photon + 1 neutral
    np.testing.assert_allclose(ev[n - 1, 7:10], [0.1, 0.2, 0.3], rtol=1e-6)  # vtx of own track


def test_lepton_choice_isolation_and_threshold():
    cfg = TopologyConfig()
    mu = {"PT": [40.0], "Eta": [-1.0], "Phi": [1.0], "Charge": [1]}
    both = _lepton_event(MuonTight=mu)                              # e 30, μ 40: μ wins
    e_high = _lepton_event(MuonTight={**mu, "PT": [25.0]})          # e 30, μ 25: e wins
    # first electron non-isolated (a 20 GeV track next to it), second isolated → second chosen
    two_e = _lepton_event(Electron={"PT": [30.0, 26.0], "Eta": [0.5, -2.0], "Phi": [3.1, 0.0],
                                    "Charge": [-1, 1]})
    two_e["EFlowTrack"] = {k: v + [w] for (k, v), w in zip(two_e["EFlowTrack"].items(),
                                                           [211, 1, 20.0, 0.55, 3.1, 0, 0, 0])}
    below = _lepton_event(Electron={"PT": [23.0], "Eta": [0.5], "Phi": [3.1], "Charge": [-1]})
    none = _lepton_event(Electron={"PT": [], "Eta": [], "Phi": [], "Charge": []})
    _, hlf, mask = check_against_reference(table_from_events([both, e_high, two_e, below, none]), cfg)
    assert mask.tolist() == [True, True, True, False, False]
    assert hlf[0, 13] == 0 and hlf[0, 6] == pytest.approx(40.0)
    assert hlf[1, 13] == 1 and hlf[1, 6] == pytest.approx(30.0)
    assert hlf[2, 6] == pytest.approx(26.0) and hlf[2, 12] == 1


def test_events_from_arrow_slices_and_nulls():
    col = pa.array([[1.0, 2.0], None, [], [3.0, None, 5.0]], pa.list_(pa.float32()))
    batch = pa.RecordBatch.from_arrays([col, pa.array([1, 2, 3, 4], pa.int32())], names=["x", "n"])
    ev = events_from_arrow(batch)
    assert ev.fields == ["x", "n"]
    assert ev["x"].tolist() == [[1.0, 2.0], [], [], [3.0, 0.0, 5.0]] and ev["n"].tolist() == [1, 2, 3, 4]
    assert events_from_arrow(batch.slice(2, 2), ["x"])["x"].tolist() == [[], [3.0, 0.0, 5.0]]


def test_hlf_only_and_collection_names():
    table = make_events(20, seed=8, scale=0.2, muon="Muon")
    cfg = TopologyConfig(muon="Muon")
    llf, hlf, mask = compute_topology_features(events_from_arrow(table), cfg)
    none, hlf2, mask2 = compute_topology_features(events_from_arrow(table), TopologyConfig(muon="Muon", hlf_only=True))
    assert none is None and np.array_equal(hlf, hlf2) and np.array_equal(mask, mask2)
    with pytest.raises(KeyError, match="MuonTight_PT"):
        compute_topology_features(events_from_arrow(table), TopologyConfig())


# ----------------------------------------------------------------------------------- Spark tests
def _arrow(df) -> pa.Table:
    return df.toArrow() if hasattr(df, "toArrow") else pa.Table.from_pandas(df.toPandas())


def _fixed(table: pa.Table, col: str, width: int) -> np.ndarray:
    flat = table.column(col).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(table.num_rows, -1) if width is None else flat.reshape(table.num_rows, *width)


@pytest.fixture(scope="module")
def sample(spark):
    table = make_events(90, seed=21, scale=0.5)
    table = table.append_column("event_id", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    return table, to_spark(spark, table).repartition(3)


def test_transformer_matches_pure_function_and_counts(spark, sample):
    from pyspark.sql import types as T

    from distkeras.features import TopologyFeatures

    table, df = sample
    tf = TopologyFeatures(passthroughCols=["event_id"], batchSize=16)
    feats = tf.transform(df)
    assert feats.schema == T.StructType([
        T.StructField("hlf", T.ArrayType(T.FloatType())), T.StructField("llf", T.ArrayType(T.FloatType())),
        T.StructField("label", T.IntegerType()), T.StructField("event_id", T.LongType())])
    llf, hlf, mask = compute_topology_features(events_from_arrow(table))
    expected = {"events_in": 90, "events_selected": int(mask.sum()), "events_dropped": int((~mask).sum())}
    assert feats.count() == mask.sum()
    assert tf.counters.as_dict() == expected and expected["events_dropped"] > 0
    out = _arrow(feats.orderBy("event_id"))     # sampling + sort: evaluates the batches again
    assert tf.counters.events_in > 90
    tf.counters.reset()
    assert tf.counters.as_dict() == {"events_in": 0, "events_selected": 0, "events_dropped": 0}
    assert out.column("event_id").to_pylist() == np.flatnonzero(mask).tolist()
    np.testing.assert_array_equal(_fixed(out, "hlf", (14,)), hlf)
    np.testing.assert_array_equal(_fixed(out, "llf", (801, 19)), llf)
    assert out.column("label").to_pylist() == table.column("label").to_numpy()[mask].tolist()
    assert tf.cutflow(df) == expected


def test_transformer_hlf_only_params_and_errors(spark, sample, tmp_path):
    from distkeras.features import TopologyFeatures

    table, df = sample
    tf = TopologyFeatures(hlfOnly=True, leptonPtMin=40.0)
    assert tf.config().hlf_only and tf.config().lepton_pt_min == 40.0
    tf.write().overwrite().save(str(tmp_path / "tf"))
    loaded = TopologyFeatures.load(str(tmp_path / "tf"))
    assert loaded.config() == tf.config()
    out = _arrow(loaded.transform(df))
    assert out.column_names == ["hlf", "label"]
    _, hlf, mask = compute_topology_features(events_from_arrow(table), tf.config())
    got = _fixed(out, "hlf", (14,))
    np.testing.assert_array_equal(got[np.lexsort(got.T[::-1])], hlf[np.lexsort(hlf.T[::-1])])
    with pytest.raises(ValueError, match="Muon_PT"):
        TopologyFeatures(muon="Muon").transform(df)


def test_preprocessing_standardises_keeps_padding_and_round_trips(spark, tmp_path):
    from pyspark.ml import PipelineModel

    from distkeras.features import TopologyFeatures, preprocessing_pipeline

    table = make_events(150, seed=9, scale=0.06)           # few particles: padding in every block
    table = table.append_column("event_id", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    df = to_spark(spark, table)
    small = dict(maxTracks=40, maxPhotons=10, maxNeutralHadrons=10)      # 61 rows: faster
    feats = TopologyFeatures(passthroughCols=["event_id"], **small).transform(df).cache()
    train, test = feats.randomSplit([0.7, 0.3], seed=3)
    prep = preprocessing_pipeline().fit(train)
    raw_train = _arrow(train.orderBy("event_id"))
    done_train = _arrow(prep.transform(train).orderBy("event_id"))
    x = _fixed(raw_train, "llf", (61, 19)).astype(np.float64)
    y = _fixed(done_train, "llf", (61, 19))
    pad = ~np.any(x != 0, axis=2)
    assert pad.any() and np.all(y[pad] == 0)                       # padding exactly zero
    assert np.all(np.any(y[~pad] != 0, axis=1))
    real, scaled = x[~pad], y[~pad].astype(np.float64)
    std = real.std(axis=0, ddof=1)
    varying = std > 0
    np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(scaled.std(axis=0, ddof=1)[varying], 1, rtol=1e-3)
    np.testing.assert_allclose(scaled, (real - real.mean(0)) / np.where(varying, std, 1), rtol=1e-3, atol=1e-3)
    h = _fixed(done_train, "hlf", (14,)).astype(np.float64)
    h_raw = _fixed(raw_train, "hlf", (14,)).astype(np.float64)
    hv = h_raw.std(axis=0, ddof=1) > 0
    np.testing.assert_allclose(h.mean(axis=0)[hv], 0, atol=1e-4)
    np.testing.assert_allclose(h.std(axis=0, ddof=1)[hv], 1, rtol=1e-4)
    onehot = _fixed(done_train, "label_onehot", (3,))
    np.testing.assert_array_equal(onehot.argmax(1), done_train.column("label").to_numpy())
    assert np.all(onehot.sum(1) == 1)
    # the fitted train statistics are applied to the test split; save/load reproduces it
    prep.write().overwrite().save(str(tmp_path / "prep"))
    again = PipelineModel.load(str(tmp_path / "prep"))
    a = _arrow(prep.transform(test).orderBy("event_id"))
    b = _arrow(again.transform(test).orderBy("event_id"))
    assert a.num_rows > 0 and a.equals(b)
    assert a.column_names == ["hlf", "llf", "label", "event_id", "label_onehot"]
    feats.unpersist()


def test_generated_delphes_root_files_end_to_end(spark, tmp_path):
    """The colleague's generator → read_root → TopologyFeatures, vs the pure function."""
    from distkeras import read_root
    from distkeras.datasets.delphes import generate_delphes
    from distkeras.features import TopologyFeatures

    generate_delphes(str(tmp_path), 150, events_per_file=150, basket_events=75)
    labels = {str(tmp_path / p / "*.root"): i for i, p in enumerate(("qcd", "ttbar", "wjets"))}
    cfg = TopologyConfig()
    events = read_root(spark, None, "Delphes", labels=labels,
                       branches=[f"{c}.{f}" for c, fs in cfg.branches().items() for f in fs])
    tf = TopologyFeatures()
    out = _arrow(tf.transform(events))
    raw = _arrow(events)
    llf, hlf, mask = compute_topology_features(events_from_arrow(raw), cfg)
    got = _fixed(out, "hlf", (14,))
    order_a, order_b = np.lexsort(got.T[::-1]), np.lexsort(hlf.T[::-1])
    np.testing.assert_array_equal(got[order_a], hlf[order_b])
    labels_sel = raw.column("label").to_numpy()[mask]
    eff = [mask[raw.column("label").to_numpy() == k].mean() for k in range(3)]
    assert eff[2] > eff[0] and eff[1] > eff[0]      # W/tt̄ leptons are isolated, QCD ones mostly not
    assert tf.counters.events_in == 450 and tf.counters.events_selected == len(labels_sel)
    n_real = np.any(llf != 0, axis=2).sum(axis=1)
    assert n_real.min() > 100 and n_real.max() <= 801
