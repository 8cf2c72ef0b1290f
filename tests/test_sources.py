"Where production data lives: ingest from a real PostgreSQL server and a real S3-compatible server, both started by the test on loopback."
import glob
import io
import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_eq as _eq

from stock_twins.cli import main
from stock_twins.store import Store

DAYS = pd.bdate_range("2021-01-04", periods=40)

def made_up(seed: int) -> np.ndarray:
    "Closes of a random walk: made-up prices, not market data."
    return 40 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.01, len(DAYS))))

def long_frame() -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"date": DAYS.date, "ticker": t, "close": made_up(i), "volume": 1000 + i})
                      for i, t in enumerate(["AAA", "BBB", "CCC"])], ignore_index=True)

def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err): rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

# ---------------------------------------------------------------- PostgreSQL
def _pg_bin() -> Path | None:
    for d in [*sorted(glob.glob("/usr/lib/postgresql/15/bin")), *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]:
        if Path(d, "initdb").exists() and Path(d, "pg_ctl").exists(): return Path(d)
    w = shutil.which("initdb")
    return Path(w).parent if w and shutil.which("pg_ctl") else None

@pytest.fixture(scope="module")
def postgres():
    "A throwaway PostgreSQL cluster on loopback (password auth), in a temp dir; as the `postgres` user when the test runs as root."
    bin_ = _pg_bin()
    if bin_ is None: pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed here")
    root = os.geteuid() == 0
    run_as = []
    if root:
        import pwd
        try: pw = pwd.getpwnam("postgres")
        except KeyError: pytest.skip("running as root and there is no unprivileged 'postgres' user to run initdb as")
        runuser = shutil.which("runuser")
        if runuser is None: pytest.skip("running as root without runuser to start PostgreSQL as an unprivileged user")
        run_as = [runuser, "-u", "postgres", "--"]
    d = Path(tempfile.mkdtemp(prefix="st_pg_", dir="/tmp"))
    (d / "pw").write_text("right-password\n")
    if root:
        os.chmod(d, 0o755); os.chown(d, pw.pw_uid, pw.pw_gid); os.chown(d / "pw", pw.pw_uid, pw.pw_gid)
    port = _free_port()
    sh = lambda *a: subprocess.run([*run_as, *map(str, a)], capture_output=True, text=True, timeout=120)
    r = sh(bin_ / "initdb", "-D", d / "data", "-U", "analyst", "--auth=scram-sha-256", "--pwfile", d / "pw", "-E", "UTF8", "--no-sync")
    assert r.returncode == 0, r.stderr
    r = sh(bin_ / "pg_ctl", "-D", d / "data", "-w", "-t", "60", "-l", d / "log",
           "-o", f"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    assert r.returncode == 0, r.stderr + (d / "log").read_text()
    try:
        yield from _fill(f"postgresql://analyst@127.0.0.1:{port}/postgres")
    finally:
        sh(bin_ / "pg_ctl", "-D", d / "data", "-m", "immediate", "stop")
        shutil.rmtree(d, ignore_errors=True)

def _fill(url: str):
    "Two tables written for the test: a long table in a schema (as a TimescaleDB hypertable reads) and one stock's daily rows."
    import psycopg
    with psycopg.connect(url, password="right-password", autocommit=True) as con:
        con.execute("create schema market")
        con.execute("create table market.prices (date date, ticker text, close double precision, volume bigint)")
        with con.cursor().copy("copy market.prices (date, ticker, close, volume) from stdin") as cp:
            for r_ in long_frame().itertuples(index=False): cp.write_row(r_)
        con.execute("create table aaa_daily (\"Date\" date, \"Open\" numeric, \"Close\" numeric, \"Adj Close\" numeric, extra text)")
        with con.cursor().copy("copy aaa_daily from stdin") as cp:
            for t, c in zip(DAYS.date, made_up(7)): cp.write_row((t, round(c, 4), round(c, 4), round(c * 0.99, 4), "x"))
    yield url

def test_postgres_table_query_and_bad_credentials(postgres, tmp_path, monkeypatch):
    db = tmp_path / "st.duckdb"
    monkeypatch.setenv("PGPASSWORD", "right-password")                    # credentials from the environment
    t0 = time.perf_counter()
    rc, out, err = cli("--store", db, "ingest", "--source", f"{postgres}?table=market.prices")   # a (hyper)table, schema-qualified
    assert rc == 0 and "long table" in out, out + err
    with Store(db, read_only=True) as st:
        p = st.prices()
        _eq((len(p), st.tickers("prices")), (3 * len(DAYS), ["AAA", "BBB", "CCC"]))
        np.testing.assert_allclose(p[p.ticker == "BBB"].close, made_up(1), rtol=1e-12)
    rc, out, err = cli("--store", db, "ingest", "--source", f"{postgres}?query=select * from aaa_daily where \"Date\" >= '2021-01-01'",
                       "--ticker", "DDD")
    assert rc == 0 and "one stock per file" in out and "dropped columns ['extra']" in err, out + err
    with Store(db, read_only=True) as st:
        _eq(st.count("prices", tickers=["DDD"]), len(DAYS))
        n = st.count("prices")
    monkeypatch.setenv("PGPASSWORD", "wrong-password")
    rc, out, err = cli("--store", db, "ingest", "--source", f"{postgres}?table=market.prices")
    assert rc == 2 and "password authentication failed" in err and "$PGPASSWORD" in err and "Traceback" not in err, err
    monkeypatch.setenv("PGPASSWORD", "right-password")
    rc, out, err = cli("--store", db, "ingest", "--source", f"{postgres}?table=market.nope")
    assert rc == 2 and "no table" in err and "market.nope" in err, err
    rc, out, err = cli("--store", db, "ingest", "--source", f"{postgres.replace('analyst@', 'analyst:right-password@')}?table=market.prices")
    assert rc == 2 and "not in the URL" in err and "right-password" not in err, err                  # never from the URL
    with Store(db, read_only=True) as st: _eq(st.count("prices"), n)                                   # nothing written by the failures
    assert time.perf_counter() - t0 < 30

# ---------------------------------------------------------------- S3 (moto's server mode)
@pytest.fixture(scope="module")
def s3():
    "An S3-compatible server (moto) on loopback, with credentials and the endpoint in the environment, as a user would set them."
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    port = _free_port()
    srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    srv.start()
    env = dict(AWS_ACCESS_KEY_ID="test-key", AWS_SECRET_ACCESS_KEY="test-secret", AWS_DEFAULT_REGION="us-east-1",
               AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("prices-bucket")
    with fs.open("prices-bucket/long.parquet", "wb") as f: long_frame().to_parquet(f)
    for i, t in enumerate(["EEE", "FFF"]):
        with fs.open(f"prices-bucket/per-ticker/{t.lower()}.csv", "w") as f:
            pd.DataFrame({"Date": DAYS, "Close": made_up(10 + i), "Adj Close": made_up(10 + i), "Volume": 5}).to_csv(f, index=False)
    try: yield "s3://prices-bucket"
    finally:
        srv.stop()
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v

def test_s3_parquet_and_folder_of_csv(s3, tmp_path):
    db = tmp_path / "st.duckdb"
    t0 = time.perf_counter()
    rc, out, err = cli("--store", db, "ingest", "--source", f"{s3}/long.parquet")
    assert rc == 0 and "long table" in out, out + err
    rc, out, err = cli("--store", db, "ingest", "--source", f"{s3}/per-ticker/")
    assert rc == 0 and "Yahoo-style" not in out and "one stock per file" in out, out + err
    with Store(db, read_only=True) as st:
        _eq(st.tickers("prices"), ["AAA", "BBB", "CCC", "EEE", "FFF"])
        np.testing.assert_allclose(st.prices(["FFF"]).adj_close, made_up(11), rtol=1e-12)
        n = st.count("prices")
    rc, out, err = cli("--store", db, "ingest", "--source", f"{s3}/missing.parquet")
    assert rc == 2 and "no such file or folder" in err, err
    with Store(db, read_only=True) as st: _eq(st.count("prices"), n)
    assert time.perf_counter() - t0 < 30
