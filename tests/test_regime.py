"Regime labels on a simulated market: valid codes, one row per input row, no look-ahead; predictability baselines against a hand count."
import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_close as _close, test_eq as _eq, test_fail as _fail

from stock_twins.config import Config, REGIMES, RegimeConfig
from stock_twins.regime import (REQUIRED_INPUTS, label_regimes, market_regime, regime_durations, regime_inputs,
                                regime_predictability, transition_matrix)
from stock_twins.simulate import simulate_market

RC = RegimeConfig()

@pytest.fixture(scope="module")
def market():
    return simulate_market(12, 400, n_sectors=3, seed=7)

@pytest.fixture(scope="module")
def labelled(market):
    inp = regime_inputs(market.prices, market.index, RC)
    return inp, label_regimes(inp, RC)

def test_valid_codes_and_same_rows(market, labelled):
    inp, lab = labelled
    _eq(list(lab.columns), ["date", "ticker", "regime"])
    _eq(lab.regime.dtype, np.int8)
    _eq(len(lab), len(market.prices))
    key = lambda d: sorted(zip(d.date, d.ticker))
    _eq(key(lab), key(market.prices))
    _eq(set(lab.regime.unique()) <= {-1, 0, 1, 2, 3}, True)
    _eq(set(lab.regime[lab.regime >= 0].unique()), {0, 1, 2, 3})        # every regime occurs on 12 x 400 days
    ok = inp[list(REQUIRED_INPUTS)].notna().all(axis=1).to_numpy()
    _eq(((lab.regime >= 0).to_numpy() == ok).all(), True)                  # -1 exactly where an input is missing

def test_halted_stock_keeps_rows():
    m = simulate_market(6, 300, n_sectors=2, seed=3, halted_frac=0.4)
    lab = label_regimes(regime_inputs(m.prices, m.index, RC), RC)
    _eq(len(lab), len(m.prices))
    _eq(lab.regime.isna().any(), False)

def test_no_lookahead(market, labelled):
    inp, lab = labelled
    t = np.sort(market.prices.date.unique())[250]
    rng = np.random.default_rng(0)
    def perturb(df):
        f = np.where(df.date > t, np.exp(rng.normal(0, 0.1, len(df))), 1.0)
        return df.assign(**{c: df[c] * f for c in ("open", "high", "low", "close", "adj_close")})
    inp2 = regime_inputs(perturb(market.prices), perturb(market.index), RC)
    lab2 = label_regimes(inp2, RC)
    past = (lab.date <= t).to_numpy()
    assert (lab.regime[past] >= 0).sum() > 500
    _eq(lab.regime[past].tolist(), lab2.regime[past].tolist())
    cols = list(REQUIRED_INPUTS) + ["beta_60"]
    assert np.allclose(inp.loc[past, cols].to_numpy(float), inp2.loc[past, cols].to_numpy(float), equal_nan=True, rtol=0, atol=1e-12)
    assert (lab.regime[~past] != lab2.regime[~past]).any()               # the perturbation does reach the labels after t

def test_market_regime(market):
    mr = market_regime(market.index, RC)
    _eq(list(mr.columns), ["date", "regime"])
    _eq(len(mr), len(market.index))
    _fail(lambda: market_regime(market.prices, RC), contains="pass one index")

def test_label_regimes_bad_input(labelled):
    inp, _ = labelled
    _fail(lambda: label_regimes(inp.drop(columns="hurst_60"), RC), contains="['hurst_60']")
    _fail(lambda: label_regimes(inp.drop(columns="date"), RC), contains="'date'")

def test_persistence_matches_hand_count():
    rng = np.random.default_rng(5)
    dates = pd.bdate_range("2003-06-02", "2006-06-30")
    reg = np.repeat(rng.integers(0, 4, len(dates) // 7 + 1), 7)[: len(dates)].astype(np.int8)   # weekly blocks
    reg[10] = -1                                                            # an unlabelled day drops its pairs
    toy = pd.DataFrame({"date": dates, "ticker": "A", "regime": reg})
    h = 5
    pr = regime_predictability(toy, None, horizon=h, train_end="2004-12-31", test_start="2005-01-01", cfg=Config())
    now, fut, d = reg[:-h], reg[h:], dates[:-h]
    ok = (now >= 0) & (fut >= 0)
    test = ok & (d >= "2005-01-01")
    train = ok & (dates[h:] <= "2004-12-31")
    _close(pr.loc["persistence", "accuracy"], np.mean(now[test] == fut[test]))
    _eq(int(pr.loc["persistence", "n_test"]), int(test.sum()))
    _eq(int(pr.loc["majority", "n_train"]), int(train.sum()))
    maj = np.bincount(fut[train], minlength=4).argmax()
    _close(pr.loc["majority", "accuracy"], np.mean(fut[test] == maj))
    _fail(lambda: regime_predictability(toy, None, horizon=0, cfg=Config()), contains="horizon")

def test_lightgbm_row(labelled):
    inp, lab = labelled
    d = lab.date.sort_values().unique()
    pr = regime_predictability(lab, inp, horizon=5, train_end=d[279], test_start=d[285], cfg=Config(), lgb_params={"n_estimators": 20})
    _eq(list(pr.index), ["persistence", "majority", "lightgbm"])
    assert ((pr.accuracy >= 0) & (pr.accuracy <= 1)).all() and (pr.n_test > 0).all()

def test_durations_and_transitions(labelled):
    _, lab = labelled
    dur, tm = regime_durations(lab), transition_matrix(lab, normalize=False)
    _eq(list(dur.index), list(REGIMES))
    n = int((lab.regime >= 0).sum())
    _close(float((dur.n_runs * dur["mean"]).sum()), n)                      # runs cover every labelled row once
    _eq(int(np.trace(tm.to_numpy())), n - int(dur.n_runs.sum()))            # a run of length L holds L - 1 stays
    _close(transition_matrix(lab).sum(axis=1).to_numpy(), np.ones(4))
