"""Time `simulate_market(500, 756)` (500 stocks, three years; best of 3) with peak memory, then validation and a store load.

Run from the repository root: `python benchmarks/bench_simulate.py [n_stocks n_days]`. Figures are synthetic-data timings.
"""
import os
import platform
import resource
import sys
import time
from importlib.metadata import PackageNotFoundError, version


def _rss_mib() -> float:
    "Peak resident memory of this process so far, MiB (Linux reports KiB)."
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20


def _best(f, n: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(n):
        t = time.perf_counter(); out = f(); best = min(best, time.perf_counter() - t)
    return best, out


def main(n_stocks: int = 500, n_days: int = 756):
    from stock_twins.data import ingest_prices
    from stock_twins.config import Config
    from stock_twins.data import validate_prices
    from stock_twins.simulate import simulate_market
    from stock_twins.store import Store
    try: torch_v = version("torch")
    except PackageNotFoundError: torch_v = "not installed"
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor()) \
        if os.path.exists("/proc/cpuinfo") else platform.processor()
    print(f"machine: {platform.platform()}, {cpu}, {os.cpu_count()} CPUs; python {platform.python_version()}, torch {torch_v}")
    rss0 = _rss_mib()
    t_sim, m = _best(lambda: simulate_market(n_stocks, n_days, seed=0))
    rss1 = _rss_mib()
    print(f"simulate_market({n_stocks}, {n_days}): best of 3 {t_sim:.2f} s; {len(m.prices):,} rows; "
          f"peak RSS {rss1:.0f} MiB ({rss1 - rss0:+.0f} MiB over the {rss0:.0f} MiB after imports)")
    t_val, _ = _best(lambda: validate_prices(m.prices))
    print(f"validate_prices: best of 3 {t_val:.2f} s")
    cfg = m.config(Config())
    def load():
        with Store(":memory:") as st: return ingest_prices(st, m.prices, "sim", cfg=cfg)
    t_st, n = _best(load)
    print(f"ingest_prices(Store(':memory:')): best of 3 {t_st:.2f} s for {n:,} rows; peak RSS {_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]))
