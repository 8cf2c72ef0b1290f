"The simulated market crosses file and store boundaries unchanged: long CSV, Parquet, a DuckDB file."
import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_eq as _eq, test_fail as _fail
from stock_twins.data import ingest_prices
from stock_twins.config import Config
from stock_twins.data import read_prices, validate_prices
from stock_twins.simulate import simulate_market
from stock_twins.store import Store


@pytest.fixture(scope="module", params=[0.0, 0.1], ids=["full", "halted"])
def market(request):
    return simulate_market(30, 250, n_sectors=5, seed=7, halted_frac=request.param)


def test_canonical(market):
    _eq(validate_prices(market.prices, "sim"), market.prices)
    _eq(market.prices.ticker.nunique(), 30)
    if market.prices.groupby("ticker").size().min() < 250:  # halted stocks: rows absent, never NaN
        assert not market.prices.isna().any().any()


def test_csv_long_roundtrip(market, tmp_path):
    "CSV text round-trips exactly (read_prices parses floats with the round-trip parser)."
    market.prices.to_csv(tmp_path / "sim.csv", index=False)
    _eq(read_prices(tmp_path / "sim.csv"), market.prices)
    market.prices.to_csv(tmp_path / "sim.csv.gz", index=False)
    _eq(read_prices(tmp_path / "sim.csv.gz"), market.prices)


def test_parquet_roundtrip(market, tmp_path):
    market.prices.to_parquet(tmp_path / "sim.parquet", index=False)
    _eq(read_prices(tmp_path / "sim.parquet"), market.prices)
    market.index.to_parquet(tmp_path / "idx.parquet", index=False)
    _eq(read_prices(tmp_path / "idx.parquet"), market.index)


def test_store_file_roundtrip(market, tmp_path):
    cfg = market.config(Config(), n_pilot=10)
    db = tmp_path / "sim.duckdb"
    with Store(db) as st:
        _eq(ingest_prices(st, market.prices, "sim", cfg=cfg), len(market.prices))
        ingest_prices(st, market.prices, "sim", cfg=cfg)  # idempotent
        ingest_prices(st, market.index, "sim index", table="index_prices")
        st.export_parquet("prices", tmp_path / "export.parquet")
    with Store(db, read_only=True) as st:
        _eq(st.prices(), market.prices)
        _eq(st.prices(table="index_prices"), market.index)
        _eq(st.read("sources").set_index("source").loc["sim", "columns"], "open,high,low,close,adj_close,volume")
    with Store(":memory:") as st2:
        st2.import_parquet("prices", tmp_path / "export.parquet")
        _eq(st2.prices(), market.prices)


def test_universe_is_checked(market):
    with Store(":memory:") as st:
        _fail(lambda: ingest_prices(st, market.prices, "sim", cfg=Config(), strict=True), contains="unknown tickers")  # the default accepts them with a warning
        assert "prices" not in st.tables()  # nothing written


def test_seed_reproducible_across_calls():
    a, b = simulate_market(30, 120, 5, seed=3), simulate_market(30, 120, 5, seed=3)
    pd.testing.assert_frame_equal(a.prices, b.prices)
    assert not np.array_equal(simulate_market(30, 120, 5, seed=4).prices.close.values, a.prices.close.values)
