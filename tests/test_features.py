"Features and labels across the store boundary, halted stocks, and gaps that must stay gaps."
import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_eq as _eq, test_fail as _fail
from stock_twins.data import load_sample, load_sample_index
from stock_twins.features import (FEATURES, LIQUIDITY_UNKNOWN, FeaturePanel, compute_features, compute_labels,
                                  features_to_store, labels_to_store)
from stock_twins.store import Store

TICKERS = ["AAPL", "JNJ", "KO", "XOM", "AMD"]

@pytest.fixture(scope="module")
def panel():
    "5 tickers x 600 days of the real sample, with synthetic close and volume, and the index."
    p, i = load_sample(), load_sample_index()
    days = np.sort(p.date.unique())[6000:6600]
    p = p[p.ticker.isin(TICKERS) & p.date.isin(days)].reset_index(drop=True)
    rng = np.random.default_rng(0)
    p["close"] = p.adj_close; p["volume"] = (rng.lognormal(18, 0.3, len(p)) / p.close).round()
    return p, i[i.date.isin(days)].reset_index(drop=True)

def _read_equal(got: pd.DataFrame, want: pd.DataFrame):
    got = got.sort_values(["ticker", "date"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True), check_dtype=False)

@pytest.mark.parametrize("where", ["memory", "file"])
def test_store_roundtrip(panel, tmp_path, where):
    p, i = panel
    feats, labels = compute_features(p, i), compute_labels(p, 5)
    path = ":memory:" if where == "memory" else tmp_path / "st.duckdb"
    st = Store(path)
    _eq(features_to_store(st, feats), len(feats))
    _eq(labels_to_store(st, labels), len(labels))
    features_to_store(st, feats)                                   # idempotent
    _eq((st.count("features"), st.count("labels")), (len(feats), len(labels)))
    if where == "file": st.close(); st = Store(path, read_only=True)
    back = st.read("features")
    _read_equal(back, feats)
    _read_equal(st.read("labels"), labels)
    assert back[list(FEATURES)].isna().to_numpy().sum() == feats[list(FEATURES)].isna().to_numpy().sum() > 0
    a, b = FeaturePanel.from_frame(feats), FeaturePanel.from_frame(back)
    np.testing.assert_array_equal(a.values, b.values); np.testing.assert_array_equal(a.valid, b.valid)
    st.close()

def test_halted_stock(panel):
    p, i = panel
    days = np.sort(p.date.unique())
    halt = days[300:310]
    gone = (p.ticker == "KO") & p.date.isin(halt)
    ph = p[~gone].reset_index(drop=True)
    full, fh = compute_features(p, i), compute_features(ph, i)
    _eq(len(fh), len(ph))
    ko = fh[fh.ticker == "KO"].set_index("date")
    _eq(ko.index.isin(halt).any(), False)                          # the halted days stay missing
    # before the halt nothing changes for KO
    pre = full[(full.ticker == "KO") & (full.date < halt[0])].set_index("date")[list(FEATURES)]
    post = ko.loc[ko.index < halt[0], list(FEATURES)]
    _eq(pre.shape, post.shape)
    assert np.allclose(pre, post, equal_nan=True)
    # the session after the halt: its return spans the halt; ret_5 reaches back over it by sessions
    kp = ph[ph.ticker == "KO"].set_index("date").adj_close
    resume = days[310]; k = kp.index.get_loc(resume)
    np.testing.assert_allclose(ko.loc[resume, "ret_1"], np.log(kp.iloc[k] / kp.iloc[k - 1]))
    np.testing.assert_allclose(ko.loc[resume, "ret_5"], np.log(kp.iloc[k] / kp.iloc[k - 5]))
    _eq(kp.index[k - 1], days[299])
    # the other stocks are unaffected apart from cross-sectional columns
    oth = [c for c in FEATURES if not c.startswith(("xrank", "liquidity"))]
    a = full[full.ticker != "KO"].reset_index(drop=True); b = fh[fh.ticker != "KO"].reset_index(drop=True)
    assert np.allclose(a[oth], b[oth], equal_nan=True)
    # labels also skip the gap: y_ret at the last pre-halt session is to 5 sessions later (after the halt)
    lab = compute_labels(ph, 5)
    lk = lab[lab.ticker == "KO"].set_index("date")
    np.testing.assert_allclose(lk.loc[days[299], "y_ret"], np.log(kp.iloc[k + 4] / kp.iloc[k - 1]))
    _eq(lk.index.isin(halt).any(), False)

def test_nan_never_forward_filled(panel):
    p, i = panel
    days = np.sort(p.date.unique())
    # the index misses one date: market features are NaN that day, beta/corr over windows touching it
    gap = days[400]
    f = compute_features(p, i[i.date != gap])
    ok = compute_features(p, i)
    on = f.date == gap
    assert f.loc[on, ["mkt_ret_1", "mkt_vol_20", "mkt_drawdown"]].isna().all().all()
    assert ok.loc[on, ["mkt_ret_1", "mkt_vol_20", "mkt_drawdown"]].notna().all().all()
    a = f[f.ticker == "JNJ"].set_index("date").beta_60
    _eq(a.loc[days[400]:days[460]].isna().all(), True)             # 61 sessions whose 60-day window holds a NaN return
    _eq(a.loc[days[461]:].notna().all(), True)
    _eq(a.loc[days[399]], ok[ok.ticker == "JNJ"].set_index("date").beta_60.loc[days[399]])
    # a stock listed later: its warm-up is NaN while the others have values
    late = p[~((p.ticker == "AMD") & (p.date < days[100]))]
    fl = compute_features(late, i).set_index(["ticker", "date"])
    amd = fl.loc["AMD"]
    _eq(amd.index[0], days[100])
    assert np.isnan(amd.ret_1.iloc[0]) and amd.ret_60.iloc[:60].isna().all() and amd.ret_60.iloc[60:].notna().all()
    assert amd.xrank_ret_60.iloc[:60].isna().all() and amd.liquidity_bucket.iloc[:19].eq(LIQUIDITY_UNKNOWN).all()
    assert fl.loc["KO"].ret_60.loc[days[100]:days[159]].notna().all()

def test_bad_input(panel):
    p, i = panel
    _fail(lambda: compute_features(p, pd.concat([i, i.assign(ticker="X")])), contains="one ticker")
    _fail(lambda: compute_features(p.drop(columns=["adj_close", "close"])), contains="'close' or 'adj_close'")
    _fail(lambda: compute_features(p.assign(adj_close=-p.adj_close)), contains="non-positive adj_close")
    _fail(lambda: compute_labels(p, horizon=0), contains="positive int")
    _fail(lambda: features_to_store(Store(), p), contains="lacks columns")
