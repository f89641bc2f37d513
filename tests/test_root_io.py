"""ROOT ingestion: read_root / the "root" data source against uproot's own reading, partition
plans, every kind of bad input, skip mode, and the ingest job end to end (real files, real Spark)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import awkward as ak
import numpy as np
import pyarrow as pa
import pyspark
import pytest
import uproot

from distkeras.datasets.delphes import generate_delphes
from distkeras.io.errors import BadRootFileError, NoInputFilesError, RootReadError, RootSchemaError
from distkeras.io.root import read_root, register_root_source
from distkeras.io.root_plan import ReadReport, plan_root
from distkeras.io.root_types import column_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPARK4 = int(pyspark.__version__.split(".")[0]) >= 4


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """Delphes-like sample: 3 processes x 2 files x 60 events, clusters of 20 events."""
    out = tmp_path_factory.mktemp("delphes")
    paths = generate_delphes(out, 120, seed=3, events_per_file=60, basket_events=20)
    return out, paths


def write_flat_jagged(path, compression=uproot.ZLIB(1), n=250, step=50, seed=0):
    """uproot-style tree: flat scalars, jagged record (counter nJet), fixed-size array."""
    rng = np.random.default_rng(seed)
    types = {"x": "float64", "i": "int32", "s": "int16", "u": "uint32", "flag": "bool", "big": "int64",
             "vec3": "3 * float32", "Jet": "var * {PT: float32, N: int16}"}
    with uproot.recreate(path, compression=compression) as f:
        t = f.mktree("events", types)
        for start in range(0, n, step):
            k = min(step, n - start)
            counts = rng.integers(0, 5, k)
            m = int(counts.sum())
            t.extend({"x": rng.normal(size=k), "i": rng.integers(-1000, 1000, k, dtype=np.int32),
                      "s": rng.integers(-300, 300, k).astype(np.int16),
                      "u": rng.integers(0, 2**32 - 1, k, dtype=np.uint32), "flag": rng.random(k) < 0.5,
                      "big": rng.integers(-2**40, 2**40, k), "vec3": rng.random((k, 3)).astype(np.float32),
                      "Jet": ak.zip({"PT": ak.unflatten(rng.random(m).astype(np.float32) * 100, counts),
                                     "N": ak.unflatten(rng.integers(0, 30, m).astype(np.int16), counts)})})
    return str(path)


def collect(df):
    """{column: list of python values} in row order (toPandas keeps partition order)."""
    pdf = df.toPandas()
    return {c: [v.tolist() if hasattr(v, "tolist") else v for v in pdf[c]] for c in pdf.columns}


def uproot_values(paths, tree, branches):
    out = {}
    for b in branches:
        vals = []
        for p in paths:
            with uproot.open(p) as f:
                vals.extend(ak.to_list(f[tree][b].array(library="ak")))
        out[column_name(b)] = vals
    return out


def assert_equal_values(got, want):
    assert set(want) <= set(got)
    for col, values in want.items():
        assert len(got[col]) == len(values), col
        assert got[col] == values, f"column {col} differs from uproot"


# ----------------------------------------------------------------------------- values and types
def test_column_name_contract():
    assert column_name("EFlowTrack.PT") == "EFlowTrack_PT"
    assert column_name("Jet_size") == "Jet_size"
    assert column_name("MissingET.MET") == "MissingET_MET"
    assert column_name("a-b c/d[0]") == "a_b_c_d_0_"


def test_flat_jagged_fixed_match_uproot(spark, tmp_path):
    from pyspark.sql import types as T

    path = write_flat_jagged(tmp_path / "flat.root")
    df = read_root(spark, path, "events", partition_entries=100)
    schema = {f.name: f.dataType for f in df.schema.fields}
    assert schema == {
        "nJet": T.IntegerType(), "x": T.DoubleType(), "i": T.IntegerType(), "s": T.ShortType(),
        "u": T.LongType(), "flag": T.BooleanType(), "big": T.LongType(),
        "vec3": T.ArrayType(T.FloatType(), True), "Jet_PT": T.ArrayType(T.FloatType(), True),
        "Jet_N": T.ArrayType(T.ShortType(), True)}
    assert isinstance(schema["Jet_PT"].elementType, T.FloatType)      # float32, not double
    assert isinstance(schema["Jet_N"].elementType, T.ShortType)       # ints keep their width
    assert isinstance(schema["u"], T.LongType)                        # UInt_t widens
    assert df.rdd.getNumPartitions() == 3
    with uproot.open(path) as f:
        branches = list(f["events"].keys())
    assert_equal_values(collect(df), uproot_values([path], "events", branches))


def test_delphes_split_branches_match_uproot(spark, sample):
    _, paths = sample
    df = read_root(spark, paths, "Delphes", ["EFlowTrack.*", "Jet.*", "Jet_size", "MissingET.MET",
                                             "Electron.PT"], partition_entries=45)
    assert df.columns[:8] == ["EFlowTrack_PID", "EFlowTrack_Charge", "EFlowTrack_PT", "EFlowTrack_Eta",
                              "EFlowTrack_Phi", "EFlowTrack_X", "EFlowTrack_Y", "EFlowTrack_Z"]
    assert "Jet_size" in df.columns and "MissingET_MET" in df.columns and "Jet_BTag" in df.columns
    assert df.rdd.getNumPartitions() == 12  # two per file
    want = uproot_values(paths, "Delphes", ["EFlowTrack.PT", "EFlowTrack.PID", "EFlowTrack.Z",
                                            "Jet.PT", "Jet.BTag", "Jet_size", "MissingET.MET", "Electron.PT"])
    assert_equal_values(collect(df.select(*want)), want)


@pytest.mark.parametrize("codec", ["zlib", "lz4", "zstd", "lzma"])
def test_every_codec(spark, tmp_path, codec):
    comp = {"zlib": uproot.ZLIB(4), "lz4": uproot.LZ4(1), "zstd": uproot.ZSTD(3), "lzma": uproot.LZMA(1)}[codec]
    path = write_flat_jagged(tmp_path / f"{codec}.root", compression=comp, n=120, step=40, seed=11)
    with uproot.open(path) as f:  # really compressed with that codec
        assert f.file.fCompress // 100 == {"zlib": 1, "lzma": 2, "lz4": 4, "zstd": 5}[codec]
    got = collect(read_root(spark, path, "events", ["Jet_*", "x", "u"]))
    assert_equal_values(got, uproot_values([path], "events", ["Jet_PT", "Jet_N", "x", "u"]))


def test_root_data_source(spark, sample):
    _, paths = sample
    registered = register_root_source(spark)
    assert registered is SPARK4
    if not SPARK4:  # pyspark 3.5 has no Python data sources: read_root is the API there
        with pytest.raises(Exception):
            spark.read.format("root").option("tree", "Delphes").load(paths[0]).count()
        return
    df = (spark.read.format("root").option("tree", "Delphes").option("branches", "Jet.*,MissingET.MET")
          .option("labels", json.dumps({str(sample[0] / "ttbar" / "*.root"): 1,
                                        str(sample[0] / "qcd" / "*.root"): 0}))
          .option("partitionEntries", "40").load([p for p in paths if "wjets" not in p]))
    assert df.columns == ["Jet_PT", "Jet_Eta", "Jet_Phi", "Jet_Mass", "Jet_BTag", "MissingET_MET", "label"]
    direct = read_root(spark, [p for p in paths if "wjets" not in p], "Delphes", ["Jet.*", "MissingET.MET"],
                       labels={str(sample[0] / "ttbar" / "*.root"): 1, str(sample[0] / "qcd" / "*.root"): 0})
    assert collect(df) == collect(direct)
    assert df.rdd.getNumPartitions() >= 6


# ----------------------------------------------------------------------------- partition plans
@pytest.mark.parametrize("kw", [dict(partition_entries=1), dict(partition_entries=45),
                                dict(partition_entries=250), dict(partition_bytes=200_000), {}])
def test_plan_covers_every_entry_once(sample, kw):
    _, paths = sample
    plan = plan_root(paths, "Delphes", ["Jet.PT", "EFlowPhoton.ET"], **kw)
    seen = {p: np.zeros(60, int) for p in paths}
    for part in plan.partitions:
        for c in part:
            assert c.start < c.stop and c.start % 20 == 0 and (c.stop % 20 == 0 or c.stop == 60)
            seen[c.path][c.start:c.stop] += 1
    assert all((v == 1).all() for v in seen.values())
    assert plan.report.entries == 360 and plan.report.partitions == len(plan.partitions)
    if kw.get("partition_entries") == 250:
        assert len(plan.partitions) == 2                       # small files grouped
        assert {len({c.path for c in p}) for p in plan.partitions} >= {4}
    if kw.get("partition_entries") == 45:                       # one file -> several partitions
        assert sum(1 for p in plan.partitions if p[0].path == paths[0]) == 2


def test_spark_read_covers_every_entry_once(spark, sample):
    _, paths = sample
    df = read_root(spark, paths, "Delphes", ["Jet_size"], source_col="file", entry_col="entry",
                   partition_entries=30)
    assert df.rdd.getNumPartitions() == 18  # clusters of 20 entries: one per partition
    rows = collect(df)
    pairs = list(zip(rows["file"], rows["entry"]))
    assert len(pairs) == len(set(pairs)) == 360
    assert set(pairs) == {(p, e) for p in paths for e in range(60)}
    want = uproot_values(paths, "Delphes", ["Jet_size"])["Jet_size"]
    assert rows["Jet_size"] == want


def test_labels_per_glob(spark, sample):
    out, paths = sample
    labels = {str(out / "qcd" / "*.root"): 0, str(out / "ttbar"): 1, f"file://{out}/wjets/*.root": 2}
    df = read_root(spark, None, "Delphes", "MissingET.MET", labels=labels, source_col="src")
    rows = collect(df)
    for src, label in zip(rows["src"], rows["label"]):
        assert label == {"qcd": 0, "ttbar": 1, "wjets": 2}[os.path.basename(os.path.dirname(src))]
    assert sorted(set(rows["label"])) == [0, 1, 2] and len(rows["label"]) == 360
    with pytest.raises(RootSchemaError, match="matches none of the label patterns"):
        plan_root(paths, "Delphes", "Jet.PT", labels={str(out / "qcd" / "*.root"): 0})
    with pytest.raises(RootSchemaError, match="make the label patterns disjoint"):
        plan_root(None, "Delphes", "Jet.PT", labels={str(out / "qcd" / "*.root"): 0, str(out / "qcd"): 1})


def test_branch_selection_errors(sample, tmp_path):
    _, paths = sample
    plan = plan_root(paths[0], "Delphes", ["MissingET.*", "Jet.P*"])
    assert plan.columns == ["MissingET_MET", "MissingET_Phi", "Jet_PT", "Jet_Phi"]
    with pytest.raises(RootSchemaError, match=r"no branch 'Jet.Pt'.*did you mean \['Jet.PT'") as e:
        plan_root(paths, "Delphes", ["Jet.Pt"])
    assert e.value.path == paths[0] and "Fix:" in str(e.value)
    with pytest.raises(RootSchemaError, match="matches no readable branch"):
        plan_root(paths, "Delphes", ["Muon.*"])
    clash = str(tmp_path / "clash.root")
    with uproot.recreate(clash) as f:
        f.mktree("t", {"a.b": "float32", "a_b": "float32"}).extend({"a.b": np.ones(3, np.float32),
                                                                 "a_b": np.ones(3, np.float32)})
    with pytest.raises(RootSchemaError, match="both map to the Spark column 'a_b'"):
        plan_root(clash, "t")
    with pytest.raises(RootSchemaError, match="both map"):
        plan_root(paths[0], "Delphes", ["Jet_size"], labels={paths[0]: 1}, label_col="Jet_size")


# ----------------------------------------------------------------------------- bad input
@pytest.fixture()
def bad_files(sample, tmp_path):
    """A good file plus one of each kind of broken file."""
    _, paths = sample
    good = tmp_path / "good.root"
    shutil.copy(paths[0], good)
    files = {"good": str(good)}
    (tmp_path / "text.root").write_text("this is not a ROOT file\n" * 40)
    files["text"] = str(tmp_path / "text.root")
    files["truncated"] = str(tmp_path / "truncated.root")
    shutil.copy(good, files["truncated"])
    with open(files["truncated"], "r+b") as f:
        f.truncate(os.path.getsize(good) * 6 // 10)
    files["header"] = str(tmp_path / "header.root")
    shutil.copy(good, files["header"])
    with open(files["header"], "r+b") as f:
        f.seek(100)
        f.write(b"\x5a" * 300)
    files["notree"] = str(tmp_path / "notree.root")
    with uproot.recreate(files["notree"]) as f:
        f.mktree("Other", {"x": "float32"}).extend({"x": np.ones(5, np.float32)})
    files["rntuple"] = str(tmp_path / "rntuple.root")
    with uproot.recreate(files["rntuple"]) as f:
        f["Delphes"] = {"x": np.ones(5, np.float32)}
    files["mismatch"] = str(tmp_path / "mismatch.root")
    with uproot.recreate(files["mismatch"]) as f:
        f.mktree("Delphes", {"Jet": "var * {PT: float64}", "MissingET": "var * {MET: float32}"},
                 field_name=lambda o, i: f"{o}.{i}", counter_name=lambda c: f"{c}_size"
                 ).extend({"Jet": ak.zip({"PT": ak.Array([[1.0], [], [2.0, 3.0]])}),
                           "MissingET": ak.zip({"MET": ak.Array(np.ones((3, 1), np.float32).tolist())})})
    return files


@pytest.mark.parametrize("kind, cls, message", [
    ("text", BadRootFileError, "not a ROOT file"),
    ("truncated", BadRootFileError, "truncated"),
    ("header", BadRootFileError, "corrupt or truncated ROOT file"),
    ("notree", RootSchemaError, r"no TTree named 'Delphes' \(TTrees here: \['Other'\]\)"),
    ("rntuple", RootSchemaError, "is a ROOT::RNTuple, not a TTree"),
    ("mismatch", RootSchemaError, r"branch 'Jet.PT' has type array<double> here but array<float> in .*good.root"),
])
def test_bad_file_raises_naming_file_and_fix(spark, bad_files, kind, cls, message):
    with pytest.raises(cls, match=message) as e:  # from the driver, before any Spark job
        read_root(spark, [bad_files["good"], bad_files[kind]], "Delphes", ["Jet.PT", "MissingET.MET"])
    assert e.value.path == bad_files[kind] and bad_files[kind] in str(e.value) and "Fix:" in str(e.value)
    assert isinstance(e.value, RootReadError) and isinstance(e.value, OSError)


def test_missing_paths(spark, tmp_path):
    with pytest.raises(NoInputFilesError, match="list of input paths is empty"):
        read_root(spark, [], "Delphes")
    with pytest.raises(NoInputFilesError, match="matched no file") as e:
        read_root(spark, str(tmp_path / "nothing" / "*.root"), "Delphes")
    assert "nothing" in e.value.path
    with pytest.raises(NoInputFilesError, match="no such file"):
        read_root(spark, str(tmp_path / "missing.root"), "Delphes")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(NoInputFilesError, match="matched no file"):
        read_root(spark, str(tmp_path / "empty_dir"), "Delphes")


def test_unreadable_permissions(sample):
    """Planning reports an unreadable file (in a subprocess without root's file-mode override)."""
    d = tempfile.mkdtemp(prefix="dk-perm-")
    try:
        os.chmod(d, 0o755)
        path = os.path.join(d, "secret.root")
        shutil.copy(sample[1][0], path)
        os.chmod(path, 0)
        code = ("from distkeras.io.root_plan import plan_root\n"
                "from distkeras.io.errors import BadRootFileError\n"
                f"try:\n    plan_root({path!r}, 'Delphes')\n"
                "except BadRootFileError as e:\n    print('CAUGHT', e)\n")
        # root reads anything: drop the capabilities that let it ignore file modes
        drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                "--inh-caps=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
        res = subprocess.run(drop + [sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
        assert f"CAUGHT {path}: permission denied" in res.stdout, res.stderr[-2000:]
        assert "chmod" in res.stdout
    finally:
        shutil.rmtree(d)


def test_skip_mode_reports_every_file(spark, bad_files, caplog):
    order = ["text", "good", "truncated", "header", "notree", "rntuple", "mismatch"]
    report = ReadReport()
    with caplog.at_level(logging.WARNING, logger="distkeras.io.root_plan"):
        df = read_root(spark, [bad_files[k] for k in order], "Delphes", ["Jet.PT", "MissingET.MET"],
                       on_bad_file="skip", report=report)
    assert df.count() == 60
    skipped = {s.path: s for s in report.skipped}
    assert set(skipped) == {bad_files[k] for k in order if k != "good"}
    assert skipped[bad_files["mismatch"]].entries_lost == 3       # tree readable: events known
    assert skipped[bad_files["text"]].entries_lost is None          # unopenable: unknown
    assert report.files == [bad_files["good"]] and report.entries == 60
    assert report.entries_lost == 3
    for k in order[2:]:
        assert any(bad_files[k] in r.getMessage() for r in caplog.records), k
    assert any("6 input(s) skipped" in r.getMessage() for r in caplog.records)
    assert "events lost" in report.summary()
    with pytest.raises(BadRootFileError, match="not a ROOT file"):  # all bad: still an error
        read_root(spark, [bad_files["text"]], "Delphes", on_bad_file="skip")


def test_corrupt_basket_found_in_executor(spark, sample, tmp_path):
    _, paths = sample
    path = str(tmp_path / "basket.root")
    shutil.copy(paths[0], path)
    with uproot.open(path) as f:
        b = f["Delphes"]["EFlowTrack.PID"]
        seek = int(b.member("fBasketSeek")[1])
        size = int(b.member("fBasketBytes")[1])
    with open(path, "r+b") as f:
        f.seek(seek + size // 2)
        f.write(os.urandom(64))
    with uproot.open(path) as f, pytest.raises(Exception):  # the damage is real
        f["Delphes"]["EFlowTrack.PID"].array(entry_start=20, entry_stop=40)
    with pytest.raises(Exception, match=r"basket\.root: failed reading entries \[20, 40\)"):
        read_root(spark, path, "Delphes", ["EFlowTrack.PID"], partition_entries=20).count()
    report = ReadReport()
    df = read_root(spark, path, "Delphes", ["EFlowTrack.PID"], partition_entries=20, on_bad_file="skip",
                   report=report, entry_col="entry")
    entries = sorted(r.entry for r in df.select("entry").collect())
    assert entries == list(range(20)) + list(range(40, 60))
    assert [(s.path, s.entry_range, s.entries_lost) for s in report.runtime_skipped] == [(path, (20, 40), 20)]
    assert report.entries_lost == 20 and "failed reading entries" not in report.summary()


def test_arrow_batches_exact_types(sample):
    """Executors yield batches whose schema equals the declared one (32-bit list offsets)."""
    from distkeras.io.root_types import read_chunks

    plan = plan_root(sample[1][:2], "Delphes", ["EFlowTrack.PT", "Jet.BTag", "Jet_size"],
                     labels={sample[1][0]: 0, sample[1][1]: 1}, source_col="f", partition_entries=50)
    want = plan.spec.arrow_schema()
    batches = [b for part in plan.partitions for b in read_chunks(part, plan.spec)]
    assert sum(b.num_rows for b in batches) == 120
    for b in batches:
        assert b.schema.equals(want)
        assert b.schema.field("EFlowTrack_PT").type == pa.list_(pa.float32())
        assert b.column(0).offsets.type == pa.int32()


# ----------------------------------------------------------------------------- the job
def test_ingest_job_end_to_end(spark, tmp_path):
    out = tmp_path / "events.parquet"
    env = {**os.environ, "PYTHONPATH": REPO, "SPARK_LOCAL_IP": "127.0.0.1"}
    res = subprocess.run([sys.executable, "jobs/ingest.py", "--generate", "40", "--generate-dir",
                          str(tmp_path / "gen"), "--output", str(out), "--master", "local[1]",
                          "--branches", "Jet.*,MissingET.*", "--partition-entries", "25",
                          "--source-col", "file"],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ingested 3 file(s), 120 events" in res.stdout and "rows/s" in res.stdout
    assert "reading 3 file(s), 120 events" in res.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    assert table.num_rows == 120
    assert table.column_names == ["Jet_PT", "Jet_Eta", "Jet_Phi", "Jet_Mass", "Jet_BTag",
                                  "MissingET_MET", "MissingET_Phi", "label", "file"]
    labels = dict(zip(table.column("file").to_pylist(), table.column("label").to_pylist()))
    assert {os.path.basename(k): v for k, v in labels.items()} == {"qcd_000.root": 0, "ttbar_000.root": 1,
                                                                  "wjets_000.root": 2}
    # 40-event files are one cluster each (basket_events=1000), so one partition per file
    assert len([f for f in os.listdir(out) if f.endswith(".parquet")]) == 3
    # bad input: a clear one-line error and exit code 2, not a Py4J stack
    bad = tmp_path / "bad.root"
    bad.write_text("garbage")
    res = subprocess.run([sys.executable, "jobs/ingest.py", str(bad), "-o", str(tmp_path / "x"),
                          "--master", "local[1]"], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"{bad}: not a ROOT file" in res.stderr and "Traceback" not in res.stderr
    assert "SparkContext" not in res.stderr and "log4j" not in res.stderr  # failed before Spark started


def test_ingest_job_help():
    res = subprocess.run([sys.executable, "jobs/ingest.py", "--help"], capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, timeout=60)
    assert res.returncode == 0
    for opt in ("--output", "--tree", "--branches", "--label", "--on-bad-file", "--partitions",
                "--partition-mb", "--partition-entries", "--rows-per-file", "--master", "--generate",
                "--source-col", "--compression", "--overwrite", "--seed"):
        assert opt in res.stdout, opt


@pytest.mark.parametrize("engine", ["arrow", "spark"])
def test_write_parquet_engines(spark, sample, tmp_path, engine):
    from distkeras.io.ingest import write_parquet

    _, paths = sample
    plan = plan_root(paths[:2], "Delphes", ["Jet.PT", "Jet.BTag", "Jet_size"], entry_col="entry",
                     source_col="file", partition_entries=60)
    out = str(tmp_path / "pq")
    summary = write_parquet(spark, plan, out, engine=engine, rows_per_file=25)
    assert summary.events == 120 and summary.files == 2 and summary.output_bytes > 0
    files = sorted(f for f in os.listdir(out) if f.endswith(".parquet"))
    assert len(files) == 6 and os.path.exists(os.path.join(out, "_SUCCESS"))   # 25+25+10 per file
    assert not os.path.exists(os.path.join(out, "_temporary"))
    back = spark.read.parquet(out)
    direct = read_root(spark, paths[:2], "Delphes", ["Jet.PT", "Jet.BTag", "Jet_size"],
                       entry_col="entry", source_col="file")
    assert back.schema.simpleString() == direct.schema.simpleString()
    assert collect(back.orderBy("file", "entry")) == collect(direct)
    with pytest.raises(Exception, match="exists|already exists"):
        write_parquet(spark, plan, out, engine=engine)
    assert write_parquet(spark, plan, out, engine=engine, mode="overwrite").events == 120


def test_arrow_engine_dictionary_only_for_integer_columns(spark, sample, tmp_path):
    """Float branches are written plain (a dictionary of near-unique floats only costs time and
    bytes); integer branches and the file name keep their dictionary."""
    import pyarrow.parquet as pq

    from distkeras.io.ingest import write_parquet

    _, paths = sample
    plan = plan_root(paths[:1], "Delphes", ["Jet.PT", "Jet.BTag", "Jet_size"], source_col="file")
    out = str(tmp_path / "pq")
    write_parquet(spark, plan, out)
    meta = pq.ParquetFile(next(os.path.join(out, f) for f in os.listdir(out)
                               if f.endswith(".parquet"))).metadata
    chunks = {meta.schema.column(i).path: meta.row_group(0).column(i)
              for i in range(meta.num_columns)}
    dictionary = {path: any("DICTIONARY" in e for e in c.encodings) for path, c in chunks.items()}
    assert dictionary == {"Jet_PT.list.element": False, "Jet_BTag.list.element": True,
                          "Jet_size": True, "file": True}, dictionary
