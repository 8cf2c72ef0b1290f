"Bad input never reaches the store: every validation case, corrupt files and an interrupted load leave it as it was."
import gzip
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_eq as _eq

from stock_twins.data import ingest_prices

from stock_twins.config import Config
from stock_twins.data import DataValidationError, load_sample, read_prices
from stock_twins.store import Store, StoreError

GOOD = pd.DataFrame({"date": ["2020-01-02", "2020-01-03", "2020-01-02", "2020-01-03"], "ticker": ["AAPL", "AAPL", "MSFT", "MSFT"],
                     "close": [10.0, 11.0, 20.0, 21.0], "volume": [100.0, 200.0, 300.0, 0.0]})

def _with(**cols):
    d = GOOD.copy()
    for k, v in cols.items(): d[k] = v
    return d

BAD = {
    "empty": (GOOD.iloc[:0], "no rows"),
    "missing column": (GOOD.drop(columns="ticker"), "missing columns ['ticker']"),
    "no price column": (GOOD.drop(columns="close"), "'close' or 'adj_close'"),
    "unknown column": (GOOD.assign(colour="red"), "unknown columns ['colour']"),
    "unparseable date": (_with(date=["2020-01-02", "2020-13-45", "2020-01-02", "2020-01-03"]), "unparseable date '2020-13-45' for AAPL"),
    "duplicate rows": (_with(date=["2020-01-02", "2020-01-02", "2020-01-02", "2020-01-03"]), "duplicate rows for AAPL 2020-01-02"),
    "unsorted dates": (_with(date=["2020-01-03", "2020-01-02", "2020-01-02", "2020-01-03"]), "not increasing for AAPL"),
    "zero price": (_with(close=[10.0, 0.0, 20.0, 21.0]), "non-positive close for AAPL 2020-01-03"),
    "negative price": (_with(close=[10.0, 11.0, -20.0, 21.0]), "non-positive close for MSFT 2020-01-02"),
    "NaN price": (_with(close=[10.0, np.nan, 20.0, 21.0]), "non-finite close for AAPL 2020-01-03"),
    "inf price": (_with(close=[np.inf, 11.0, 20.0, 21.0]), "non-finite close for AAPL 2020-01-02"),
    "negative volume": (_with(volume=[100.0, -1.0, 300.0, 0.0]), "negative volume for AAPL 2020-01-03"),
    "unknown ticker, strict": (_with(ticker=["AAPL", "AAPL", "ZZZZ", "ZZZZ"]), "ZZZZ"),   # the default accepts it (tests/test_user_data.py)
    "hole in a column the ticker has": (_with(volume=[100.0, np.nan, 300.0, 0.0]), "non-finite volume for AAPL 2020-01-03"),
}

@pytest.fixture
def store():
    st = Store(":memory:")
    ingest_prices(st, GOOD, "good", cfg=Config())
    yield st
    st.close()

@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_clear_error_store_unchanged(store, case):
    df, msg = BAD[case]
    before = store.read("prices")
    with pytest.raises((DataValidationError, KeyError)) as e: ingest_prices(store, df, case, cfg=Config(), strict=True)
    assert msg in str(e.value), f"{case}: {e.value}"
    pd.testing.assert_frame_equal(store.read("prices"), before)
    _eq(store.read("sources").source.tolist(), ["good"])

def test_halted_stock_stays_missing(store):
    "A stock with no rows on some days keeps those days missing: nothing is filled."
    halted = GOOD[~((GOOD.ticker == "MSFT") & (GOOD.date == "2020-01-02"))]
    st = Store(":memory:"); ingest_prices(st, halted, "halted", cfg=Config())
    _eq(st.read("prices", tickers=["MSFT"]).date.dt.strftime("%Y-%m-%d").tolist(), ["2020-01-03"])

@pytest.mark.parametrize("kind", ["truncated csv.gz", "garbage parquet", "empty csv"])
def test_corrupt_file_clear_error_store_unchanged(store, tmp_path, kind):
    sample = load_sample()
    sample = sample[sample.ticker.isin(["AAPL", "MSFT"])]
    if kind == "truncated csv.gz":
        full = tmp_path / "full.csv.gz"; sample.to_csv(full, index=False)
        data = full.read_bytes(); p = tmp_path / "trunc.csv.gz"; p.write_bytes(data[: len(data) // 2])
    elif kind == "garbage parquet":
        p = tmp_path / "bad.parquet"; p.write_bytes(b"PAR1" + os.urandom(2000))
    else:
        p = tmp_path / "empty.csv"; p.write_text("")
    before = store.read("prices")
    with pytest.raises(DataValidationError) as e: ingest_prices(store, read_prices(p), kind, cfg=Config())
    assert str(p.name) in str(e.value)
    pd.testing.assert_frame_equal(store.read("prices"), before)

def test_corrupt_store_file_clear_error(tmp_path):
    p = tmp_path / "bad.duckdb"; p.write_bytes(b"not a duckdb file" * 100)
    with pytest.raises(StoreError, match="cannot open the store"): Store(p)

def test_interrupted_load_leaves_store_as_it_was(tmp_path):
    "A process killed in the middle of a load (after some chunks were inserted, before commit) changes nothing on disk."
    db = tmp_path / "s.duckdb"
    with Store(db) as st: ingest_prices(st, GOOD, "good", cfg=Config())
    script = textwrap.dedent(f"""
        import os
        from stock_twins.store import Store
        from stock_twins.data import load_sample
        calls = []
        orig = Store._insert_chunk
        def dying(self, *a):
            orig(self, *a); calls.append(1)
            if len(calls) == 2: os._exit(9)   # killed between chunks, inside the transaction
        Store._insert_chunk = dying
        st = Store({str(db)!r})
        st.upsert("prices", load_sample().iloc[:50_000], chunk_rows=10_000)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    _eq(r.returncode, 9)
    with Store(db) as st:
        _eq(st.count("prices"), len(GOOD))
        _eq(sorted(st.read("prices").ticker.unique()), ["AAPL", "MSFT"])

def test_idempotent_and_parquet_round_trip(tmp_path):
    sample = load_sample()
    with Store(tmp_path / "a.duckdb") as st:
        ingest_prices(st, sample, "sample"); ingest_prices(st, sample, "sample")
        _eq(st.count("prices"), len(sample))
        st.export_parquet("prices", tmp_path / "p.parquet")
    with Store(tmp_path / "b.duckdb") as st2:
        st2.import_parquet("prices", tmp_path / "p.parquet")
        pd.testing.assert_frame_equal(st2.read("prices"), Store(tmp_path / "a.duckdb", read_only=True).read("prices"))

def test_export_is_atomic(tmp_path, monkeypatch):
    "A failure while writing a Parquet export leaves the previous file intact and no temp files behind."
    import pyarrow.parquet as pq
    with Store(":memory:") as st:
        ingest_prices(st, GOOD, "good", cfg=Config())
        out = tmp_path / "p.parquet"; st.export_parquet("prices", out)
        before = out.read_bytes()
        def boom(*a, **k): raise OSError("disk full")
        monkeypatch.setattr(pq, "write_table", boom)
        with pytest.raises(OSError): st.export_parquet("prices", out)
    _eq(out.read_bytes(), before)
    _eq(sorted(p.name for p in tmp_path.iterdir()), ["p.parquet"])
