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

def test_main_job_end_to_end_and_rerun(tmp_path):
    db = tmp_path / "st.duckdb"
    r = _run("--store", str(db), "main")
    _eq(r.returncode, 0)
    assert "166,260 price rows" in r.stdout and "written" in r.stdout, r.stdout
    with Store(db, read_only=True) as st:
        _eq(set(st.tables()) >= {"prices", "index_prices", "features", "labels", "sources"}, True)
        _eq(st.count("features"), 20 * 8313)
        _eq(st.count("index_prices"), 8313)
        n_src = st.count("sources")
    r2 = _run("--store", str(db), "main")
    _eq(r2.returncode, 0)
    assert "reused" in r2.stdout, r2.stdout
    with Store(db, read_only=True) as st: _eq((st.count("prices"), st.count("sources")), (20 * 8313, n_src))

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
    cfg.write_text(f"foundation:\n  checkpoint_dir: {tmp_path / 'ckpt'}\n  train_end: '1992-12-31'\n")
    db = tmp_path / "st.duckdb"
    r = _run("--config", str(cfg), "--store", str(db), "pretrain", "--tiny", "--epochs", "1", "--date-stride", "20",
             "--embed-start", "1992-12-01")
    _eq(r.returncode, 0)
    assert "foundation pretraining done" in r.stdout, r.stdout + r.stderr
    assert list((tmp_path / "ckpt").glob("*.safetensors")), list(tmp_path.rglob("*"))
    with Store(db, read_only=True) as st:
        emb = st.read("embeddings")
        assert len(emb) > 0 and emb.date.min() >= pd.Timestamp("1992-12-01")
