"The backtest on the simulator (a planted signal must beat equal weight; noise must not), its cost accounting, and the `stock-twins backtest` command on a small real-sample run."
import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_close as _close, test_eq as _eq

from stock_twins.backtest import backtest_rule, performance, planted_forecasts
from stock_twins.cli import main
from stock_twins.config import Config
from stock_twins.data import load_sample
from stock_twins.portfolio import PriorityRule, SkfolioRule, wide_prices
from stock_twins.simulate import simulate_market


@pytest.fixture(scope="module")
def market():
    sm = simulate_market(n_stocks=30, n_days=900, n_sectors=6, seed=11)     # synthetic: a test of the machinery only
    return sm, sm.config(Config()), wide_prices(sm.prices)


@pytest.mark.parametrize("signal", [1.0, 0.0])
def test_planted_signal_beats_equal_weight_and_noise_does_not(market, signal):
    sm, cfg, px = market
    fc = planted_forecasts(sm.prices, signal=signal, noise=3.0, seed=7)
    pr = backtest_rule(PriorityRule.from_config(cfg), fc, px, cfg, start="2015-04-01")
    ew = backtest_rule(SkfolioRule("equal_weight"), fc, px, cfg, start="2015-04-01")
    row = performance(pr, ew, n_boot=500, seed=0)
    if signal: assert row["d_sharpe_lo"] > 0, row                          # better than equal weight, with confidence
    else: assert row["d_sharpe_lo"] <= 0, row                              # not distinguishable from (or worse than) equal weight


def test_costs_reduce_value_by_traded_notional_times_bps(market):
    sm, cfg, px = market
    fc = planted_forecasts(sm.prices, signal=1.0, seed=3)
    for bps in (0.0, 7.5, 40.0):
        c = cfg.replace(portfolio={"cost_bps": bps})
        r = backtest_rule(PriorityRule.from_config(c), fc, px, c, start="2016-01-04", end="2016-12-30")
        nav = r.nav
        for d in r.cost.index:                                               # on every fill day, at the close:
            i = nav.index.get_loc(d)
            before = nav.iloc[i - 1] * (1 + r.gross.iloc[i])                 # value before the trade
            _close(before - nav.iloc[i], r.turnover[d] * before * bps / 1e4, eps=1e-12)
        _close(r.cost.to_numpy(), r.turnover.to_numpy() * bps / 1e4, eps=1e-15)
        if bps == 0.0: free = r
    _eq(list(free.turnover.index), list(r.turnover.index))
    assert r.nav.iloc[-1] < free.nav.iloc[-1]


def test_backtest_command_reproduces_table_and_plots(tmp_path, capsys):
    cfg = Config()
    px = load_sample(cfg)
    px = px[px.ticker.isin(["AAPL", "JNJ", "JPM", "XOM", "KO"]) & (px.date >= "2018-06-01")]
    fc = planted_forecasts(px, signal=0.5, seed=1, model="planted").assign(q10=-0.05, q50=0.0, q90=0.05)
    fc = fc[fc.date <= "2020-06-30"]
    path = tmp_path / "fc.parquet"; fc.to_parquet(path)
    args = ["backtest", "--predictions", str(path), "--start", "2020-01-01", "--end", "2020-06-30", "--seeds", "0,1,2",
            "--timesteps", "128", "--no-save"]
    for k in (1, 2): _eq(main(args + ["--out", str(tmp_path / f"run{k}")]), 0)
    t1, t2 = (pd.read_csv(tmp_path / f"run{k}" / "table.csv", index_col=0) for k in (1, 2))
    pd.testing.assert_frame_equal(t1, t2)                                    # the same command, the same table
    assert {"priority[planted]", "equal_weight", "min_variance", "max_sharpe", "risk_parity", "buy_and_hold_SP500",
            "ppo[planted] seed 0", "ppo[planted] seed 1", "ppo[planted] seed 2"} <= set(t1.index)
    for png in ("equity.png", "drawdowns.png", "weights.png", "turnover.png"): assert (tmp_path / "run1" / png).stat().st_size > 1000
    _eq(main(["backtest", "--predictions", str(tmp_path / "missing.parquet"), "--no-ppo"]), 2)
    assert "no predictions at" in capsys.readouterr().err
