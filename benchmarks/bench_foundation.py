"""Foundation model: parameter counts, pretraining time on the real sample, one epoch on a simulated
500-stock universe (time, peak RSS), embedding throughput, and the walk-forward evaluation row.

Run (each section alone, or `all` = params, sample, sim):
    python benchmarks/bench_foundation.py params
    python benchmarks/bench_foundation.py sample --epochs 1 --stride 10       # real sample, train_end 2014-12-31, default spec
    python benchmarks/bench_foundation.py sim --max-steps 3 --dates-per-batch 1  # 500 stocks x 756 days; -1 = the whole epoch
    python benchmarks/bench_foundation.py eval --hidden 32 --stride 5        # harness row vs baselines, train_end 2004-12-31
Options: --threads N (torch threads; default torch's), --hidden H (TFT hidden size; default config's 256).
"""
import argparse
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import torch


def _machine() -> str:
    la = os.getloadavg()
    return (f"machine: {platform.platform()} | {platform.processor() or platform.machine()} | CPUs {os.cpu_count()} | "
            f"torch threads {torch.get_num_threads()} | python {platform.python_version()} | torch {torch.__version__} | "
            f"cuda {torch.cuda.is_available()} | load average {la[0]:.1f} {la[1]:.1f} {la[2]:.1f}")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _gpu() -> str:
    "Peak GPU memory so far (empty without CUDA)."
    if not torch.cuda.is_available(): return ""
    return f" | {torch.cuda.get_device_name(0)}, peak GPU memory {torch.cuda.max_memory_allocated() / 1024**3:.2f} GB (bf16 autocast)"


def _spec_kw(a) -> dict:
    return {} if a.hidden is None else {"hidden": a.hidden}


def params(a):
    from stock_twins.config import Config
    from stock_twins.foundation import FoundationModel, FoundationSpec, param_table
    from stock_twins.pretrain import REAL_FEATURES
    spec = FoundationSpec.from_config(Config(), n_features=len(REAL_FEATURES), n_sectors=len(Config().universe.sectors))
    print(f"## parameters at the default config ({spec.n_features} real features, {spec.n_sectors} sectors, hidden {spec.hidden}, "
          f"lstm_layers {spec.lstm_layers}, static covariates {spec.static_dim})")
    print(param_table(FoundationModel(spec)).to_string())


def sample(a):
    from stock_twins.config import load_config
    from stock_twins.data import load_sample, load_sample_index
    from stock_twins.foundation import FoundationSpec
    from stock_twins.embed import embed
    from stock_twins.pretrain import REAL_FEATURES, pretrain
    from stock_twins.store import Store
    cfg = load_config().replace(data={"store": ":memory:"})
    prices, index = load_sample(cfg), load_sample_index(cfg)
    spec = FoundationSpec.from_config(cfg, len(REAL_FEATURES), len(cfg.universe.sectors), **_spec_kw(a))
    st = Store()
    t0 = time.perf_counter()
    model, _ = pretrain(prices, index, cfg, train_end="2014-12-31", epochs=a.epochs, store=st, progress=False, checkpoint_dir=False,
                        spec=spec, date_stride=a.stride, max_steps=a.max_steps)
    wall = time.perf_counter() - t0
    m = model.meta
    print(f"## pretraining on the real sample (20 stocks, up to 2014-12-31), hidden {spec.hidden}, epochs {a.epochs}, date stride {a.stride}")
    print(f"wall {wall:.0f} s (fit {m['train_seconds']} s) | train dates {m['train_dates']}, val dates {m['val_dates']} | "
          f"epochs run {m['epochs_run']}, steps {m['steps']} ({m['train_seconds'] / max(1, m['steps']):.2f} s/step incl. validation) | "
          f"best val loss {m['best_val_loss']} | peak RSS {_peak_rss_gb():.2f} GB{_gpu()}")
    if torch.cuda.is_available(): model = model.cuda()                 # embed on the GPU too
    dates = np.sort(prices.date.unique())
    dates = dates[(dates >= np.datetime64("2015-01-01"))][:a.embed_dates]
    embed(model, prices, index, dates[:2], store=st, cfg=cfg)            # warm-up (features, graphs of the span)
    t0 = time.perf_counter()
    e = embed(model, prices, index, dates, store=st, cfg=cfg, batch_dates=64)
    dt = time.perf_counter() - t0
    print(f"## embedding throughput{' (GPU)' if torch.cuda.is_available() else ''}: {len(e)} stock-dates in {dt:.1f} s = {len(e) / dt:.0f} stock-dates/s "
          f"(incl. features/graphs for the span; {len(dates)} dates x 20 stocks, batch 64 dates)")


def sim(a):
    from stock_twins.config import load_config
    from stock_twins.foundation import FoundationSpec
    from stock_twins.pretrain import REAL_FEATURES, pretrain
    from stock_twins.simulate import simulate_market
    from stock_twins.store import Store
    t0 = time.perf_counter()
    mk = simulate_market(500, 756)
    cfg = load_config().replace(data={"store": ":memory:"}, universe={"sectors": dict(mk.sectors), "pilot": []},  # sector -> tickers
                                foundation={"dates_per_batch": a.dates_per_batch or load_config().foundation.dates_per_batch})
    spec = FoundationSpec.from_config(cfg, len(REAL_FEATURES), len(cfg.universe.sectors), **_spec_kw(a))
    t1 = time.perf_counter()
    model, _ = pretrain(mk.prices, mk.index, cfg, train_end=mk.prices.date.max(), epochs=1, store=Store(), progress=False,
                        checkpoint_dir=False, spec=spec, max_steps=a.max_steps)
    t2 = time.perf_counter()
    m = model.meta
    n_steps_epoch = int(np.ceil(m["train_dates"] / cfg.foundation.dates_per_batch))
    print(f"## simulated universe 500 stocks x 756 days, hidden {spec.hidden}, dates/batch {cfg.foundation.dates_per_batch}")
    print(f"simulate {t1 - t0:.0f} s | pretrain call {t2 - t1:.0f} s (fit {m['train_seconds']} s) | steps run {m['steps']} of "
          f"{n_steps_epoch} in one epoch ({m['train_dates']} training dates) | {m['train_seconds'] / max(1, m['steps']):.1f} s/step | "
          f"peak RSS {_peak_rss_gb():.2f} GB{_gpu()}")


def evaluation(a):
    from stock_twins.config import load_config
    from stock_twins.data import load_sample, load_sample_index
    from stock_twins.evaluation import evaluate
    from stock_twins.foundation import FoundationSpec
    from stock_twins.embed import FoundationForecaster, FoundationProbe
    from stock_twins.pretrain import REAL_FEATURES
    cfg = load_config().replace(data={"store": ":memory:"}, foundation={"train_end": "2004-12-31"})
    prices, index = load_sample(cfg), load_sample_index(cfg)
    spec = FoundationSpec.from_config(cfg, len(REAL_FEATURES), len(cfg.universe.sectors), **_spec_kw(a))
    fc = FoundationForecaster(prices, index, cfg, epochs=a.epochs, spec=spec, date_stride=a.stride)
    t0 = time.perf_counter()
    out = evaluate(models=a.baselines.split(",") + [fc, FoundationProbe(fc)], out_dir=a.out, cfg=cfg, progress=False)
    print(f"## walk-forward evaluation, foundation hidden {spec.hidden}, epochs {a.epochs}, date stride {a.stride}, "
          f"trained once up to {fc.model.meta['train_end']} ({fc.model.meta['train_seconds']} s): {time.perf_counter() - t0:.0f} s")
    print(open(out).read())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("section", choices=["all", "params", "sample", "sim", "eval"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--stride", type=int, default=10)
    p.add_argument("--embed-dates", type=int, default=250)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--dates-per-batch", type=int, default=None)
    p.add_argument("--baselines", default="always_up,momentum_20,ridge,ewma_vol,empirical_q")
    p.add_argument("--out", default="reports/foundation_eval")
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    print(_machine(), flush=True)
    if a.section == "all":       # each section in its own process, so that peak RSS is its own
        for s in ("params", "sample", "sim"):
            subprocess.run([sys.executable, __file__, s, *sys.argv[2:]], check=True)
        return
    {"params": params, "sample": sample, "sim": sim, "eval": evaluation}[a.section](a)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
