"""Ingest, validation and features for 500 stocks x 10 years through the user-data path (issue 11).

The market is SIMULATED (`stock_twins.simulate`, seeded): generated data, not evidence about real markets. It is
written as one CSV file per stock in three dialects (Yahoo-style exports, OHLCV dumps with OpenInt, Stooq-style
files) plus an index file, then read back through the same loaders a user's files go through:

1. read + recognise + validate the folder (`stock_twins.data.read_source`);
2. ingest into a DuckDB store on disk (`ingest_prices`: validation, upsert per column set, the per-ticker column
   check, the records) and the index file (`ingest_index`);
3. point-in-time features and 5-day labels of every stock with that index, stored (`pipeline.run_features`).

Target: under 60 s on the 2-core VM. Usage: `python benchmarks/bench_ingest.py [--stocks 500] [--years 10]`.
"""
import argparse, os, platform, tempfile, time, warnings
from pathlib import Path

def _write(market, d: Path) -> None:
    "One file per stock, the dialects in turn; the index as a one-stock file."
    import pandas as pd
    p = market.prices
    for k, (t, g) in enumerate(p.groupby("ticker", sort=True)):
        day = g["date"]
        if k % 3 == 0:       # Yahoo-style export
            g = pd.DataFrame({"Date": day.dt.strftime("%Y-%m-%d"), "Open": g.open, "High": g.high, "Low": g.low, "Close": g.close,
                              "Adj Close": g.adj_close, "Volume": g.volume.astype("int64")})
            g.to_csv(d / f"{t}.csv", index=False)
        elif k % 3 == 1:     # per-ticker OHLCV dump with OpenInt (no adjusted close)
            g = pd.DataFrame({"Date": day.dt.strftime("%Y-%m-%d"), "Open": g.open, "High": g.high, "Low": g.low, "Close": g.close,
                              "Volume": g.volume.astype("int64"), "OpenInt": 0})
            g.to_csv(d / f"{t.lower()}.us.txt", index=False)
        else:                # Stooq-style
            g = pd.DataFrame({"<TICKER>": f"{t}.US", "<PER>": "D", "<DATE>": day.dt.strftime("%Y%m%d"), "<TIME>": "000000",
                              "<OPEN>": g.open, "<HIGH>": g.high, "<LOW>": g.low, "<CLOSE>": g.close, "<VOL>": g.volume.astype("int64"),
                              "<OPENINT>": 0})
            g.to_csv(d / f"{t.lower()}.us.txt", index=False)

def main(n_stocks: int = 500, years: int = 10):
    import numpy, pandas
    from stock_twins.config import Config
    from stock_twins.data import ingest_index, ingest_prices, read_source
    from stock_twins.pipeline import run_features
    from stock_twins.simulate import simulate_market
    from stock_twins.store import Store
    warnings.simplefilter("ignore")                      # the loaders' notes (dropped OpenInt, unknown tickers) are expected here
    load0 = open("/proc/loadavg").read().split()[:3]
    t0 = time.perf_counter()
    m = simulate_market(n_stocks, 252 * years, min(11, n_stocks), seed=0)   # SIMULATED market
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp); src = tmp / "prices"; src.mkdir()
        _write(m, src)
        m.index.rename(columns={"date": "Date", "close": "Close"})[["Date", "Close"]].to_csv(tmp / "simidx.csv", index=False)
        mb = sum(f.stat().st_size for f in src.iterdir()) / 1e6
        t_setup = time.perf_counter() - t0
        cfg = Config().replace(data={"store": str(tmp / "st.duckdb")})
        t = {}
        s = time.perf_counter(); loaded = read_source(src); t["read, recognise, validate"] = time.perf_counter() - s
        with Store(tmp / "st.duckdb") as st:
            s = time.perf_counter()
            n = ingest_prices(st, loaded.prices, loaded.source, cfg=cfg)
            ingest_index(st, read_source(tmp / "simidx.csv").prices, "simulated index")
            t["ingest into DuckDB (validate, upsert, per-ticker check)"] = time.perf_counter() - s
            s = time.perf_counter(); feats, fresh, info = run_features(cfg, st); t["features and labels, stored"] = time.perf_counter() - s
            assert fresh and len(feats) == n == len(m.prices) and info["index"] == "SIMIDX"
    load1 = open("/proc/loadavg").read().split()[:3]
    total = sum(t.values())
    print(f"SIMULATED market: {n_stocks} stocks x {252 * years:,} days = {n:,} rows, {mb:.0f} MB of CSV in 3 dialects "
          f"({', '.join(f'{k} {len(v)}' for k, v in loaded.dialects.items())}); setup (simulate + write) {t_setup:.1f} s, not timed")
    for k, v in t.items(): print(f"  {k:<58} {v:6.1f} s")
    print(f"  {'total (target < 60 s)':<58} {total:6.1f} s")
    print(f"load average at start {' '.join(load0)}, at end {' '.join(load1)}")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}, numpy {numpy.__version__}, pandas {pandas.__version__}")
    return total

if __name__ == "__main__":
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--stocks", type=int, default=500); a.add_argument("--years", type=int, default=10)
    args = a.parse_args()
    main(args.stocks, args.years)
