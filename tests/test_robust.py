"""Nothing stale, nothing silent (issue 10), as a hostile but fair user tries it: corrected and added prices flow
through every derived table; truncated and corrupt artefacts are repaired by the jobs that train them and refused,
with the repairing command, by the ones that do not; failures exit 2 and say what served instead; OS, DuckDB and
checkpoint errors are one line; a bad pilot is contained; dates are checked first; `stock-twins check`; and the
smaller defects. Each test names the numbered defect of the issue it guards. The kill-at-each-step suite is slow."""
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_eq as _eq

from stock_twins.checkpoint import payload_path, record_path, save_artifact, artifact_stem
from stock_twins.cli import main
from stock_twins.data import load_sample, load_sample_index
from stock_twins.store import Store

TICKERS = ["AAPL", "MSFT", "KO", "JNJ", "GE"]          # four pilots (twins) and GE (the fallback)
CONFIG = """data:
  checkpoint_dir: {root}/ck
main:
  out_dir: {root}/reports
  tiny: true
  epochs: 1
  train_years: 0.1
  embed_days: 60
  fallback_years: 2.0
  fallback_rounds: 10
twins:
  window_months: 2
  max_epochs: 3
  patience: 2
  n_jobs: 1
serve:
  snapshot_dir: {root}/snapshot
agents:
  report_dir: {root}/daily
"""

def cli(ws: Path, *args):
    "`stock-twins --config ws/c.yaml --store ws/st.duckdb ARGS` in this process: (exit code, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err): rc = main(["--config", str(ws / "c.yaml"), "--store", str(ws / "st.duckdb"), *map(str, args)])
    return rc, out.getvalue(), err.getvalue()

def _one_line(rc, err, code=2):
    "An error that reached the user as the CLI's one line, not a traceback."
    assert rc == code and "Traceback" not in err and err.strip().splitlines()[-1].startswith("stock-twins "), (rc, err[-2000:])

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    "The main job once on five sample stocks since 2018 with tiny models (about 30 s); each test works on a copy."
    d = tmp_path_factory.mktemp("built")
    s, ix = load_sample(), load_sample_index()
    s[s.ticker.isin(TICKERS) & (s.date >= "2018-01-01")].to_parquet(d / "p.parquet")
    ix[ix.date >= "2018-01-01"].to_parquet(d / "idx.parquet")
    (d / "c.yaml").write_text(CONFIG.format(root=d))
    rc, out, err = cli(d, "main", "--source", d / "p.parquet", "--index", d / "idx.parquet")
    assert rc == 0, out[-3000:] + err[-3000:]
    return d

@pytest.fixture
def ws(built, tmp_path):
    "A private copy of the built workspace, its config pointing at the copy."
    w = tmp_path / "ws"
    shutil.copytree(built, w)
    (w / "c.yaml").write_text(CONFIG.format(root=w))
    return w

def _files(root: Path) -> set:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file() and ".jobs.lock" not in p.name}

# ---------------------------------------------------------------- 1. derived data follows its inputs
def test_corrected_price_flows_through_features_labels_graphs_embeddings_twins(ws):
    "Defect 1: `features` said 'already up to date' after AAPL 2022-12-20 was corrected (131.916 -> 197.874), its ret_1 unchanged."
    with Store(ws / "st.duckdb", read_only=True) as st:
        p = st.read("prices", ["AAPL"], "2022-12-01")
        f0 = st.read("features", ["AAPL"], "2022-12-19", "2022-12-21").set_index("date")
        l0 = st.read("labels", ["AAPL"], "2022-12-13", "2022-12-13")
        g0 = st.read("graph_edges", where={"date": pd.Timestamp("2022-12-27")})
        e0 = st.read("embeddings", ["AAPL"], "2022-12-28", "2022-12-28")
    p.loc[p.date == "2022-12-20", "adj_close"] = 197.874
    p[["date", "ticker", "adj_close"]].to_csv(ws / "fix.csv", index=False)
    rc, out, err = cli(ws, "ingest", "--source", ws / "fix.csv"); _eq(rc, 0)
    rc, out, err = cli(ws, "features")
    assert rc == 0 and "features: inputs changed for 1 tickers (AAPL)" in out and "labels: inputs changed for 1 tickers (AAPL)" in out, out
    rc, out, err = cli(ws, "graph")
    assert rc == 0 and "1 rebuilt: prices in their window changed, from 2022-12-27" in out, out
    rc, out, err = cli(ws, "retrain")
    assert rc == 0 and "embedded again: their prices or index changed" in out and "4 trained" in out, out + err
    assert "retrained: its inputs changed since it was trained" in out, out
    with Store(ws / "st.duckdb", read_only=True) as st:
        f1 = st.read("features", ["AAPL"], "2022-12-19", "2022-12-21").set_index("date")
        l1 = st.read("labels", ["AAPL"], "2022-12-13", "2022-12-13")
        g1 = st.read("graph_edges", where={"date": pd.Timestamp("2022-12-27")})
        e1 = st.read("embeddings", ["AAPL"], "2022-12-28", "2022-12-28")
        from stock_twins.config import load_config
        from stock_twins.features import compute_features
        from stock_twins.pipeline import job_config
        full = compute_features(st.prices(), st.index_prices(job_config(load_config(ws / "c.yaml"), st, build=False)[0]))
    np.testing.assert_allclose(f1.loc["2022-12-20", "ret_1"], np.log(197.874 / p.set_index("date").adj_close["2022-12-19"]), rtol=1e-9)
    assert f1.loc["2022-12-20", "ret_1"] != f0.loc["2022-12-20", "ret_1"]
    assert l1.y_ret.iloc[0] != l0.y_ret.iloc[0]                                 # the label of 12-13 ends on 12-20
    assert not np.allclose(g1.sort_values(["src", "dst"]).weight, g0.sort_values(["src", "dst"]).weight)
    E = [f"e{i}" for i in range(8)]
    assert not np.allclose(e1[E].to_numpy(float), e0[E].to_numpy(float))              # the embedding of 12-28 was recomputed
    with Store(ws / "st.duckdb", read_only=True) as st:
        pd.testing.assert_frame_equal(st.read("features"), full)               # exactly a full recomputation
    rc, out, err = cli(ws, "check")
    assert rc == 1 and "foundation" in out and "table" not in out and "twins of" not in out, out   # only `main`'s foundation is left

def test_check_says_what_a_corrected_price_made_stale(ws):
    "`stock-twins check` after a correction: every derived table and the foundation are stale (exit 1), each with its command."
    with Store(ws / "st.duckdb") as st:
        from stock_twins.data import ingest_prices
        from stock_twins.config import load_config
        ingest_prices(st, st.read("prices", ["AAPL"], "2022-12-20", "2022-12-20").assign(adj_close=197.874), "a correction", cfg=load_config(ws / "c.yaml"))
    rc, out, err = cli(ws, "check")
    _eq(rc, 1)                                                                  # stale, not corrupt
    for t, cmd in (("table features", "features"), ("table labels", "features"), ("table graph_edges", "graph"), ("table embeddings", "retrain"),
                   ("foundation", "main")):
        assert f"stale    {t}" in out and f"--store {ws / 'st.duckdb'} {cmd}" in out, (t, out)

def test_added_ticker_gets_graph_nodes_and_edges(ws):
    "Defect 1: six tickers added later got 0 graph nodes and edges ('0 written, 1651 stored')."
    s = load_sample()
    s[(s.ticker == "XOM") & (s.date >= "2018-01-01")].to_csv(ws / "xom.csv", index=False)
    _eq(cli(ws, "ingest", "--source", ws / "xom.csv")[0], 0)
    with Store(ws / "st.duckdb", read_only=True) as st: total = len(st.dates("graph_edges"))
    rc, out, err = cli(ws, "graph", "--peers-of", "XOM")
    assert rc == 0 and f"{total} written" in out and "strongest peers of XOM" in out, out + err   # every graph had XOM in its window
    with Store(ws / "st.duckdb", read_only=True) as st:
        assert "XOM" in set(st.read("graph_nodes").ticker)
        e = st.read("graph_edges")
        _eq(e[(e.src == "XOM") | (e.dst == "XOM")].date.nunique(), total)

# ---------------------------------------------------------------- 2. artefacts verify and repair
def _twin(ws, t="AAPL") -> Path:
    return next((ws / "ck" / "twin" / t).glob("*.json")).with_suffix("")

def test_truncated_twin_weights_are_retrained_and_named(ws):
    "Defect 2: resume checked only the JSON record; now the weights' sha256 is verified (`retrain_all`), and the job names the repair."
    p = payload_path(_twin(ws)); p.write_bytes(p.read_bytes()[:-100])
    rc, out, err = cli(ws, "retrain")
    assert rc == 0 and "truncated or padded" in out and "repaired: the checkpoint was corrupt" in out and "3 skipped, 1 trained" in out, out + err
    from stock_twins.checkpoint import verify_artifact
    verify_artifact(_twin(ws), "twin")

def test_truncated_twin_record_is_refused_by_predict_with_the_repair_command(ws):
    "Defect 2: a truncated twin JSON silently switched that stock to the fallback and overwrote the stored table."
    with Store(ws / "st.duckdb", read_only=True) as st: before = st.read("predictions")
    r = record_path(_twin(ws)); r.write_text(r.read_text()[:100])
    rc, out, err = cli(ws, "predict")
    _one_line(rc, err)
    want = f"repair: stock-twins --config {ws / 'c.yaml'} --store {ws / 'st.duckdb'} retrain --cutoff 2022-12-28 --tickers AAPL"
    assert "corrupt checkpoint record" in err and want in err, err
    with Store(ws / "st.duckdb", read_only=True) as st: pd.testing.assert_frame_equal(st.read("predictions"), before)   # nothing overwritten
    rc, out, err = cli(ws, *want.split(" ", 6)[6].split())                     # the command it named
    assert rc == 0 and "repaired" in out, out + err
    rc, out, err = cli(ws, "predict")
    _eq(rc, 0)
    with Store(ws / "st.duckdb", read_only=True) as st: src = st.read("predictions", ["AAPL"]).source.iloc[0]
    assert src in ("twin", "prior"), src                                         # its twin serves again (its correction, or its prior where routed so)

def test_corrupt_foundation_fallback_and_policy(ws):
    "Each artefact kind truncated or corrupted: predict refuses a foundation it builds on (naming `main`), repairs its own fallback; `check` names each."
    f = next((ws / "ck" / "foundation" / "all").glob("*.json")).with_suffix("")
    fb = next((ws / "ck" / "fallback" / "all").glob("*.json")).with_suffix("")
    pol = artifact_stem(ws / "ck", "policy", "2022-12-28", "ab" * 6)
    save_artifact(pol, {"w": np.zeros(4, dtype="float32")}, "policy", "2022-12-28", "c" * 64, framework="np")
    payload_path(pol).write_bytes(b"\0" * 10)
    payload_path(fb).write_bytes(payload_path(fb).read_bytes()[:-50])
    rc, out, err = cli(ws, "predict")
    assert rc == 0 and "truncated or padded" in out and "training a new one over it" in out, out + err   # predict owns the fallback of its date
    payload_path(f).write_bytes(payload_path(f).read_bytes()[:-100])
    rc, out, err = cli(ws, "predict")
    _one_line(rc, err)
    assert "truncated or padded" in err and err.rstrip().endswith(f"repair: stock-twins --config {ws / 'c.yaml'} --store {ws / 'st.duckdb'} main"), err
    rc, out, err = cli(ws, "check")
    assert rc == 2 and out.count("corrupt ") == 2 and "main" in out and "policy" in out and "check --repair" in out, out   # the foundation and the policy
    payload_path(fb).write_bytes(payload_path(fb).read_bytes()[:-50])
    rc, out, err = cli(ws, "check")
    assert rc == 2 and "predict --date 2022-12-28" in out, out

def test_stale_tmp_files_are_removed_at_job_start(ws):
    "Defect 7: a killed twin write left a 0-byte `*.safetensors.*.tmp` forever."
    left = ws / "ck" / "twin" / "AAPL" / ".2022-12-28_7c681b5a1159.safetensors.k1ll3d.tmp"; left.write_bytes(b"")
    old = ws / "reports" / ".predictions_2022-12-28.csv.x9.tmp"; old.write_text("half a table")   # writer unknown, an hour old
    os.utime(old, (time.time() - 3600,) * 2)
    dead = subprocess.Popen(["true"]); dead.wait()
    killed = ws / "snapshot" / f".CURRENT.json.{dead.pid}-a1b2.tmp"; killed.write_text("{")        # its writer was killed just now
    alive = ws / "reports" / f".predictions_2022-12-28.csv.{os.getpid()}-c3d4.tmp"; alive.write_text("in flight")
    rc, out, err = cli(ws, "retrain")
    assert rc == 0 and "removed 3 temporary files" in out, out + err
    _eq((left.exists(), old.exists(), killed.exists(), alive.exists()), (False, False, False, True))   # never a live writer's
    killed.write_text("{")
    rc, out, err = cli(ws, "check")
    assert rc == 1 and "temporary files" in out and "1 left by interrupted writes" in out, out
    alive.unlink()

# ---------------------------------------------------------------- 3. failures are failures
def test_every_twin_failing_exits_2_and_names_each_unless_allow_partial(ws):
    "Defect 3: `retrain` exited 0 when every twin failed."
    (ws / "c.yaml").write_text((ws / "c.yaml").read_text().replace("window_months: 2", "window_months: 12"))   # a year of embeddings needed: none has it
    rc, out, err = cli(ws, "retrain")
    _one_line(rc, err)
    for t in ("AAPL", "MSFT", "KO", "JNJ"): assert f"stock-twins retrain: error: twin {t} failed: {t}: too little history" in err, err
    assert "4 parts of the job failed" in err and "--allow-partial" in err, err
    rc, out, err = cli(ws, "retrain", "--allow-partial")
    assert rc == 0 and "warning: twin AAPL failed" in err and "accepted (--allow-partial)" in err, err

def test_config_typos_are_refused_at_load(ws):
    "Defect 3: `twins.loss_weights: {retrun: 1.0}` was accepted, and every twin then failed."
    c = (ws / "c.yaml").read_text()
    (ws / "c.yaml").write_text(c.replace("twins:\n", "twins:\n  loss_weights: {retrun: 1.0}\n"))
    rc, out, err = cli(ws, "retrain")
    _one_line(rc, err)
    _eq(len(err.strip().splitlines()), 1)
    assert "twins.loss_weights: unknown losses ['retrun']" in err and "did you mean 'ret' for 'retrun'" in err, err
    (ws / "c.yaml").write_text(c + "twins:\n  patience: 9\n")                 # a second `twins:` would silently drop the first
    rc, out, err = cli(ws, "info")
    assert rc == 2 and "'twins' appears twice" in err, err

def test_main_says_what_served_each_failed_twin_and_exits_2(ws, monkeypatch):
    "Defect 3: `main --force` printed 'its forecasts come from the fallback' 16 times, then served 16 rows from the old twins."
    import stock_twins.pipeline as pl
    import stock_twins.twin_train as tt
    def refuse(*a, **k): raise PermissionError(13, "Permission denied", str(ws / "ck" / "twin"))
    monkeypatch.setattr(tt, "save_twin", refuse)                               # every twin's checkpoint write fails
    keep = pl.ensure_foundation                                                # (the same foundation, to keep the test short)
    monkeypatch.setattr(pl, "ensure_foundation", lambda *a, **k: keep(*a, **{**k, "force": False}))
    rc, out, err = cli(ws, "main", "--force")
    _one_line(rc, err)
    with Store(ws / "st.duckdb", read_only=True) as st: served = st.read("predictions").set_index("ticker").source
    for t in ("AAPL", "MSFT", "KO", "JNJ"):
        assert served[t] in ("twin", "prior") and f"twin {t} failed: PermissionError" in err and "its forecast comes from an earlier twin checkpoint" in err, err
    assert "from the fallback" not in err

def test_the_configs_loss_names_are_the_twins():
    "The config validates `twins.loss_weights` against its own list of the twin's losses: it must stay the twin's (`twin.LOSS_PARTS`)."
    from stock_twins.config import TWIN_LOSS_PARTS
    from stock_twins.twin import LOSS_PARTS
    _eq(tuple(TWIN_LOSS_PARTS), tuple(LOSS_PARTS))

# ---------------------------------------------------------------- 4. no traceback reaches a user
def _unwritable(path: Path):
    "Make `path` read-only for the CLI process: chmod, plus dropping root's capability to ignore it."
    path.chmod(0o555)
    if os.geteuid() != 0: return []
    if shutil.which("setpriv") is None: pytest.skip("running as root without setpriv: cannot make a folder read-only")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "--"]

def test_unwritable_output_folders_are_refused_before_any_work(ws):
    "Defect 4: a read-only checkpoint folder raised PermissionError after minutes of training; a read-only reports folder left table and CSV out of step."
    with Store(ws / "st.duckdb", read_only=True) as st: before = st.read("predictions")
    csv = (ws / "reports" / "predictions_2022-12-28.csv").read_bytes()
    code = ("import sys; from stock_twins.cli import main\n"
            f"args = ['--config', {str(ws / 'c.yaml')!r}, '--store', {str(ws / 'st.duckdb')!r}]\n"
            "sys.exit(main(args + sys.argv[1:]))")
    for folder, cmd, key in ((ws / "ck" / "twin", ["main", "--force"], "data.checkpoint_dir (twin)"), (ws / "reports", ["main"], "main.out_dir"),
                             (ws / "snapshot", ["predict"], "serve.snapshot_dir")):
        prefix = _unwritable(folder)
        try:
            t0 = time.time()
            r = subprocess.run([*prefix, sys.executable, "-c", code, *cmd], capture_output=True, text=True, timeout=300)
        finally: folder.chmod(0o755)
        _one_line(r.returncode, r.stderr)
        assert f"cannot write to {folder} ({key}): Permission denied" in r.stderr and "chmod u+w" in r.stderr, r.stderr
        assert "-> foundation" not in r.stdout and "-> twins" not in r.stdout, r.stdout                      # refused before the long work
    with Store(ws / "st.duckdb", read_only=True) as st: pd.testing.assert_frame_equal(st.read("predictions"), before)
    _eq((ws / "reports" / "predictions_2022-12-28.csv").read_bytes(), csv)

def test_predictions_table_and_csv_change_together(ws, monkeypatch):
    "Defect 4: the `predictions` table was updated and the CSV was not."
    from stock_twins.pipeline import save_predictions
    with Store(ws / "st.duckdb") as st:
        ranked = st.read("predictions").drop(columns="created").sort_values("rank").reset_index(drop=True)
        before, csv = st.read("predictions"), (ws / "reports" / "predictions_2022-12-28.csv").read_bytes()
        new = ranked.assign(exp_return=ranked.exp_return + 1)
        blocker = ws / "blocked"; blocker.mkdir(); (blocker / "predictions_2022-12-28.csv").mkdir()   # the CSV cannot be put in place
        with pytest.raises(OSError): save_predictions(st, new, blocker)
        pd.testing.assert_frame_equal(st.read("predictions"), before)          # so the table did not change either
        def boom(*a, **k): raise RuntimeError("the store failed")
        monkeypatch.setattr(st, "upsert", boom)
        with pytest.raises(RuntimeError): save_predictions(st, new, ws / "reports")
        _eq((ws / "reports" / "predictions_2022-12-28.csv").read_bytes(), csv)  # the table failed: the CSV is the old one
        monkeypatch.undo()
        save_predictions(st, new, ws / "reports")
        np.testing.assert_allclose(st.read("predictions").sort_values("rank").exp_return, new.exp_return)
        np.testing.assert_allclose(pd.read_csv(ws / "reports" / "predictions_2022-12-28.csv").exp_return, new.exp_return, rtol=1e-5)
    _eq(sorted(p.name for p in (ws / "reports").iterdir() if p.name.endswith(".tmp")), [])

def _corrupt_block(db: Path, table: str):
    "Flip bytes inside a data block that belongs to `table` alone (DuckDB files: 12 KiB of headers, then 256 KiB blocks)."
    with Store(db, read_only=True) as st:
        used = lambda t: {r[0] for r in st.con.execute(f"select distinct block_id from pragma_storage_info('{t}') where block_id >= 0").fetchall()}
        mine = sorted(used(table) - set().union(*(used(t) for t in st.tables() if t != table)))
    off = 12288 + mine[len(mine) // 2] * 262144 + 4096
    with open(db, "r+b") as f:
        f.seek(off); b = f.read(64); f.seek(off); f.write(bytes(x ^ 0xFF for x in b))

def test_corrupt_store_block_is_one_line_found_by_check_and_repaired(ws):
    "Defect 4: `_duckdb.Error: Corrupt database file: computed checksum ...` reached the user, while `info` reported the store as fine."
    _corrupt_block(ws / "st.duckdb", "features")
    for args in (["features"], ["predict"]):
        rc, out, err = cli(ws, *args)
        _one_line(rc, err)
        assert "cannot be read: Corrupt database file" in err and "`stock-twins check` names what is corrupt" in err, err
    rc, out, err = cli(ws, "info")                                              # counts and a few columns: may not touch the bad block
    assert (rc == 0 and "`stock-twins check` reads every table in full" in out) or ("Corrupt database file" in err and "Traceback" not in err), out + err
    rc, out, err = cli(ws, "check")
    assert rc == 2 and "corrupt  table features" in out and "check --repair" in out, out
    rc, out, err = cli(ws, "check", "--repair")
    assert "dropped the corrupt table features" in out and rc == 1, out         # readable again; features must be recomputed
    _eq(cli(ws, "features")[0], 0)
    rc, out, err = cli(ws, "check")
    assert rc == 0 and "all is well" in out, out

def test_os_errors_and_bugs_are_one_line(tmp_path, monkeypatch):
    "Defect 4: OS errors (here a full disk, raised where a temporary file was written) and anything unexpected reach the user as one line."
    import errno
    import stock_twins.pipeline as pl
    def full(*a, **k): raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "reports" / f".predictions_2022-12-28.csv.{os.getpid()}-ab12.tmp"))
    monkeypatch.setattr(pl, "run_features", full)
    out, err = io.StringIO(), io.StringIO()
    Store(tmp_path / "s.duckdb").close()
    with Store(tmp_path / "s.duckdb") as st: st.upsert("prices", pd.DataFrame({"date": [pd.Timestamp("2022-12-28")], "ticker": ["AAPL"], "close": [1.0]}))
    with redirect_stdout(out), redirect_stderr(err): rc = main(["--store", str(tmp_path / "s.duckdb"), "features"])
    _one_line(rc, err.getvalue())
    assert f"cannot write {tmp_path / 'reports' / 'predictions_2022-12-28.csv'}: No space left on device; the disk is full" in err.getvalue(), err.getvalue()
    monkeypatch.setattr(pl, "run_features", lambda *a, **k: [][1])
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err): rc = main(["--store", str(tmp_path / "s.duckdb"), "features"])
    _one_line(rc, err.getvalue(), code=1)
    assert "internal error: IndexError: list index out of range (this is a bug; set STOCK_TWINS_DEBUG=1" in err.getvalue(), err.getvalue()

# ---------------------------------------------------------------- 5. a bad pilot ticker is contained
def test_a_bad_pilot_is_skipped_while_the_others_train(ws):
    "Defect 5: a pilot named `../../evil` stopped the twins step for every valid pilot."
    s = load_sample()
    evil = s[(s.ticker == "PG") & (s.date >= "2018-01-01")].assign(ticker="../../evil")
    evil[["date", "ticker", "adj_close"]].to_csv(ws / "evil.csv", index=False)
    _eq(cli(ws, "ingest", "--source", ws / "evil.csv")[0], 0)                   # an unknown ticker is accepted (with a warning)
    with Store(ws / "st.duckdb") as st: st.upsert("embeddings", st.read("embeddings", ["AAPL"]).assign(ticker="../../evil"))   # it has embeddings
    rc, out, err = cli(ws, "retrain")
    _one_line(rc, err)
    assert "pilot '../../evil' skipped: not usable as a checkpoint name" in out, out
    assert "twin ../../evil failed: not a valid ticker for a checkpoint name" in err and "1 part of the job failed" in err, err
    assert "4 trained, 1 failed" in out, out                                    # the four valid pilots were (re)trained
    _eq([p for p in ws.rglob("*evil*")], [ws / "evil.csv"])                     # nothing written under a path built from it

# ---------------------------------------------------------------- 6. dates are checked first
@pytest.mark.parametrize("date, msg", [("2022-12-24", "--date 2022-12-24 (Saturday) is not a trading date of the stored prices; nearest trading days: 2022-12-23 (before) and 2022-12-27 (after)"),
                                       ("1980-01-02", "--date 1980-01-02 is before the stored prices, which start on 2018-01-02"),
                                       ("2030-01-02", "--date 2030-01-02 is after the last stored price (2022-12-28)")])
def test_dates_are_checked_before_anything_trains(ws, date, msg):
    "Defect 6: `predict --date 2022-12-24` trained and saved a fallback first; 1980 and 2030 gave messages about rows."
    before = _files(ws / "ck")
    rc, out, err = cli(ws, "predict", "--date", date)
    _one_line(rc, err)
    assert msg in err, err
    rc, out, err = cli(ws, "retrain", "--cutoff", date)
    _one_line(rc, err)
    assert msg.replace("--date", "--cutoff") in err, err
    _eq(_files(ws / "ck"), before)

# ---------------------------------------------------------------- 7. the smaller defects
def test_loader_messages_name_the_file(tmp_path):
    "Defect 7: `--layout wide` on a long file gave a raw pandas message; a wide file's all-NaN column slipped past unnoticed."
    d = pd.bdate_range("2021-01-04", periods=30)
    pd.DataFrame({"Date": np.tile(d, 2), "Symbol": ["AAPL"] * 30 + ["MSFT"] * 30, "Close": np.linspace(1, 2, 60)}).to_csv(tmp_path / "long.csv", index=False)
    pd.DataFrame({"Date": d, "AAPL": np.linspace(1, 2, 30), "ZZZQ": np.nan}).to_csv(tmp_path / "wide.csv", index=False)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc1 = main(["--store", str(tmp_path / "s.duckdb"), "ingest", "--source", str(tmp_path / "long.csv"), "--layout", "wide"])
    _one_line(rc1, err.getvalue())
    assert "long.csv: read as a wide table (one column per ticker), but column 'Symbol' holds text such as 'AAPL'" in err.getvalue(), err.getvalue()
    assert "use --layout long or auto" in err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err): rc2 = main(["--store", str(tmp_path / "s.duckdb"), "ingest", "--source", str(tmp_path / "wide.csv")])
    assert rc2 == 0 and "stock-twins ingest: warning: wide.csv: columns ['ZZZQ'] hold no prices at all" in err.getvalue(), err.getvalue()

def test_case_of_a_ticker_gets_a_hint(ws):
    "Defect 7: `aapl` was reported as an unknown ticker with no hint about case."
    from stock_twins.config import load_config
    from stock_twins.data import check_tickers
    with pytest.raises(KeyError, match=r"did you mean \['AAPL'\]\? tickers are case-sensitive"): check_tickers(["aapl"], load_config(ws / "c.yaml"))
    with Store(ws / "st.duckdb", read_only=True) as st:
        with pytest.raises(KeyError, match=r"did you mean \['AAPL'\]"): st.read("prices", ["aapl"])
    rc, out, err = cli(ws, "graph", "--peers-of", "aapl")                     # the CLI takes tickers in any case
    assert rc == 0 and "strongest peers of aapl" in out, err

def test_info_on_a_store_with_an_oddly_named_table(ws):
    "Defect 7: `info` stopped on a store holding one oddly named table."
    with Store(ws / "st.duckdb") as st: st.con.execute('create table "my table" (x int)')
    rc, out, err = cli(ws, "info")
    assert rc == 0 and "my table" in out and "stock-twins check" in out, out + err
    rc, out, err = cli(ws, "check")
    assert rc == 0, out                                                          # read in full, like every table

def test_ctrl_c_during_training_ends_with_the_clis_message(ws):
    "Defect 7: SIGINT during training ended with Lightning's message (and its exit code 1) instead of the CLI's."
    c = (ws / "c.yaml").read_text().replace("epochs: 1\n", "epochs: 200\n").replace("train_years: 0.1\n", "train_years: 4\n  date_stride: 1\n")
    (ws / "c.yaml").write_text(c)                                                # a new foundation, long enough to interrupt (epochs of ~1000 dates)
    exe = Path(sys.executable).parent / "stock-twins"
    p = subprocess.Popen([str(exe), "--config", str(ws / "c.yaml"), "--store", str(ws / "st.duckdb"), "main"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, t0 = "", time.time()
    while "GPU available" not in seen and time.time() - t0 < 300:                # Lightning's Trainer exists: `fit` comes next
        chunk = os.read(p.stderr.fileno(), 4096).decode(errors="replace")
        if not chunk: break
        seen += chunk
    assert "GPU available" in seen, seen[-2000:]
    time.sleep(3)                                                               # inside `Trainer.fit` (200 epochs)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    err = seen + err
    assert p.returncode == 130, (p.returncode, out[-2000:], err[-2000:])
    assert err.rstrip().splitlines()[-1].startswith("stock-twins main: interrupted: nothing partial was written"), err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    _eq(len(list((ws / "ck" / "foundation" / "all").glob("*.json"))), 1)        # the interrupted foundation was not saved

# ---------------------------------------------------------------- kill -9 at each step of `main --smoke`, then rerun
STEPS = ["-> your universe", "-> point-in-time features", "-> correlation graphs", "-> foundation", "-> embeddings", "-> twins",
         "-> LightGBM fallback", "-> forecasts", "-> the day's target portfolio", "-> the daily report"]

@pytest.mark.slow
def test_kill_9_at_each_step_of_main_smoke_then_rerun_gives_the_same_table(tmp_path):
    "`main --smoke` killed (SIGKILL) right after each step starts, then run again to the end: the same `predictions` table as an uninterrupted run."
    exe = Path(sys.executable).parent / "stock-twins"
    s, ix = load_sample(), load_sample_index()
    s[s.ticker.isin(TICKERS) & (s.date >= "2018-01-01")].to_parquet(tmp_path / "p.parquet")
    ix[ix.date >= "2018-01-01"].to_parquet(tmp_path / "idx.parquet")
    def run(d: Path, kill_at: str | None = None, delay: float = 1.0):
        d.mkdir(exist_ok=True)
        (d / "c.yaml").write_text(f"data:\n  checkpoint_dir: {d}/ck\nmain:\n  out_dir: {d}/reports\nserve:\n  snapshot_dir: {d}/snap\n"
                                  f"agents:\n  report_dir: {d}/daily\n")
        p = subprocess.Popen([str(exe), "--config", str(d / "c.yaml"), "--store", str(d / "st.duckdb"), "main", "--smoke",
                              "--source", str(tmp_path / "p.parquet"), "--index", str(tmp_path / "idx.parquet")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen = []
        for line in p.stdout:
            seen.append(line)
            if kill_at and line.startswith(kill_at):
                time.sleep(delay); p.kill(); break
        p.wait(timeout=900)
        return p.returncode, "".join(seen)
    def table(d: Path) -> pd.DataFrame:
        with Store(d / "st.duckdb", read_only=True) as st: return st.read("predictions").drop(columns="created")
    rc, log = run(tmp_path / "ref")
    assert rc == 0, log[-3000:]
    ref = table(tmp_path / "ref")
    for i, at in enumerate(STEPS):
        d = tmp_path / f"k{i}"
        rc, log = run(d, at, delay=3.0 if at in ("-> foundation", "-> embeddings") else 0.5)
        assert rc == -signal.SIGKILL, (at, rc, log[-2000:])
        rc, log = run(d)
        assert rc == 0, (at, log[-3000:])
        pd.testing.assert_frame_equal(table(d), ref, obj=f"predictions after a kill at {at!r}")
        r = subprocess.run([str(exe), "--config", str(d / "c.yaml"), "--store", str(d / "st.duckdb"), "check", "--smoke"], capture_output=True, text=True)
        assert r.returncode == 0, (at, r.stdout, r.stderr)                      # nothing corrupt or stale, no temporary file left
