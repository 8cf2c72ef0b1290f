"Time `compute_features` + `compute_labels` on the full bundled sample (20 stocks x 8,313 days, with the index), best of 3."
import os, platform, time
from stock_twins.data import load_sample, load_sample_index
from stock_twins.features import FEATURES, compute_features, compute_labels

def main(repeats: int = 3):
    prices, index = load_sample(), load_sample_index()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        feats = compute_features(prices, index)
        t1 = time.perf_counter()
        labels = compute_labels(prices, horizon=5)
        t2 = time.perf_counter()
        times.append((t2 - t0, t1 - t0, t2 - t1))
    total, f, l = min(times)
    try: import torch; tv = torch.__version__
    except ImportError: tv = "not installed"
    import numpy, pandas
    print(f"rows: {len(prices):,} ({prices.ticker.nunique()} tickers x {prices.date.nunique():,} days), {len(FEATURES)} features")
    print(f"compute_features + compute_labels: {total:.2f} s best of {repeats} (features {f:.2f} s, labels {l:.2f} s)")
    print(f"output: features {feats.shape}, labels {labels.shape}")
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, numpy {numpy.__version__}, pandas {pandas.__version__}, torch {tv}")

if __name__ == "__main__": main()
