"""Timings of stock_twins.graph: building correlation graphs, writing/reading them in DuckDB, PyG tensors.

Run: python benchmarks/bench_graph.py
"""
import os
import platform
import time

import numpy as np
import pandas as pd
import torch

from stock_twins.data import load_sample
from stock_twins.graph import DuckDBGraphStore, correlation_graph, to_pyg
from stock_twins.store import Store


def _time(f, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter(); out = f(); best = min(best, time.perf_counter() - t0)
    return best, out


def _synthetic(n_stocks: int, n_days: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2018-01-01", periods=n_days)
    f = rng.normal(0, 0.01, (n_days, 5))
    r = f @ rng.uniform(-1, 1, (5, n_stocks)) + rng.normal(0, 0.01, (n_days, n_stocks))
    px = pd.DataFrame(50 * np.exp(np.cumsum(r, 0)), index=days, columns=[f"S{i:03d}" for i in range(n_stocks)])
    return px.rename_axis("date").reset_index().melt(id_vars="date", var_name="ticker", value_name="adj_close")


def main():
    print(f"machine: {platform.platform()} | {platform.processor() or platform.machine()} | CPUs {os.cpu_count()} | "
          f"python {platform.python_version()} | torch {torch.__version__} | numpy {np.__version__} | pandas {pd.__version__}")
    rows = []
    sample = load_sample()
    for name, prices in [("sample 20 x 8313d", sample), ("synthetic 100 x 756d", _synthetic(100, 756)),
                         ("synthetic 500 x 756d", _synthetic(500, 756))]:
        n_days = prices.date.nunique()
        for window, every in [(60, 1), (120, 1), (60, 5)]:
            s, g = _time(lambda: correlation_graph(prices, window=window, k=5, every=every), repeat=1 if "500" in name else 3)
            graphs = g.date.nunique()
            rows.append((name, window, every, graphs, len(g), s, 1e3 * s / max(graphs, 1)))
    print(pd.DataFrame(rows, columns=["data", "window", "every", "graphs", "edges", "seconds", "ms/graph"]).to_string(index=False))

    g = correlation_graph(sample, window=60, k=5, every=5)
    st = DuckDBGraphStore(Store())
    s_w, _ = _time(lambda: st.write(g), repeat=1)
    s_rw, _ = _time(lambda: st.write(g), repeat=1)
    ds = st.dates()
    s_r, _ = _time(lambda: [st.read(d) for d in ds[:200]], repeat=1)
    tick = sorted(sample.ticker.unique())
    s_p, _ = _time(lambda: [st.edge_index(d, tick) for d in ds[:200]], repeat=1)
    s_t, _ = _time(lambda: to_pyg(g[g.date == ds[-1]], tick), repeat=5)
    print(f"DuckDB (in memory), weekly sample graph ({len(ds)} dates, {len(g)} edges): write {s_w:.2f} s, "
          f"rewrite {s_rw:.2f} s, read {1e3 * s_r / 200:.1f} ms/date, edge_index {1e3 * s_p / 200:.1f} ms/date; "
          f"to_pyg of one date {1e3 * s_t:.2f} ms")


if __name__ == "__main__":
    main()
