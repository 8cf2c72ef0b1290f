"""Options-layer benchmarks: implied volatility, the chain generator and the 40 features at scale, and the
recovery of a planted put/call signal by options twins.

Run:
  python benchmarks/bench_options.py                 # implied vols (10^5, 10^6) and 500 stocks x 1 year of chains
  python benchmarks/bench_options.py --recovery      # also the recovery experiment (several minutes)
  python benchmarks/bench_options.py --only recovery --stocks 20 --cutoffs 6

Every chain here is GENERATED (stock_twins.options.generate_chains) on a SIMULATED market (stock_twins.simulate),
and the twins read SYNTHETIC foundation embeddings (stock_twins.testing.synthetic_embeddings): the timings depend only
on shapes, and the recovery figures show what the options branch can learn from a relation planted on purpose,
nothing about real markets.
"""
from __future__ import annotations
import argparse
import os
import platform
import resource
import time

import numpy as np
import pandas as pd
import torch

from stock_twins.bsm import bsm_price, implied_vol
from stock_twins.config import Config
from stock_twins.metrics import block_bootstrap, daily_ic, hit_rate, hits, ic_summary
from stock_twins.options import compute_options_features, generate_chains, walk_forward_twins
from stock_twins.simulate import simulate_market
from stock_twins.testing import synthetic_embeddings
from stock_twins.twin import TwinSpec
from stock_twins.twin_data import twin_frame


def _rss_gb() -> float: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def bench_iv():
    print("\n## Implied volatility (stock_twins.bsm.implied_vol), chain-like contracts")
    print("| contracts | seconds | solved | max abs error |\n|---|---|---|---|")
    for n in (10 ** 5, 10 ** 6):
        rng = np.random.default_rng(0)
        S = rng.uniform(20, 400, n); K = S * np.exp(rng.uniform(-0.3, 0.3, n)); T = rng.uniform(7 / 365, 1.0, n)
        sig = rng.uniform(0.1, 0.8, n); call = rng.random(n) < 0.5
        p = bsm_price(S, K, T, 0.04, 0.01, sig, call)
        implied_vol(p[:1000], S[:1000], K[:1000], T[:1000], 0.04, 0.01, call[:1000])   # warm-up
        ts = []
        for _ in range(3):
            t0 = time.perf_counter(); iv = implied_vol(p, S, K, T, 0.04, 0.01, call); ts.append(time.perf_counter() - t0)
        ok = np.isfinite(iv)
        print(f"| {n:,} | {np.median(ts):.3f} | {ok.mean():.2%} | {np.abs(iv[ok] - sig[ok]).max():.1e} |")
    try:
        from vollib.black_scholes_merton.implied_volatility import implied_volatility as vl
        m = 2000
        t0 = time.perf_counter()
        for i in range(m):
            try: vl(p[i], S[i], K[i], T[i], 0.04, 0.01, "c" if call[i] else "p")
            except Exception: pass
        s = time.perf_counter() - t0
        print(f"\nreference: vollib (scalar) {m:,} implied vols in {s:.2f} s, i.e. about {s / m * 1e5:.1f} s per 10^5")
    except ImportError: print("\n(vollib not installed: no reference timing)")


def bench_store(m, cfg, tickers):
    "The store path for some tickers: ingest prices and chains into a DuckDB file, then build_options_features from it."
    import tempfile
    from stock_twins.data import ingest_prices
    from stock_twins.options import build_options_features, ingest_chains
    from stock_twins.store import Store
    px = m.prices[m.prices.ticker.isin(tickers)]
    ch = generate_chains(px, seed=0, cfg=cfg)
    with tempfile.TemporaryDirectory() as d:
        with Store(f"{d}/bench.duckdb") as st:
            ingest_prices(st, px, "simulated", cfg=cfg)
            t0 = time.perf_counter(); ingest_chains(st, ch, "GENERATED"); t_in = time.perf_counter() - t0
            t0 = time.perf_counter(); build_options_features(st, cfg); t_b = time.perf_counter() - t0
        size = os.path.getsize(f"{d}/bench.duckdb") / 1e6
    print(f"\nthrough the store ({len(tickers)} stocks, {len(ch):,} contracts; DuckDB file {size:.0f} MB):")
    print(f"| step | seconds | per 10^6 contracts |\n|---|---|---|")
    print(f"| ingest_chains (validate, price check, upsert options_chains) | {t_in:.1f} | {t_in / len(ch) * 1e6:.2f} |")
    print(f"| build_options_features (read, compute, upsert options_features) | {t_b:.1f} | {t_b / len(ch) * 1e6:.2f} |")


def bench_features(n_stocks: int, n_days: int, batch: int, store_stocks: int = 0):
    print(f"\n## {n_stocks} stocks x {n_days} quote days of GENERATED daily chains: generation and the 40 features")
    m = simulate_market(n_stocks, n_days + 20, n_sectors=min(11, n_stocks), seed=0)
    cfg = m.config(Config())
    tickers = sorted(m.prices.ticker.unique())
    t_gen = t_feat = 0.0
    rows = days = 0
    for i in range(0, len(tickers), batch):
        px = m.prices[m.prices.ticker.isin(tickers[i:i + batch])]
        t0 = time.perf_counter(); ch = generate_chains(px, seed=0, cfg=cfg); t_gen += time.perf_counter() - t0
        t0 = time.perf_counter(); f = compute_options_features(ch, px, cfg, batch=batch); t_feat += time.perf_counter() - t0
        rows += len(ch); days += len(f)
        del ch
    print(f"contracts: {rows:,} ({rows / days:.1f} per stock-day), stock-days: {days:,}")
    print(f"| step | seconds | per 10^6 contracts |\n|---|---|---|")
    print(f"| generate_chains | {t_gen:.1f} | {t_gen / rows * 1e6:.2f} |")
    print(f"| compute_options_features (40 features) | {t_feat:.1f} | {t_feat / rows * 1e6:.2f} |")
    print(f"peak memory {_rss_gb():.1f} GB")
    if store_stocks: bench_store(m, cfg, tickers[:store_stocks])


def _ratio(s): return s[..., 0] / s[..., 1]


def _fmt(e) -> str: return f"{e.point:+.3f} [{e.low:+.3f}, {e.high:+.3f}]"


def bench_recovery(n_stocks: int, n_days: int, n_cut: int, step: int, betas: list[float], seed: int, emb_dim: int):
    print(f"\n## Recovery of a planted put/call signal: {n_stocks} SIMULATED stocks, SYNTHETIC embeddings (dim {emb_dim}), GENERATED chains")
    torch.set_num_threads(1)
    t_all = time.perf_counter()
    mk = simulate_market(n_stocks, n_days, n_sectors=4, seed=seed)
    cfg = mk.config(Config()).replace(foundation={"embed_dim": emb_dim})
    emb = synthetic_embeddings(mk.prices, mk.index, dim=emb_dim, seed=seed)
    frames = {}
    for b in sorted(set([0.0, *betas])):
        feats = compute_options_features(generate_chains(mk.prices, seed=seed, signal=b, cfg=cfg), mk.prices, cfg)
        frames[b] = twin_frame(emb, mk.prices, mk.index, cfg, options=feats)
    dates = np.sort(frames[0.0].date.unique())
    cuts = [dates[-6 - step * (n_cut - i)] for i in range(n_cut)]   # the last forecasts' labels end at the last date
    print(f"cutoffs: {n_cut} every {step} sessions, {pd.Timestamp(cuts[0]):%Y-%m-%d} .. {pd.Timestamp(cuts[-1]):%Y-%m-%d}; "
          f"twins: TwinSpec.from_config (twins.* as shipped: 6-month window, early stopping), one per stock and cutoff")
    t0 = time.perf_counter()
    plain = walk_forward_twins(frames[0.0], TwinSpec.from_config(cfg), cfg, cuts).dropna(subset=["y_ret"])
    t_plain = time.perf_counter() - t0
    block = cfg.features.horizon
    ph, pi = hit_rate(plain, block), ic_summary(plain, block)[0]
    print(f"\n| planted beta | rank corr(pcr_volume, 5-day return) | plain twins hit | options twins hit | options - plain hit | "
          f"plain twins IC | options twins IC | options - plain IC |\n|---|---|---|---|---|---|---|---|")
    t_opt = 0.0
    for b in betas:
        t0 = time.perf_counter()
        opt = walk_forward_twins(frames[b], TwinSpec.from_config(cfg, options=True), cfg, cuts).dropna(subset=["y_ret"])
        t_opt += time.perf_counter() - t0
        a, p = (x.sort_values(["date", "ticker"]).reset_index(drop=True) for x in (opt, plain))
        assert a[["date", "ticker"]].equals(p[["date", "ticker"]])
        dh = pd.DataFrame({"d": hits(a) - hits(p), "n": 1.0}).groupby(a["date"].to_numpy()).sum().to_numpy()
        di = (daily_ic(a) - daily_ic(p)).dropna()
        rc = frames[b][["pcr_volume", "y_ret"]].corr("spearman").iloc[0, 1]
        print(f"| {b:g} | {rc:+.2f} | {_fmt(ph)} | {_fmt(hit_rate(a, block))} | {_fmt(block_bootstrap(dh, _ratio, block))} | "
              f"{_fmt(pi)} | {_fmt(ic_summary(a, block)[0])} | {_fmt(block_bootstrap(np.c_[di.to_numpy(), np.ones(len(di))], _ratio, block))} |")
    n_ft = n_stocks * n_cut
    print(f"\n{len(plain):,} forecasts per variant on {plain.date.nunique()} dates; 95% intervals: moving-block bootstrap over dates, "
          f"blocks of {block} sessions, paired for the differences.")
    print(f"fine-tunes: plain {n_ft} in {t_plain:.0f} s, options {n_ft * len(betas)} in {t_opt:.0f} s; total {time.perf_counter() - t_all:.0f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["iv", "features", "recovery"], default=None, help="run one part")
    ap.add_argument("--recovery", action="store_true", help="also run the recovery experiment")
    ap.add_argument("--feature-stocks", type=int, default=500)
    ap.add_argument("--feature-days", type=int, default=252)
    ap.add_argument("--batch", type=int, default=50, help="tickers per generation/feature block")
    ap.add_argument("--store-stocks", type=int, default=50, help="also time ingest and build through a DuckDB file for this many stocks (0: skip)")
    ap.add_argument("--stocks", type=int, default=20, help="recovery: simulated stocks")
    ap.add_argument("--days", type=int, default=520, help="recovery: simulated business days")
    ap.add_argument("--cutoffs", type=int, default=6, help="recovery: monthly cutoffs")
    ap.add_argument("--step", type=int, default=21, help="recovery: sessions between cutoffs")
    ap.add_argument("--betas", default="0,0.1,0.25,0.5", help="recovery: planted strengths")
    ap.add_argument("--emb-dim", type=int, default=32)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    with open("/proc/loadavg") as f: load = f.read().split()[:3]
    print(f"# bench_options  {pd.Timestamp.now():%Y-%m-%d %H:%M}  {platform.machine()} {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, load average {' '.join(load)}")
    if a.only in (None, "iv"): bench_iv()
    if a.only in (None, "features"): bench_features(a.feature_stocks, a.feature_days, a.batch, a.store_stocks)
    if a.only == "recovery" or (a.only is None and a.recovery):
        bench_recovery(a.stocks, a.days, a.cutoffs, a.step, [float(b) for b in a.betas.split(",")], a.seed, a.emb_dim)
    with open("/proc/loadavg") as f: print(f"\nload average at the end: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    main()
