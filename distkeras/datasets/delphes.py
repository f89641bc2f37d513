"""A Delphes-like sample generator: real ROOT TTrees named ``Delphes`` with Delphes branch names
(``EFlowTrack.PT``, counter ``EFlowTrack_size``, ...) for three processes, QCD (label 0),
tt̄ (1) and W+jets (2), written with uproot's ``mktree`` + ``extend`` (TTrees, not RNTuple).

The physics is a toy but a plausible one: W leptons come from a real W → ℓν decay (Jacobian
peaks in lepton pT and MT, neutrino MET), tt̄ adds two b-jets and two light jets, QCD leptons are
soft, mostly non-isolated heavy-flavour/fake leptons with a collinear neutrino, and every event
has underlying-event particles, jet constituents and a lepton isolation cone in the EFlow
collections (the lepton's own track included, as Delphes does). Knobs are in the tables below.

Example::

    paths = generate_delphes("sample", n_events=10_000, seed=1)   # 10k events per process
    # sample/qcd/qcd_000.root, sample/ttbar/ttbar_000.root, sample/wjets/wjets_000.root

CLI: ``distkeras-generate OUT_DIR -n 10000`` or ``python -m distkeras.datasets.delphes ...``.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

# ============================================================================ physics knobs
# EFlow multiplicity per event: min + (max - min) * Beta(a, b), the Beta shape per process.
MULTIPLICITY = {"EFlowTrack": (160, 470), "EFlowPhoton": (230, 580), "EFlowNeutralHadron": (210, 430)}
# Underlying-event particles: pT (ET) = offset + Exponential(scale) [GeV]; |eta| < eta_max.
UE = {"EFlowTrack": (0.1, 0.9, 2.5), "EFlowPhoton": (0.0, 0.7, 3.0), "EFlowNeutralHadron": (0.0, 1.0, 3.0)}
# Jet constituents: count = base + Poisson(jet pT / per_gev), share of the jet pT, spread in dR.
JET_CONSTITUENTS = {"EFlowTrack": (3, 8.0, 0.60), "EFlowPhoton": (2, 12.0, 0.25),
                    "EFlowNeutralHadron": (1, 20.0, 0.15)}
JET_SPREAD = 0.10          # sigma of constituent (eta, phi) around the jet axis
BTAG_EFF, MISTAG = 0.70, 0.02
W_MASS, W_WIDTH = 80.4, 2.1
LEPTON_ETA_MAX, LEPTON_PT_MIN = 2.5, 10.0
MET_NOISE = (8.0, 0.04)    # sigma per MET component = a + b * (scalar sum of jet pT)
PV_Z_SIGMA, PILEUP_FRACTION = 45.0, 0.4   # mm; fraction of UE tracks from other vertices


@dataclass(frozen=True)
class Process:
    label: int
    mult_beta: tuple[float, float]     # EFlow multiplicity Beta(a, b)
    hard_jets: int                     # jets from the hard process
    b_jets: int                        # of which true b-jets
    b_prob: float                      # chance that another hard jet is a b (heavy flavour)
    hard_jet_pt: tuple[float, float]   # 20 GeV + Gamma(shape, scale)
    extra_jets: float                  # Poisson mean of ISR/FSR jets
    extra_jet_pt: float                # 20 GeV + Exponential(scale)
    jet_eta_sigma: float
    w_pt: tuple[float, float] | None   # prompt lepton from W with pT ~ Gamma(shape, scale); None: non-prompt
    lepton_pt: tuple[float, float]     # non-prompt lepton pT = a + Exponential(b)
    iso_prompt: float                  # prompt relIso target ~ Exponential(mean)
    iso_isolated_frac: float           # non-prompt: fraction in the isolated-looking component
    iso_nonprompt: tuple[float, float]  # (mean of isolated component, median of non-isolated one)


PROCESSES = {
    #                label  mult      hard b  b_prob hard_pt     extra  extra_pt eta  W pT        lep pT      iso
    "qcd":   Process(0, (4.0, 4.0), 2, 0, 0.20, (1.8, 25.0), 1.2, 25.0, 1.8, None, (14.0, 18.0), 0.05, 0.55, (0.08, 0.8)),
    "ttbar": Process(1, (5.0, 4.0), 4, 2, 0.00, (2.2, 22.0), 0.6, 25.0, 1.5, (2.0, 25.0), (0, 0), 0.05, 0, (0, 0)),
    "wjets": Process(2, (3.0, 5.0), 0, 0, 0.00, (2.0, 20.0), 1.5, 35.0, 2.0, (1.5, 15.0), (0, 0), 0.05, 0, (0, 0)),
}

# Branch layout: collection -> {field: type}; counters are <collection>_size (Int_t).
BRANCHES = {
    "EFlowTrack": {"PID": "int32", "Charge": "int32", "PT": "float32", "Eta": "float32",
                   "Phi": "float32", "X": "float32", "Y": "float32", "Z": "float32"},
    "EFlowPhoton": {"ET": "float32", "Eta": "float32", "Phi": "float32"},
    "EFlowNeutralHadron": {"ET": "float32", "Eta": "float32", "Phi": "float32"},
    "Electron": {"PT": "float32", "Eta": "float32", "Phi": "float32", "Charge": "int32"},
    "MuonTight": {"PT": "float32", "Eta": "float32", "Phi": "float32", "Charge": "int32"},
    "Jet": {"PT": "float32", "Eta": "float32", "Phi": "float32", "Mass": "float32", "BTag": "uint32"},
    "MissingET": {"MET": "float32", "Phi": "float32"},
}
COMPRESSIONS = {"zlib": "ZLIB", "lz4": "LZ4", "zstd": "ZSTD", "lzma": "LZMA"}
# ==========================================================================================


def _wrap(phi):
    return np.mod(phi + np.pi, 2 * np.pi) - np.pi


def _eta(px, py, pz):
    return np.arcsinh(pz / np.hypot(px, py))


def _segments(counts):
    """(event index, position within event) for a flat array laid out by counts."""
    idx = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    return idx, np.arange(idx.size) - starts[idx]


def _shares(rng, owner, n_owners, totals):
    """Split totals[owner] among the items of each owner with exponential weights."""
    w = rng.exponential(1.0, owner.size)
    norm = np.bincount(owner, w, minlength=n_owners)
    return totals[owner] * w / np.where(norm > 0, norm, 1.0)[owner]


def _w_decay(rng, n, pt_shape, pt_scale):
    """Lepton and neutrino (pT, eta, phi) from W -> l nu, W pT ~ Gamma, isotropic decay."""
    m = np.clip(W_MASS + W_WIDTH * rng.standard_cauchy(n), 60.0, 100.0)
    pt, y, phi = rng.gamma(pt_shape, pt_scale, n), rng.normal(0, 1.2, n), rng.uniform(-np.pi, np.pi, n)
    mt = np.hypot(m, pt)
    w = np.stack([mt * np.cosh(y), pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y)])
    cos, ph = rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n)
    sin, ps = np.sqrt(1 - cos**2), m / 2
    lep_r = np.stack([ps, ps * sin * np.cos(ph), ps * sin * np.sin(ph), ps * cos])
    beta = w[1:] / w[0]
    gamma = w[0] / m
    bp = (beta * lep_r[1:]).sum(0)
    b2 = (beta**2).sum(0)
    p = lep_r[1:] + ((gamma - 1) * bp / np.where(b2 > 0, b2, 1) + gamma * lep_r[0]) * beta
    nu = w[1:] - p
    return (np.hypot(p[0], p[1]), _eta(*p), np.arctan2(p[1], p[0]),
            np.hypot(nu[0], nu[1]), np.arctan2(nu[1], nu[0]))


def _jets(rng, proc: Process, n: int):
    nj = proc.hard_jets + rng.poisson(proc.extra_jets, n)
    ev, k = _segments(nj)
    hard = k < proc.hard_jets
    pt = 20.0 + np.where(hard, rng.gamma(*proc.hard_jet_pt, ev.size), rng.exponential(proc.extra_jet_pt, ev.size))
    is_b = (hard & (k < proc.b_jets)) | (hard & (rng.random(ev.size) < proc.b_prob))
    btag = np.where(is_b, rng.random(ev.size) < BTAG_EFF, rng.random(ev.size) < MISTAG)
    order = np.lexsort((-pt, ev))  # Delphes orders jets by decreasing pT
    eta = np.clip(rng.normal(0, proc.jet_eta_sigma, ev.size), -4.5, 4.5)
    jets = {"PT": pt[order], "Eta": eta, "Phi": rng.uniform(-np.pi, np.pi, ev.size),
            "Mass": pt[order] * np.clip(rng.normal(0.13, 0.04, ev.size), 0.02, None),
            "BTag": btag[order].astype(np.uint32)}
    return nj, ev, jets


def _lepton(rng, proc: Process, n: int):
    nu_pt, nu_phi = np.zeros(n), np.zeros(n)
    if proc.w_pt is not None:
        pt, eta, phi, nu_pt, nu_phi = _w_decay(rng, n, *proc.w_pt)
        iso = rng.exponential(proc.iso_prompt, n)
        z0 = np.zeros(n)
    else:  # heavy-flavour / fake lepton with a collinear neutrino from the semileptonic decay
        pt = proc.lepton_pt[0] + rng.exponential(proc.lepton_pt[1], n)
        eta, phi = rng.normal(0, 1.2, n), rng.uniform(-np.pi, np.pi, n)
        nu_pt, nu_phi = rng.exponential(0.5, n) * pt, phi + rng.normal(0, 0.15, n)
        mean_iso, median_noniso = proc.iso_nonprompt
        iso = np.where(rng.random(n) < proc.iso_isolated_frac, rng.exponential(mean_iso, n),
                       median_noniso * rng.lognormal(0, 0.6, n))
        z0 = rng.exponential(0.3, n)  # displaced by the b lifetime (mm)
    lep = {"PT": pt, "Eta": eta, "Phi": _wrap(phi), "Charge": rng.choice(np.array([-1, 1], np.int32), n),
           "is_e": rng.random(n) < 0.5, "iso": iso, "d0": z0}
    has = (np.abs(eta) < LEPTON_ETA_MAX) & (pt > LEPTON_PT_MIN)
    return has, lep, nu_pt, _wrap(nu_phi)


def _particles(rng, proc, n, coll, nj, jev, jets, has_lep, lep, pv_z):
    """EFlow collection: jet constituents + lepton cone (+ lepton track) + underlying event."""
    lo, hi = MULTIPLICITY[coll]
    total = lo + np.round((hi - lo) * rng.beta(*proc.mult_beta, n)).astype(np.int64)
    base, per_gev, frac = JET_CONSTITUENTS[coll]
    # jet constituents
    ncj = base + rng.poisson(jets["PT"] / per_gev)
    cj_jet, _ = _segments(ncj)
    cj_ev = jev[cj_jet]
    cj_pt = _shares(rng, cj_jet, nj.sum(), jets["PT"] * frac)
    cj_eta = jets["Eta"][cj_jet] + rng.normal(0, JET_SPREAD, cj_jet.size)
    cj_phi = jets["Phi"][cj_jet] + rng.normal(0, JET_SPREAD, cj_jet.size)
    # isolation cone around the lepton: the category's share of iso * pT within dR < 0.3
    share = {"EFlowTrack": 0.55, "EFlowPhoton": 0.25, "EFlowNeutralHadron": 0.20}[coll]
    iso_sum = np.where(has_lep, lep["iso"] * lep["PT"] * share * rng.uniform(0.5, 1.5, n), 0.0)
    ncone = np.where(has_lep, 1 + rng.poisson(1.0 + 6.0 * np.minimum(lep["iso"], 1.5)), 0)
    cc_ev, _ = _segments(ncone)
    cc_pt = _shares(rng, cc_ev, n, iso_sum)
    r, a = 0.29 * np.sqrt(rng.random(cc_ev.size)), rng.uniform(-np.pi, np.pi, cc_ev.size)
    cc_eta, cc_phi = lep["Eta"][cc_ev] + r * np.cos(a), lep["Phi"][cc_ev] + r * np.sin(a)
    # the lepton's own track
    own = np.flatnonzero(has_lep) if coll == "EFlowTrack" else np.zeros(0, np.int64)
    # underlying event fills up to the sampled multiplicity
    nue = np.maximum(total - np.bincount(cj_ev, minlength=n) - ncone - (has_lep if coll == "EFlowTrack" else 0), 0)
    ue_ev, _ = _segments(nue)
    off, scale, eta_max = UE[coll]
    ue_pt = off + rng.exponential(scale, ue_ev.size)
    ue_eta, ue_phi = rng.uniform(-eta_max, eta_max, ue_ev.size), rng.uniform(-np.pi, np.pi, ue_ev.size)

    ev = np.concatenate([cj_ev, cc_ev, own, ue_ev])
    order = np.argsort(ev, kind="stable")
    counts = np.bincount(ev, minlength=n)
    kind = np.concatenate([np.zeros(cj_ev.size + cc_ev.size, np.int8), np.ones(own.size, np.int8),
                           np.full(ue_ev.size, 2, np.int8)])[order]
    ev = ev[order]
    pt = np.concatenate([cj_pt, cc_pt, lep["PT"][own], ue_pt])[order]
    eta = np.concatenate([cj_eta, cc_eta, lep["Eta"][own], ue_eta])[order]
    phi = _wrap(np.concatenate([cj_phi, cc_phi, lep["Phi"][own], ue_phi])[order])
    if coll != "EFlowTrack":
        return counts, {"ET": pt, "Eta": eta, "Phi": phi}
    m = ev.size
    charge = rng.choice(np.array([-1, 1], np.int32), m)
    hadron = rng.choice(np.array([211, 321, 2212], np.int32), m, p=[0.8, 0.12, 0.08])
    own_sorted = kind == 1
    charge[own_sorted] = lep["Charge"][ev[own_sorted]]
    lep_pid = np.where(lep["is_e"], 11, 13)[ev]
    pid = np.where(own_sorted, -lep_pid * charge, hadron * charge).astype(np.int32)
    pileup = (kind == 2) & (rng.random(m) < PILEUP_FRACTION)
    z = np.where(pileup, rng.normal(0, PV_Z_SIGMA, m), pv_z[ev] + rng.normal(0, 0.05, m))
    d0 = np.where(own_sorted, lep["d0"][ev], 0.0) + rng.normal(0, 0.015, m)
    return counts, {"PID": pid, "Charge": charge, "PT": pt, "Eta": eta, "Phi": phi,
                    "X": d0 * np.cos(phi), "Y": d0 * np.sin(phi), "Z": z}


def _jagged(counts, fields: dict, types: dict):
    """An awkward var * {fields} array from flat numpy fields and per-event counts."""
    import awkward as ak

    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    contents = [ak.contents.NumpyArray(np.ascontiguousarray(fields[k], dtype=types[k])) for k in types]
    record = ak.contents.RecordArray(contents, list(types), length=int(offsets[-1]))
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record))


def generate_block(process: str, n: int, rng: np.random.Generator) -> dict:
    """One block of ``n`` events of ``process`` as {collection: awkward array} for ``extend``."""
    proc = PROCESSES[process]
    nj, jev, jets = _jets(rng, proc, n)
    has_lep, lep, nu_pt, nu_phi = _lepton(rng, proc, n)
    pv_z = rng.normal(0, PV_Z_SIGMA, n)
    out = {"Jet": _jagged(nj, jets, BRANCHES["Jet"])}
    for coll in ("EFlowTrack", "EFlowPhoton", "EFlowNeutralHadron"):
        counts, fields = _particles(rng, proc, n, coll, nj, jev, jets, has_lep, lep, pv_z)
        out[coll] = _jagged(counts, fields, BRANCHES[coll])
    for coll, flag in (("Electron", lep["is_e"]), ("MuonTight", ~lep["is_e"])):
        sel = has_lep & flag
        out[coll] = _jagged(sel.astype(np.int64), {k: v[sel] for k, v in lep.items()}, BRANCHES[coll])
    sumpt = np.bincount(jev, jets["PT"], minlength=n)
    sigma = MET_NOISE[0] + MET_NOISE[1] * sumpt
    mx = nu_pt * np.cos(nu_phi) + rng.normal(0, 1, n) * sigma
    my = nu_pt * np.sin(nu_phi) + rng.normal(0, 1, n) * sigma
    out["MissingET"] = _jagged(np.ones(n, np.int64), {"MET": np.hypot(mx, my), "Phi": np.arctan2(my, mx)},
                               BRANCHES["MissingET"])
    return out


def _compression(spec):
    import uproot

    if spec is None or not isinstance(spec, str):
        return spec
    name, _, level = spec.partition(":")
    if name.lower() not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)} (optionally ':level'), not {spec!r}")
    cls = getattr(uproot, COMPRESSIONS[name.lower()])
    return cls(int(level)) if level else cls(1 if name.lower() != "lzma" else 1)


def generate_delphes(out_dir: str | os.PathLike, n_events: int,
                     processes: Sequence[str] = ("qcd", "ttbar", "wjets"), seed: int = 42,
                     events_per_file: int = 10_000, compression: str | object = "zstd:1",
                     basket_events: int = 1000) -> list[str]:
    """Write ``n_events`` events **per process** as ``out_dir/<process>/<process>_NNN.root``.

    Each file holds a TTree ``Delphes``; every ``basket_events`` events form one basket
    (cluster) per branch. ``compression``: ``"zlib"``, ``"lz4"``, ``"zstd"``, ``"lzma"``
    (``":level"`` optional) or an uproot compression object. The output depends only on
    ``seed`` (and the sizes), not on the machine. Returns the written paths.

    >>> paths = generate_delphes("/tmp/sample", 2000, seed=7, events_per_file=1000)  # doctest: +SKIP
    """
    import uproot

    if n_events < 0 or events_per_file < 1 or basket_events < 1:
        raise ValueError("n_events must be >= 0, events_per_file and basket_events >= 1")
    unknown = [p for p in processes if p not in PROCESSES]
    if unknown:
        raise ValueError(f"unknown process(es) {unknown}; choose from {list(PROCESSES)}")
    codec = _compression(compression)
    types = {coll: "var * {" + ", ".join(f"{k}: {t}" for k, t in fields.items()) + "}"
             for coll, fields in BRANCHES.items()}
    paths = []
    for process in processes:
        pindex = list(PROCESSES).index(process)
        os.makedirs(os.path.join(out_dir, process), exist_ok=True)
        n_files = max(1, -(-n_events // events_per_file))
        for fi in range(n_files):
            path = os.path.join(out_dir, process, f"{process}_{fi:03d}.root")
            todo = min(events_per_file, n_events - fi * events_per_file)
            t0 = time.perf_counter()
            with uproot.recreate(path, compression=codec) as f:
                tree = f.mktree("Delphes", types, title="Analysis tree (distkeras Delphes-like sample)",
                                field_name=lambda outer, inner: f"{outer}.{inner}",
                                counter_name=lambda counted: f"{counted}_size")
                for bi, start in enumerate(range(0, todo, basket_events)):
                    rng = np.random.default_rng([seed, pindex, fi, bi])
                    tree.extend(generate_block(process, min(basket_events, todo - start), rng))
            log.info("wrote %s (%d events, %.1f s)", path, todo, time.perf_counter() - t0)
            paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``distkeras-generate OUT_DIR -n N [--processes qcd ttbar wjets] [--seed S] ...``."""
    ap = argparse.ArgumentParser(prog="distkeras-generate", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("out_dir", help="output directory (one sub-directory per process)")
    ap.add_argument("-n", "--events", type=int, default=10_000, help="events per process")
    ap.add_argument("--processes", nargs="+", default=list(PROCESSES), choices=list(PROCESSES))
    ap.add_argument("--seed", type=int, default=42, help="random seed (output is deterministic)")
    ap.add_argument("--events-per-file", type=int, default=10_000)
    ap.add_argument("--basket-events", type=int, default=1000, help="events per basket/cluster")
    ap.add_argument("--compression", default="zstd:1", help="zlib|lz4|zstd|lzma, optionally :level")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    t0 = time.perf_counter()
    paths = generate_delphes(args.out_dir, args.events, args.processes, seed=args.seed,
                             events_per_file=args.events_per_file, compression=args.compression,
                             basket_events=args.basket_events)
    print(f"wrote {len(paths)} file(s), {args.events} events per process, "
          f"in {time.perf_counter() - t0:.1f} s under {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
