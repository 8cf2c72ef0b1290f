"The `stock-twins` command, as a user runs it: a real process, a real DuckDB file on disk."
import subprocess
import sys
from pathlib import Path

import pandas as pd
from fastcore.test import test_eq as _eq

from stock_twins.store import Store

def _run(*args, cwd=None):
    exe = Path(sys.executable).parent / "stock-twins"  # the installed console script
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=600)

def _smoke_config(tmp_path) -> Path:
    "A config that keeps checkpoints and reports inside `tmp_path`."
    c = tmp_path / "c.yaml"
    c.write_text(f"data:\n  checkpoint_dir: {tmp_path / 'ck'}\nmain:\n  out_dir: {tmp_path / 'reports'}\n"
                 f"serve:\n  snapshot_dir: {tmp_path / 'snapshot'}\nagents:\n  report_dir: {tmp_path / 'daily'}\n")
    return c

def test_main_job_end_to_end_and_rerun(tmp_path):
    "`stock-twins main --smoke`: every step on the whole bundled sample, the ranked table, then a second run that reuses everything."
    db, cfg = tmp_path / "st.duckdb", _smoke_config(tmp_path)
    r = _run("--config", str(cfg), "--store", str(db), "main", "--smoke")
    _eq(r.returncode, 0)
    out = r.stdout
    assert "166,260 price rows" in out and "166,260 rows written" in out, out
    assert "16 trained" in out and "ranked forecasts for the 5 trading days after 2022-12-28" in out, out + r.stderr
    with Store(db, read_only=True) as st:
        _eq(set(st.tables()) >= {"prices", "index_prices", "features", "labels", "sources", "graph_edges", "embeddings", "predictions"}, True)
        _eq(st.count("features"), 20 * 8313)
        pred = st.read("predictions").sort_values("rank").reset_index(drop=True)
        n_src = st.count("sources")
    _eq((len(pred), pred.date.nunique(), pred["rank"].tolist(), pred.priority.is_monotonic_decreasing), (20, 1, list(range(1, 21)), True))
    by_src = pred.groupby("source").size().to_dict()
    _eq((by_src.get("fallback"), by_src.get("twin", 0) + by_src.get("prior", 0)), (4, 16))   # pilots: their twin, or its prior where it never beat it
    assert "stocks served by source: twin" in out and "routing by evidence" in out, out
    _eq(sorted(pred.loc[pred.source == "fallback", "ticker"]), ["BBY", "GE", "LLY", "RRC"])   # the non-pilot stocks of the sample
    csv = pd.read_csv(tmp_path / "reports" / "predictions_2022-12-28.csv")
    _eq(csv.ticker.tolist(), pred.sort_values("rank").ticker.tolist())
    ck = sorted((tmp_path / "ck").rglob("*.safetensors"))
    _eq(len(ck), 1 + 16 + 1)                                                     # foundation, 16 twins, fallback: one format
    _eq(len(list((tmp_path / "ck" / "daycache").glob("*.npz"))), 1)              # the per-day encodings, for the next job's new dates
    r2 = _run("--config", str(cfg), "--store", str(db), "main", "--smoke")
    _eq(r2.returncode, 0)
    out2 = r2.stdout
    assert "166,260 rows reused" in out2 and "16 skipped" in out2 and "0 written" in out2 and "140 reused" in out2, out2
    assert out2.count("reused /") >= 2, out2                                       # foundation and fallback were loaded, not trained
    _eq(sorted((tmp_path / "ck").rglob("*.safetensors")), ck)
    with Store(db, read_only=True) as st:
        _eq((st.count("prices"), st.count("sources")), (20 * 8313, n_src))
        again = st.read("predictions").sort_values("rank").reset_index(drop=True)
        pd.testing.assert_frame_equal(again.drop(columns="created"), pred.drop(columns="created"))
    # the steps on their own
    r = _run("--config", str(cfg), "--store", str(db), "predict", "--smoke", "--tickers", "aapl,GE")
    _eq(r.returncode, 0)
    assert "AAPL" in r.stdout and "GE" in r.stdout and ("twin" in r.stdout or "prior" in r.stdout) and "fallback" in r.stdout, r.stdout + r.stderr
    r = _run("--config", str(cfg), "--store", str(db), "retrain", "--smoke", "--tickers", "AAPL,MSFT")
    _eq(r.returncode, 0)
    assert "2 skipped" in r.stdout, r.stdout
    r = _run("--config", str(cfg), "--store", str(db), "graph", "--peers-of", "AAPL")
    _eq(r.returncode, 0)
    assert "0 written" in r.stdout and "strongest peers of AAPL" in r.stdout, r.stdout
    # bad input: a clear one-line error, exit 2, nothing lost
    for args, msg in [(("predict", "--smoke", "--tickers", "ZZZZ"), "ZZZZ"),
                      (("predict", "--smoke", "--tickers", "MSFT", "--date", "2022-12-25"), "not a trading date"),
                      (("retrain", "--smoke", "--tickers", "LLY"), "not pilot stocks"),
                      (("graph", "--peers-of", "ZZZZ"), "ZZZZ")]:
        r = _run("--config", str(cfg), "--store", str(db), *args)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    f = next(p for p in ck if "foundation" in str(p))
    f.write_bytes(f.read_bytes()[:-100])                                          # a truncated foundation checkpoint
    r = _run("--config", str(cfg), "--store", str(db), "retrain", "--smoke")      # retraining needs the model itself
    assert r.returncode == 2 and "truncated" in r.stderr and "Traceback" not in r.stderr, r.stderr
    with Store(db, read_only=True) as st: _eq(st.count("predictions"), 20)

def test_main_without_foundation_is_a_clear_error(tmp_path):
    cfg = _smoke_config(tmp_path)
    r = _run("--config", str(cfg), "--store", str(tmp_path / "st.duckdb"), "ingest")
    _eq(r.returncode, 0)
    r = _run("--config", str(cfg), "--store", str(tmp_path / "st.duckdb"), "predict")
    assert r.returncode == 2 and "run `stock-twins main` first" in r.stderr, r.stderr

def test_ingest_user_file_and_bad_file(tmp_path):
    db = tmp_path / "st.duckdb"
    good = pd.DataFrame({"Date": ["2021-01-04", "2021-01-05"], "Symbol": ["AAPL", "AAPL"], "Close": [1.0, 2.0]})
    good.to_csv(tmp_path / "good.csv", index=False)
    r = _run("--store", str(db), "ingest", "--source", str(tmp_path / "good.csv"))
    _eq(r.returncode, 0)
    bad = good.assign(Close=[1.0, -2.0]); bad.to_csv(tmp_path / "bad.csv", index=False)
    r = _run("--store", str(db), "ingest", "--source", str(tmp_path / "bad.csv"))
    _eq(r.returncode, 2)
    assert "non-positive close for AAPL 2021-01-05" in r.stderr and "Traceback" not in r.stderr, r.stderr
    with Store(db, read_only=True) as st: _eq(st.read("prices").close.tolist(), [1.0, 2.0])

def test_features_without_prices_is_a_clear_error(tmp_path):
    r = _run("--store", str(tmp_path / "empty.duckdb"), "features")
    assert r.returncode != 0 and "run `stock-twins ingest` first" in r.stderr, r.stderr

def test_cli_import_is_light():
    "`stock-twins --help` must not pay for pandas, torch or the ML stack."
    code = "import sys, stock_twins.cli; print(sorted(m for m in ('pandas','torch','lightning','duckdb','lightgbm') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    _eq(r.stdout.strip(), "[]")

def test_evaluate_quick_writes_report(tmp_path):
    r = _run("evaluate", "--quick", "--models", "always_up,momentum_20", "--out", str(tmp_path / "ev"))
    _eq(r.returncode, 0)
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "always_up" in report and "momentum_20" in report
    assert (tmp_path / "ev" / "predictions.parquet").exists()
    r = _run("evaluate", "--quick", "--models", "no_such_model", "--out", str(tmp_path / "ev2"))
    assert r.returncode == 2 and "no_such_model" in r.stderr, r.stderr

def test_pretrain_tiny_writes_checkpoint_and_embeddings(tmp_path):
    "`stock-twins pretrain --tiny` ingests the sample into an empty store, trains, checkpoints and embeds."
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  checkpoint_dir: {tmp_path / 'ckpt'}\nfoundation:\n  train_end: '1992-12-31'\n")
    db = tmp_path / "st.duckdb"
    r = _run("--config", str(cfg), "--store", str(db), "pretrain", "--tiny", "--epochs", "1", "--date-stride", "20",
             "--embed-start", "2022-12-01")
    _eq(r.returncode, 0)
    assert "foundation pretraining done" in r.stdout, r.stdout + r.stderr
    assert list((tmp_path / "ckpt" / "foundation" / "all").glob("*.safetensors")), list(tmp_path.rglob("*"))
    with Store(db, read_only=True) as st:
        emb = st.read("embeddings")
        assert len(emb) > 0 and emb.date.min() >= pd.Timestamp("2022-12-01")
