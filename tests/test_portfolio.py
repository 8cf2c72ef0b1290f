"Property tests of the portfolio layer's contracts: the constraints function and the priority score, on random inputs (hypothesis)."
import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_close as _close, test_eq as _eq
from hypothesis import HealthCheck, given, settings, strategies as st

from stock_twins.config import Config, PortfolioConfig
from stock_twins.portfolio import (PriorityRule, apply_constraints, limit_violations, priority_score, rank_by_priority,
                                   rebalance_arrays)
from stock_twins.schema import prediction_frame

_finite = dict(allow_nan=False, allow_infinity=False)


@st.composite
def cases(draw):
    n = draw(st.integers(1, 20))
    long_only = draw(st.booleans())
    pc = PortfolioConfig(long_only=long_only, max_weight=draw(st.floats(0.01, 1.0)),
                         sector_cap=draw(st.one_of(st.none(), st.floats(0.02, 1.5))),
                         max_gross=draw(st.floats(0.1, 3.0)), max_net=draw(st.floats(0.0, 1.5)), min_net=-draw(st.floats(0.0, 1.5)),
                         min_trade=draw(st.sampled_from([0.0, 1e-4, 0.01, 0.1])),
                         max_turnover=draw(st.one_of(st.none(), st.floats(1e-3, 3.0))), cost_bps=draw(st.floats(0, 100)))
    tick = [f"T{i}" for i in range(n)]
    sec = {t: f"S{draw(st.integers(0, 3))}" for t in tick}
    w = st.floats(-3, 3, **_finite)
    tgt = pd.Series(draw(st.lists(w, min_size=n, max_size=n)), index=tick)
    cur = pd.Series(draw(st.lists(st.floats(-0.5, 0.5, **_finite), min_size=n, max_size=n)), index=tick)
    return pc, sec, tgt, cur


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_constraints_hold_on_random_inputs(case):
    pc, sec, tgt, cur = case
    rb = apply_constraints(tgt, cur, pc, sec)
    _eq(limit_violations(rb.weights, pc, sec), [])                                   # hard limits: always
    _close(rb.cost, rb.turnover * pc.cost_bps / 1e4, eps=1e-15)                      # cost = traded notional x bps
    _close(rb.turnover, (rb.weights - cur.reindex(rb.weights.index, fill_value=0)).abs().sum(), eps=1e-12)
    _close(rb.cash, 1 - rb.weights.sum() - rb.cost, eps=1e-12)
    feasible = not limit_violations(cur, pc, sec)
    if pc.max_turnover is not None and feasible: assert rb.turnover <= pc.max_turnover + 1e-9
    if feasible and pc.min_trade > 0:                                                # a feasible book: no trade below min_trade
        tr = rb.trades.abs()                                                         # unless a limit forced it
        small = tr[(tr > 1e-12) & (tr < pc.min_trade - 1e-12)]
        if len(small):
            kept = rb.weights.copy(); kept[small.index] = cur[small.index]
            assert limit_violations(kept, pc, sec), f"trades {small.to_dict()} below min_trade {pc.min_trade} were not needed"


@settings(max_examples=200, deadline=None)
@given(st.floats(-0.3, 0.3, **_finite).filter(lambda v: abs(v) > 1e-9), st.floats(0, 1), st.floats(0, 50))   # weights under 1e-12 are dust by design (portfolio._EPS)
def test_costs_are_traded_notional_times_bps(x, p, bps):
    pc = PortfolioConfig(cost_bps=bps, max_weight=1.0, sector_cap=None, max_turnover=None, min_trade=0.0, long_only=False, min_net=-1.0)
    w, tv, cost = rebalance_arrays(np.array([x, -x * p]), np.zeros(2), np.arange(2), pc)
    _close(tv, abs(x) * (1 + p), eps=1e-15)
    _close(cost, abs(x) * (1 + p) * bps / 1e4, eps=1e-15)


@settings(max_examples=300, deadline=None)
@given(st.floats(1e-9, 1.0), st.floats(-1.0, -1e-9), st.floats(0, 1), st.floats(0, 1), st.floats(0, 100), st.integers(1, 63))
def test_priority_never_ranks_a_fall_above_a_rise_with_the_same_vol(up, down, p_up, p_down, vol, h):
    rows = pd.DataFrame({"date": pd.Timestamp("2020-01-02"), "ticker": ["DOWN", "UP"]})
    f = prediction_frame(rows, "t", exp_return=[down, up], hit_prob=[p_down, p_up], vol=[vol, vol])
    _eq(rank_by_priority(f, h).ticker.tolist(), ["UP", "DOWN"])
    s = priority_score(f, h)
    assert s.iloc[0] <= 0 <= s.iloc[1]
    w = PriorityRule(top_n=1, horizon=h)(f)
    assert w["DOWN"] == 0.0


def test_apply_constraints_uses_the_universe_sectors():
    cfg = Config()
    rb = apply_constraints({"AAPL": 0.5, "MSFT": 0.5, "AMD": 0.5}, None, cfg)
    _close(rb.weights.sum(), cfg.portfolio.sector_cap, eps=1e-9)                     # all Technology: the sector cap binds
    with pytest.raises(ValueError, match="finite"): apply_constraints({"AAPL": np.inf}, None, cfg)
