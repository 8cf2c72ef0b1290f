"""The portfolio with and without the PolicyAgent on the bundled real sample, on the same forecasts.

Forecasts: the pooled LightGBM fallback (every head: return, hit probability, vol, quantiles, regime at t+5),
walk-forward with a yearly expanding refit, test years 2005-2022 (`stock_twins.evaluation.run_walk_forward`),
cached as Parquet. Allocation: the priority rule of `50_portfolio` (top 10 by priority, weekly, costs on,
next-close fills), backtested by `stock_twins.backtest`. The policy: the default rules of `agents.policy`, fixed
a priori (ARCHITECTURE.md's regime rules, a 10% position cap, a 30% sector cap, hit probability >= 0.5); no rule
was tuned on these years. The news veto is off (no real news exists offline) and the liquidity floor passes
everything (the sample has no volume).

    python benchmarks/bench_policy_backtest.py [--out reports/policy] [--rounds 200] [--forecasts-only]
"""
import argparse
import json
import time
from pathlib import Path

import pandas as pd

from stock_twins.config import load_config
from stock_twins.data import load_sample, load_sample_index


def forecasts(cfg, out: Path, rounds: int) -> pd.DataFrame:
    "Walk-forward fallback forecasts 2005-2022 (cached in `out`)."
    path = out / f"forecasts_fallback_{rounds}.parquet"
    if path.exists(): return pd.read_parquet(path)
    from stock_twins.evaluation import run_walk_forward
    from stock_twins.fallback import LightGBMFallback
    t0 = time.perf_counter()
    p = run_walk_forward([LightGBMFallback.from_config(cfg, n_estimators=rounds)], load_sample(cfg), load_sample_index(cfg), cfg, out=path)
    print(f"walk-forward forecasts: {len(p):,} rows in {time.perf_counter() - t0:.0f}s -> {path}")
    return p


def compare_policy(forecasts, prices, cfg, start=None, end=None, n_boot=1000):
    "Backtest the priority rule with and without the PolicyAgent on the same forecasts: (metrics side by side, {results, actions})."
    from stock_twins.backtest import backtest_rule, performance
    from stock_twins.policy import PolicyAgent, PolicyAllocation
    from stock_twins.portfolio import PriorityRule
    base = PriorityRule.from_config(cfg)
    pol = PolicyAllocation(PriorityRule.from_config(cfg), PolicyAgent.from_config(cfg))
    a = backtest_rule(base, forecasts, prices, cfg, start, end, name="priority (no policy)")
    b = backtest_rule(pol, forecasts, prices, cfg, start, end, name="priority + PolicyAgent")
    rows = [performance(a, None, cfg.evaluation.block, n_boot, start=start, end=end),
            performance(b, a, cfg.evaluation.block, n_boot, start=start, end=end)]
    for r, res in zip(rows, (a, b)):
        r.update(avg_positions=float((res.weights != 0).sum(1).mean()), avg_gross=float(res.weights.abs().sum(1).mean()))
    return pd.DataFrame(rows).set_index("strategy"), dict(without=a, with_policy=b, actions=pol.actions)


_OFF = dict(news_veto=False, min_hit_prob=0.0, min_dollar_volume=0.0, liquidity_unknown="pass", regime_no_new=[], regime_scale={},
            max_position=1.0, sector_cap=1.0)
_ONLY = {"min_hit_prob": dict(min_hit_prob=None), "regime_no_new": dict(regime_no_new=None), "regime_scale": dict(regime_scale=None),
         "max_position + sector_cap": dict(max_position=None, sector_cap=None)}

def ablation(forecasts, prices, cfg, start, end, n_boot=1000):
    "Each default rule alone (the others off), against the same no-policy run: which rule moves what. Reported, not used to tune."
    from stock_twins.backtest import backtest_rule, performance
    from stock_twins.policy import PolicyAgent, PolicyAllocation
    from stock_twins.portfolio import PriorityRule
    base = backtest_rule(PriorityRule.from_config(cfg), forecasts, prices, cfg, start, end, name="no policy")
    rows = [performance(base, None, cfg.evaluation.block, n_boot, start=start, end=end)]
    d = cfg.agents.policy.model_dump()
    for name, keep in _ONLY.items():
        pol = {**d, **_OFF, **{k: d[k] for k in keep}}
        c = cfg.replace(agents={"policy": pol})
        res = backtest_rule(PolicyAllocation(PriorityRule.from_config(c), PolicyAgent.from_config(c)), forecasts, prices, c, start, end,
                            name=f"only {name}")
        r = performance(res, base, cfg.evaluation.block, n_boot, start=start, end=end)
        r.update(avg_gross=float(res.weights.abs().sum(1).mean()))
        rows.append(r)
    return pd.DataFrame(rows).set_index("strategy")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/policy")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--forecasts-only", action="store_true")
    ap.add_argument("--ablation", action="store_true", help="also run each default rule alone")
    a = ap.parse_args()
    cfg, out = load_config(), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    fc = forecasts(cfg, out, a.rounds)
    if a.forecasts_only: return
    t0 = time.perf_counter()
    table, res = compare_policy(fc, load_sample(cfg), cfg, start=f"{cfg.evaluation.test_start}-01-01", end=f"{cfg.evaluation.test_end}-12-31")
    print(table.to_string(float_format="{:.3f}".format))
    acts = res["actions"]
    print("\npolicy actions by rule:\n" + acts.groupby(["rule", "action"]).size().to_string())
    (out / "policy_backtest.md").write_text(table.to_markdown(floatfmt=".3f") + "\n")
    acts.to_parquet(out / "policy_actions.parquet", index=False)
    if a.ablation:
        ab = ablation(fc, load_sample(cfg), cfg, f"{cfg.evaluation.test_start}-01-01", f"{cfg.evaluation.test_end}-12-31")
        cols = ["ann_return", "ann_vol", "sharpe", "sharpe_lo", "sharpe_hi", "max_dd", "turnover", "avg_gross", "d_sharpe", "d_sharpe_lo", "d_sharpe_hi"]
        print("\neach rule alone:\n" + ab[[c for c in cols if c in ab]].to_string(float_format="{:.3f}".format))
        (out / "policy_ablation.md").write_text(ab[[c for c in cols if c in ab]].to_markdown(floatfmt=".3f") + "\n")
    print(f"\n{time.perf_counter() - t0:.0f}s; written {out}/policy_backtest.md and policy_actions.parquet")
    print(json.dumps({k: str(v) for k, v in dict(forecast_rows=len(fc), decisions=int(acts['date'].nunique()) if len(acts) else 0).items()}))


if __name__ == "__main__":
    main()
