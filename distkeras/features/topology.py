"""Topology-classifier features (Nguyen et al. 2019) from Delphes-like events, without Spark.

`compute_topology_features` maps a batch of events (an awkward record array whose fields are the
Delphes branches with ``.`` replaced by ``_``, e.g. ``EFlowTrack_PT``) to

* LLF, ``(n_selected, 801, 19)`` float32: ``[E, Px, Py, Pz, Pt, Eta, Phi, vtxX, vtxY, vtxZ,
  ChPFIso, GammaPFIso, NeuPFIso, isChHad, isNeuHad, isGamma, isEle, isMu, Charge]`` for the
  selected lepton, up to 450 tracks (pT > 0.5, without the lepton's own track), 150 photons and
  200 neutral hadrons (ET > 1), the first ones in input order; massless four-vectors.
  ``sort_by_dr=True`` (default): the real rows sorted by decreasing ΔR to the lepton (the lepton,
  ΔR = 0, is the last real row) followed by all-zero padding rows, so a GRU with ``Masking(0.)``
  ends on the lepton and its neighbours and the padding is right-aligned (cuDNN-friendly).
  ``sort_by_dr=False``: row 0 the lepton, rows 1–450 tracks, 451–600 photons, 601–800 neutral
  hadrons, each block zero-padded.
* HLF, ``(n_selected, 14)`` float32: ``[HT, MET, phiMET, MT, nJets, nBjets, LepPt, LepEta,
  LepPhi, LepIsoCh, LepIsoGamma, LepIsoNeu, LepCharge, LepIsEle]``.
* the selection mask over the input events.

Isolation PFIso(p) = Σ pT (ET) of map particles with ΔR < 0.3, / pT(p); maps: tracks pT > 0.5,
photons ET > 1, neutral hadrons ET > 1. Only the charged isolation removes the particle's own
track (for a track: itself; for a lepton: the nearest track within ``own_track_dr``). Tracks are
flagged isEle / isMu from |PID| = 11 / 13, isChHad otherwise; their charge is ``Charge``.

Example::

    events = ak.from_arrow(record_batch)
    llf, hlf, mask = compute_topology_features(events, TopologyConfig(muon="Muon"))
"""
from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np
import vector

from distkeras.features.cones import ConeIndex, delta_phi, group_starts, rank_in_group

LLF_FEATURES = ("E", "Px", "Py", "Pz", "Pt", "Eta", "Phi", "vtxX", "vtxY", "vtxZ", "ChPFIso",
                "GammaPFIso", "NeuPFIso", "isChHad", "isNeuHad", "isGamma", "isEle", "isMu",
                "Charge")
HLF_FEATURES = ("HT", "MET", "phiMET", "MT", "nJets", "nBjets", "LepPt", "LepEta", "LepPhi",
                "LepIsoCh", "LepIsoGamma", "LepIsoNeu", "LepCharge", "LepIsEle")
TRACK, PHOTON, NEUTRAL = 0, 1, 2


@dataclass(frozen=True)
class TopologyConfig:
    """Collection names, caps and cuts of the topology features (defaults: DESIGN §5)."""

    track: str = "EFlowTrack"
    photon: str = "EFlowPhoton"
    neutral: str = "EFlowNeutralHadron"
    electron: str = "Electron"
    muon: str = "MuonTight"
    jet: str = "Jet"
    met: str = "MissingET"
    max_tracks: int = 450
    max_photons: int = 150
    max_neutrals: int = 200
    lepton_pt_min: float = 23.0
    iso_max: float = 0.45
    iso_dr: float = 0.3
    own_track_dr: float = 0.01
    track_pt_min: float = 0.5
    photon_et_min: float = 1.0
    neutral_et_min: float = 1.0
    jet_pt_min: float = 30.0
    jet_eta_max: float = 2.6
    sort_by_dr: bool = True
    hlf_only: bool = False

    @property
    def n_particles(self) -> int:
        """LLF rows per event: 1 lepton + the three caps (801 by default)."""
        return 1 + self.max_tracks + self.max_photons + self.max_neutrals

    def branches(self) -> dict[str, tuple[str, ...]]:
        """Field names per collection that the computation reads."""
        lep = ("PT", "Eta", "Phi", "Charge")
        return {
            self.track: ("PID", "Charge", "PT", "Eta", "Phi", "X", "Y", "Z"),
            self.photon: ("ET", "Eta", "Phi"),
            self.neutral: ("ET", "Eta", "Phi"),
            self.electron: lep,
            self.muon: lep,
            self.jet: ("PT", "Eta", "Phi", "BTag"),
            self.met: ("MET", "Phi"),
        }

    def required_columns(self) -> list[str]:
        """Flattened column names (``Coll_Field``) the computation reads."""
        return [f"{c}_{f}" for c, fs in self.branches().items() for f in fs]


def _jagged(events: ak.Array, name: str, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, per-event counts) of one jagged column; missing lists count as empty."""
    col = events[name]
    counts = ak.to_numpy(ak.fill_none(ak.num(col, axis=1), 0)).astype(np.int64)
    flat = ak.flatten(ak.fill_none(col, [], axis=0), axis=1)
    values = ak.to_numpy(ak.fill_none(flat, 0)).astype(dtype, copy=False)
    return values, counts


class _Collection:
    """Flat columns of one collection plus the event index of every entry."""

    def __init__(self, events: ak.Array, prefix: str, fields: tuple[str, ...]) -> None:
        self.cols: dict[str, np.ndarray] = {}
        counts = None
        for f in fields:
            self.cols[f], c = _jagged(events, f"{prefix}_{f}")
            if counts is not None and not np.array_equal(c, counts):
                raise ValueError(f"{prefix}_{f} has different list lengths than {prefix}_{fields[0]}")
            counts = c
        self.counts = counts
        self.event = np.repeat(np.arange(len(counts)), counts)

    def __getitem__(self, field: str) -> np.ndarray:
        return self.cols[field]


def _massless(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """(n, 4) columns E, px, py, pz of massless four-vectors (via the ``vector`` package)."""
    p = vector.array({"pt": pt, "eta": eta, "phi": phi, "mass": np.zeros_like(pt)})
    return np.stack([p.E, p.px, p.py, p.pz], axis=1)


def _first_per_event(event: np.ndarray, ok: np.ndarray, n_events: int) -> np.ndarray:
    """Index of the first entry with ``ok`` per event, −1 where none."""
    out = np.full(n_events, -1, dtype=np.int64)
    idx = np.flatnonzero(ok)[::-1]          # reversed: the first entry is written last
    out[event[idx]] = idx
    return out


def compute_topology_features(events: ak.Array, config: TopologyConfig | None = None):
    """LLF ``[n, 801, 19]`` (None with ``hlf_only``), HLF ``[n, 14]`` and the selection mask.

    ``n`` is the number of selected events (those with an isolated lepton); rows follow the
    input order of the selected events. See the module docstring for the definitions.
    """
    cfg = config or TopologyConfig()
    n = len(events)
    missing = [c for c in cfg.required_columns() if c not in events.fields]
    if missing:
        raise KeyError(f"missing input columns {missing}; check the collection names in the config")
    br = cfg.branches()
    trk = _Collection(events, cfg.track, br[cfg.track])
    pho = _Collection(events, cfg.photon, br[cfg.photon])
    neu = _Collection(events, cfg.neutral, br[cfg.neutral])
    maps = _IsolationMap(cfg, trk, pho, neu, n)
    mask, sel, lep, is_ele = _select_leptons(events, cfg, br, maps, n)
    hlf = _hlf(events, cfg, br, sel, lep, is_ele)
    if cfg.hlf_only:
        return None, hlf, mask
    return _llf(cfg, trk, pho, neu, sel, lep, is_ele, maps, n), hlf, mask


class _IsolationMap:
    """The particles isolation sums run over, concatenated: type 0 tracks (pT above the track
    threshold), 1 photons, 2 neutral hadrons (ET above theirs); ``src`` indexes each entry in
    its collection's flat arrays. Queried through a cone index."""

    def __init__(self, cfg: TopologyConfig, trk, pho, neu, n: int):
        self.cfg = cfg
        t_sel = np.flatnonzero(trk["PT"] > cfg.track_pt_min)
        p_sel = np.flatnonzero(pho["ET"] > cfg.photon_et_min)
        n_sel = np.flatnonzero(neu["ET"] > cfg.neutral_et_min)
        parts = [(trk, t_sel, "PT"), (pho, p_sel, "ET"), (neu, n_sel, "ET")]
        self.evt = np.concatenate([c.event[s] for c, s, _ in parts])
        eta = np.concatenate([c["Eta"][s] for c, s, _ in parts])
        phi = np.concatenate([c["Phi"][s] for c, s, _ in parts])
        self.pt = np.concatenate([c[k][s] for c, s, k in parts])
        self.type = np.repeat(np.array([TRACK, PHOTON, NEUTRAL]),
                              [len(t_sel), len(p_sel), len(n_sel)])
        self.src = np.concatenate([s for _, s, _ in parts])
        self.index = ConeIndex(self.evt, eta, phi, n_events=n, radius=cfg.iso_dr)

    def isolation(self, q_evt, q_eta, q_phi, q_pt, own):
        """(nq, 3) ChPFIso, GammaPFIso, NeuPFIso; map entry ``own[q]`` is left out."""
        qi, mi, _ = self.index.pairs(q_evt, q_eta, q_phi)
        keep = mi != own[qi]
        qi, mi = qi[keep], mi[keep]
        sums = np.bincount(qi * 3 + self.type[mi], weights=self.pt[mi], minlength=3 * len(q_pt))
        sums = sums.reshape(len(q_pt), 3)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(q_pt[:, None] > 0, sums / q_pt[:, None], 0.0)

    def own_track(self, q_evt, q_eta, q_phi):
        """Map index of the nearest track within own_track_dr of each query, −1 if none."""
        own = np.full(len(q_evt), -1, dtype=np.int64)
        qi, mi, dr2 = self.index.pairs(q_evt, q_eta, q_phi,
                                       radius=min(self.cfg.own_track_dr, self.cfg.iso_dr))
        is_trk = self.type[mi] == TRACK
        qi, mi, dr2 = qi[is_trk], mi[is_trk], dr2[is_trk]
        order = np.lexsort((dr2, qi))[::-1]                 # nearest written last
        own[qi[order]] = mi[order]
        return own


def _select_leptons(events, cfg: TopologyConfig, br, maps: _IsolationMap, n: int):
    """The first isolated electron and muon above threshold per event, the higher-pT one kept:
    ``(mask, selected events, lepton columns, is_ele)``."""
    best = {}
    for flavour, prefix in (("ele", cfg.electron), ("mu", cfg.muon)):
        lep = _Collection(events, prefix, br[prefix])
        cand = np.flatnonzero(lep["PT"] > cfg.lepton_pt_min)
        c = {"evt": lep.event[cand], "eta": lep["Eta"][cand], "phi": lep["Phi"][cand],
             "pt": lep["PT"][cand], "charge": lep["Charge"][cand]}
        c["own"] = maps.own_track(c["evt"], c["eta"], c["phi"])
        c["iso"] = maps.isolation(c["evt"], c["eta"], c["phi"], c["pt"], c["own"])
        first = _first_per_event(c["evt"], c["iso"].sum(axis=1) < cfg.iso_max, n)
        has = first >= 0
        f = np.where(has, first, len(cand))                 # len(cand) → the dummy row below
        pad = {"pt": 0.0, "eta": 0.0, "phi": 0.0, "charge": 0.0, "own": -1, "iso": np.zeros((1, 3))}
        best[flavour] = {k: np.concatenate([c[k], np.resize(pad[k], (1,) + c[k].shape[1:])])[f]
                         for k in pad}
        best[flavour]["has"] = has
    e, m = best["ele"], best["mu"]
    use_ele = e["has"] & (~m["has"] | (e["pt"] > m["pt"]))
    mask = e["has"] | m["has"]
    pick = {k: np.where(use_ele[:, None] if e[k].ndim == 2 else use_ele, e[k], m[k])
            for k in ("pt", "eta", "phi", "charge", "iso", "own")}
    sel = np.flatnonzero(mask)
    return mask, sel, {k: v[sel] for k, v in pick.items()}, use_ele[sel].astype(np.float64)


def _hlf(events, cfg, br, sel, lep, is_ele) -> np.ndarray:
    n, ns = len(events), len(sel)
    jet = _Collection(events, cfg.jet, br[cfg.jet])
    good = (jet["PT"] > cfg.jet_pt_min) & (np.abs(jet["Eta"]) < cfg.jet_eta_max)
    ht = np.bincount(jet.event[good], weights=jet["PT"][good], minlength=n)[sel]
    njets = np.bincount(jet.event[good], minlength=n)[sel]
    nb = np.bincount(jet.event[good & (jet["BTag"] > 0)], minlength=n)[sel]
    met = _Collection(events, cfg.met, br[cfg.met])
    first = group_starts(met.event, n)
    has_met = met.counts > 0
    met_v = np.where(has_met, met["MET"][np.minimum(first, len(met.event) - 1)]
                     if len(met.event) else 0.0, 0.0)[sel]
    met_phi = np.where(has_met, met["Phi"][np.minimum(first, len(met.event) - 1)]
                       if len(met.event) else 0.0, 0.0)[sel]
    dphi = delta_phi(met_phi, lep["phi"])
    mt = np.sqrt(np.maximum(2.0 * met_v * lep["pt"] * (1.0 - np.cos(dphi)), 0.0))
    out = np.stack([ht, met_v, delta_phi(met_phi, 0.0), mt, njets, nb, lep["pt"], lep["eta"],
                    lep["phi"], lep["iso"][:, 0], lep["iso"][:, 1], lep["iso"][:, 2],
                    lep["charge"], is_ele], axis=1) if ns else np.zeros((0, 14))
    return out.astype(np.float32)


def _llf(cfg, trk, pho, neu, sel, lep, is_ele, maps: _IsolationMap, n: int):
    """Assemble the (ns, 801, 19) LLF tensor with one scatter."""
    ns = len(sel)
    new_id = np.full(n, -1, dtype=np.int64)
    new_id[sel] = np.arange(ns)
    rows = _kept_particles(cfg, maps, new_id, lep, sel, n)
    cols = {k: [] for k in ("evt", "pt", "eta", "phi", "x", "y", "z", "charge", "cat", "rank")}
    flags = _particle_columns(cols, rows, (trk, pho, neu), maps, new_id)
    flags = np.concatenate([flags, _lepton_columns(cols, trk, lep, is_ele, maps, ns)])
    c = {k: np.concatenate(v) for k, v in cols.items()}
    n_part = len(c["evt"]) - ns
    iso = np.concatenate([maps.isolation(maps.evt[np.concatenate([r[0] for r in rows])],
                                         c["eta"][:n_part], c["phi"][:n_part], c["pt"][:n_part],
                                         _self_index(rows, len(maps.evt))),
                          lep["iso"]])
    feats = np.empty((len(c["evt"]), 19), dtype=np.float32)
    feats[:, 0:4] = _massless(c["pt"], c["eta"], c["phi"])
    feats[:, 4], feats[:, 5], feats[:, 6] = c["pt"], c["eta"], c["phi"]
    feats[:, 7], feats[:, 8], feats[:, 9] = c["x"], c["y"], c["z"]
    feats[:, 10:13] = iso
    feats[:, 13:18] = flags
    feats[:, 18] = c["charge"]
    llf = np.zeros((ns, cfg.n_particles, 19), dtype=np.float32)
    llf[c["evt"], _positions(cfg, c, lep, n_part, ns)] = feats
    return llf


def _kept_particles(cfg, maps: _IsolationMap, new_id, lep, sel, n: int):
    """Per category (tracks, photons, neutral hadrons): the map entries kept (of selected
    events, the lepton's own track left out, at most the category's cap) and their rank
    within their event."""
    ns = len(sel)
    lep_own = np.full(n, -1, dtype=np.int64)
    lep_own[sel] = lep["own"]
    m_idx = np.arange(len(maps.evt))
    in_sel = new_id[maps.evt] >= 0
    rows = []
    for typ, cap in ((TRACK, cfg.max_tracks), (PHOTON, cfg.max_photons),
                     (NEUTRAL, cfg.max_neutrals)):
        ok = in_sel & (maps.type == typ)
        if typ == TRACK:
            ok &= m_idx != lep_own[maps.evt]
        idx = np.flatnonzero(ok)
        rank = rank_in_group(new_id[maps.evt[idx]], ns)
        keep = rank < cap
        rows.append((idx[keep], rank[keep]))
    return rows


def _particle_columns(cols: dict, rows, collections, maps: _IsolationMap, new_id) -> np.ndarray:
    """Append the kept particles' columns to ``cols``; return their 5 type flags."""
    flags = np.zeros((0, 5))
    for (idx, rank), coll, (key, typ) in zip(rows, collections, (("PT", TRACK), ("ET", PHOTON),
                                                                  ("ET", NEUTRAL))):
        src = maps.src[idx]
        cols["evt"].append(new_id[maps.evt[idx]])
        for k, f in (("pt", key), ("eta", "Eta"), ("phi", "Phi")):
            cols[k].append(coll[f][src])
        zeros = np.zeros(len(idx))
        for k, f in (("x", "X"), ("y", "Y"), ("z", "Z"), ("charge", "Charge")):
            cols[k].append(coll[f][src] if typ == TRACK else zeros)
        fl = np.zeros((len(idx), 5))
        if typ == TRACK:
            apid = np.abs(coll["PID"][src])
            fl[:, 3] = apid == 11
            fl[:, 4] = apid == 13
            fl[:, 0] = (apid != 11) & (apid != 13)
        else:
            fl[:, 1 if typ == NEUTRAL else 2] = 1.0
        flags = np.concatenate([flags, fl])
        cols["cat"].append(np.full(len(idx), typ + 1))
        cols["rank"].append(rank)
    return flags


def _lepton_columns(cols: dict, trk, lep, is_ele, maps: _IsolationMap, ns: int) -> np.ndarray:
    """Append the selected lepton's row of each event to ``cols`` (its vertex from its own
    track); return its flags."""
    own = lep["own"]
    has_own = own >= 0
    own_src = np.where(has_own, maps.src[np.maximum(own, 0)] if len(maps.src) else 0, 0)
    cols["evt"].append(np.arange(ns))
    for k, v in (("pt", lep["pt"]), ("eta", lep["eta"]), ("phi", lep["phi"]),
                 ("charge", lep["charge"])):
        cols[k].append(v)
    for k, f in (("x", "X"), ("y", "Y"), ("z", "Z")):
        cols[k].append(np.where(has_own, trk[f][own_src] if len(trk[f]) else 0.0, 0.0))
    cols["cat"].append(np.zeros(ns, dtype=np.int64))
    cols["rank"].append(np.zeros(ns, dtype=np.int64))
    lf = np.zeros((ns, 5))
    lf[:, 3], lf[:, 4] = is_ele, 1.0 - is_ele
    return lf


def _positions(cfg, c: dict, lep, n_part: int, ns: int) -> np.ndarray:
    """Each row's place among its event's 801: by decreasing ΔR to the lepton (the lepton
    last) with ``sort_by_dr``, else lepton, tracks, photons, neutral hadrons by rank."""
    if cfg.sort_by_dr:
        dr = np.hypot(c["eta"] - lep["eta"][c["evt"]], delta_phi(c["phi"], lep["phi"][c["evt"]]))
        # One float key (event major, decreasing ΔR minor) sorts faster than a lexsort; ΔR is
        # clipped to [0, 30] (|Δη| > 27 only for corrupt input); the lepton gets 31: last.
        dr = np.clip(dr, 0.0, 30.0)
        dr[n_part:] = -1.0
        order = np.argsort(c["evt"] * 64.0 + (30.0 - dr), kind="stable")
        pos = np.empty(len(order), dtype=np.int64)
        pos[order] = rank_in_group(c["evt"][order], ns)
    else:
        offset = np.array([0, 1, 1 + cfg.max_tracks, 1 + cfg.max_tracks + cfg.max_photons])
        pos = offset[c["cat"]] + c["rank"]
    return pos


def _self_index(rows, n_map: int) -> np.ndarray:
    """For the isolation of the kept particles: each track excludes itself from ChPFIso."""
    parts = []
    for typ, (idx, _) in enumerate(rows):
        parts.append(idx if typ == TRACK else np.full(len(idx), -1, dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
