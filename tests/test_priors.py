"Priors and calibration of the twins: point in time (perturbing the future changes nothing before it), and conformal coverage."
import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_eq as _eq

from stock_twins.calibration import by_group, conformal_margin, fit_platt
from stock_twins.config import Config
from stock_twins.priors import PRIOR_COLUMNS, ewma_vol, garch_vol, history_priors, transition_prior
from stock_twins.simulate import simulate_market
from stock_twins.testing import synthetic_embeddings
from stock_twins.twin import TwinSpec
from stock_twins.twin_data import twin_frame
from stock_twins.twin_train import fine_tune_many


@pytest.fixture(scope="module")
def market():
    return simulate_market(4, 700, n_sectors=2, seed=21)


def _bump(prices, after, seed=0):
    out = prices.copy()
    late = out.date > after
    noise = np.exp(np.random.default_rng(seed).normal(0, 0.05, late.sum()))
    for c in ("open", "high", "low", "close", "adj_close"): out.loc[late, c] = out.loc[late, c] * noise
    return out


@pytest.mark.parametrize("prior", ["ewma", "garch", "history"])
def test_priors_are_point_in_time(market, prior):
    cut = market.prices.date.unique()[600]
    f = {"ewma": ewma_vol, "garch": lambda p: garch_vol(p, 5, min_obs=250), "history": history_priors}[prior]
    a, b = f(market.prices), f(_bump(market.prices, cut))
    keep = (a.date <= cut).to_numpy()
    cols = [c for c in a.columns if c not in ("date", "ticker")]
    np.testing.assert_allclose(a.loc[keep, cols].to_numpy(float), b.loc[keep, cols].to_numpy(float), rtol=1e-12)
    assert not np.allclose(a.loc[~keep, cols].to_numpy(float), b.loc[~keep, cols].to_numpy(float), equal_nan=True)


def test_twin_frame_priors_point_in_time(market):
    cfg = market.config(Config()).replace(foundation={"embed_dim": 8})
    cut = market.prices.date.unique()[600]
    bumped = _bump(market.prices, cut)
    a = twin_frame(synthetic_embeddings(market.prices, market.index, dim=8), market.prices, market.index, cfg)
    b = twin_frame(synthetic_embeddings(bumped, market.index, dim=8), bumped, market.index, cfg)
    keep = a.date <= cut
    pd.testing.assert_frame_equal(a.loc[keep, ["date", "ticker", *PRIOR_COLUMNS]], b.loc[keep, ["date", "ticker", *PRIOR_COLUMNS]])


def test_calibration_and_routing_point_in_time(market):
    "Routing, Platt scaling and the conformal margin fitted at a cutoff do not move when prices after it change."
    cfg = market.config(Config()).replace(foundation={"embed_dim": 8}, twins={"max_epochs": 15, "window_months": 6})
    cut = pd.Timestamp(market.prices.date.unique()[600])
    bumped = _bump(market.prices, cut, seed=3)
    spec = TwinSpec.tiny()
    fa = twin_frame(synthetic_embeddings(market.prices, market.index, dim=8), market.prices, market.index, cfg)
    fb = twin_frame(synthetic_embeddings(bumped, market.index, dim=8), bumped, market.index, cfg)
    names = list(market.stocks.ticker)
    (ta, ma, _), (tb, mb, _) = fine_tune_many(names, fa, spec, cfg, cut), fine_tune_many(names, fb, spec, cfg, cut)
    for t in names:
        _eq((ma[t]["route"], ma[t]["platt"], ma[t]["q_margin"]), (mb[t]["route"], mb[t]["platt"], mb[t]["q_margin"]))
        for (k, v), w in zip(ta[t].state_dict().items(), tb[t].state_dict().values()): assert (v == w).all(), (t, k)


def test_conformal_coverage_on_simulated_data():
    "Known quantiles, a mis-scaled forecast interval: after the conformal margin, q10-q90 covers 80 +- 2% of new rows."
    rng = np.random.default_rng(7)
    z = 1.2815515655

    def sim(n):
        s = rng.uniform(0.01, 0.06, n)
        return s, rng.normal(0, 1, n) * s
    for shrink in (0.5, 1.0, 1.8):                  # too narrow, right, too wide
        s, y = sim(3000)
        q = conformal_margin(-shrink * z * s, shrink * z * s, y, s)
        s2, y2 = sim(100_000)
        cov = np.mean((y2 >= -shrink * z * s2 - q * s2) & (y2 <= shrink * z * s2 + q * s2))
        assert abs(cov - 0.8) <= 0.02, (shrink, cov)


def test_platt_and_pooling():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 2, 30_000)
    y = (rng.uniform(size=x.size) < 1 / (1 + np.exp(-(0.3 * x - 0.1)))).astype(float)
    a, b = fit_platt(x, y, l2=10)
    assert abs(a - 0.3) < 0.03 and abs(b + 0.1) < 0.05
    p, how = by_group(np.repeat(["A", "B"], [200, 20]), lambda ix: len(ix), 100)
    _eq((p, how), ({"A": 200, "B": 20}, {"A": "own", "B": "pooled"}))


def test_transition_prior_rows():
    P = transition_prior([0, 1, 1, 3, -1], [0, 1, 2, 3, 0], smoothing=1.0)
    np.testing.assert_allclose(P.sum(1), 1.0)
    _eq(P.shape, (5, 4))
    assert P[1, 1] > P[1, 2] > P[1, 0]
