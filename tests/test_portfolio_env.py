"The RL environment passes gymnasium's checker, its reward pays exactly traded notional x bps, and a saved policy reloads (without pickle) to the same actions."
import json

import numpy as np
import pytest
from fastcore.test import test_close as _close, test_eq as _eq
from gymnasium.utils.env_checker import check_env

from stock_twins.config import Config
from stock_twins.portfolio_env import PortfolioEnv, load_policy, make_env_data, save_policy, train_ppo
from stock_twins.backtest import planted_forecasts
from stock_twins.simulate import simulate_market


@pytest.fixture(scope="module")
def data():
    sm = simulate_market(n_stocks=10, n_days=500, n_sectors=4, seed=2)
    cfg = sm.config(Config()).replace(portfolio={"ppo_timesteps": 128, "ppo_n_steps": 64, "ppo_batch_size": 32, "ppo_net_arch": [16]})
    fc = planted_forecasts(sm.prices, seed=0).assign(q10=-0.04, q50=0.0, q90=0.04)
    return make_env_data(fc, sm.prices, sm.index.set_index("date")["close"], cfg, returns_until="2016-06-30"), cfg


def test_check_env(data):
    d, cfg = data
    env = PortfolioEnv(d, cfg)
    check_env(env, skip_render_check=True)
    o1, _ = env.reset(seed=123); o2, _ = env.reset(seed=123)
    _eq(o1, o2)


def test_reward_pays_exactly_turnover_times_bps(data):
    d, cfg = data
    a = np.random.default_rng(0).uniform(-1, 1, len(d.tickers) + 1).astype(np.float32)
    out = {}
    for bps in (0.0, 25.0):
        env = PortfolioEnv(d, cfg.replace(portfolio={"cost_bps": bps, "risk_penalty": 0.0}))
        env.reset(seed=0, options={"start": 5})
        _, rew, _, _, info = env.step(a)
        out[bps] = (rew, info)
    (r0, i0), (r1, i1) = out[0.0], out[25.0]
    _eq(i0["turnover"], i1["turnover"])
    _close(i0["return"] - i1["return"], i1["turnover"] * 25 / 1e4, eps=1e-15)
    _close(r1, np.log1p(i1["return"]), eps=1e-12)


def test_policy_round_trip_without_pickle(data, tmp_path):
    d, cfg = data
    model, secs = train_ppo(d, cfg, seed=0, progress=False)
    stem = save_policy(model, d, cfg, 0, secs, 128, "planted", root=str(tmp_path))
    _eq(sorted(p.suffix for p in stem.parent.iterdir()), [".json", ".safetensors"])      # no SB3 zip, no pickle
    rec = json.loads(stem.with_suffix(".json").read_text())
    _eq(rec["kind"], "policy"); _eq(rec["meta"]["hyperparameters"]["timesteps"], 128); _eq(rec["meta"]["seed"], 0)
    pol, _ = load_policy(stem)
    env = PortfolioEnv(d, cfg)
    o, _ = env.reset(seed=1)
    for _ in range(5):
        a1, _ = pol.predict(o, deterministic=True); a2, _ = model.predict(o, deterministic=True)
        _eq(a1, a2)
        o, *_ = env.step(a1)
