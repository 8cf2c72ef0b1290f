"""Walk-forward figures of the LightGBM fallback (stock_twins.fallback) on the bundled real sample.

    python benchmarks/bench_fallback.py --valid     # validation years 2000-2004: vol scale on/off against EWMA (the design choice)
    python benchmarks/bench_fallback.py --full      # test years 2005-2022, yearly refits, next to every baseline (the evaluation run)
    python benchmarks/bench_fallback.py --full --out reports/fallback   # keep report.md, scores.csv, predictions.parquet

Prints the score table, the fallback's fit+predict time, and the machine (platform, CPU count, torch and LightGBM
versions, load average: other jobs on the machine inflate wall time, not CPU time).
"""
import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

COLS = ["n", "hit", "hit_lo", "hit_hi", "edge", "edge_lo", "edge_hi", "ic", "brier", "qlike", "vol_rmse", "cov80", "width80",
        "pinball", "regime_acc", "regime_f1", "regime_acc_persist"]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed(m, timings):
    for meth in ("fit", "predict"):
        f = getattr(m, meth)
        def timed(*args, _f=f, **kw):
            t = time.perf_counter(); r = _f(*args, **kw); timings[m.name] = timings.get(m.name, 0.0) + time.perf_counter() - t; return r
        setattr(m, meth, timed)
    return m


def valid(cfg):
    "Validation years: the fallback with and without its QLIKE scale on vol, next to EWMA."
    import pandas as pd
    from stock_twins.baselines import EWMAVol
    from stock_twins.data import load_sample, load_sample_index
    from stock_twins.evaluation import walk_forward, walk_forward_splits
    from stock_twins.metrics import qlike, score
    from stock_twins.regime import regime_labels
    from stock_twins.fallback import LightGBMFallback
    from stock_twins.features import compute_features, compute_labels
    ev = cfg.evaluation
    end = f"{ev.valid_end}-12-31"
    p, i = load_sample(cfg), load_sample_index(cfg)
    p, i = p[p.date <= end].reset_index(drop=True), i[i.date <= end].reset_index(drop=True)
    feats, labels, regs = compute_features(p, i), compute_labels(p, cfg.features.horizon), regime_labels(p, i, cfg)
    splits = walk_forward_splits(feats.date, ev.valid_start, ev.valid_end, ev.refit, cfg.features.horizon, ev.purge)
    fb, scales, timings = LightGBMFallback.from_config(cfg), [], {}
    fit = fb.fit
    fb.fit = lambda train: (fit(train), scales.append(fb.vol_scale_))[0]
    w = walk_forward([_timed(fb, timings), EWMAVol(cfg.features.horizon, cfg.project.seed)], feats, labels, splits, regs,
                     cfg.features.horizon, progress=False)
    f = w[w.model == "fallback"]
    raw = f.assign(vol=f.vol / f.split.astype(int).map(dict(enumerate(scales))))
    e = w[w.model == "ewma_vol"]
    rows = {y: dict(fallback=qlike(f[f.date.dt.year == y]), fallback_unscaled=qlike(raw[raw.date.dt.year == y]),
                    ewma_vol=qlike(e[e.date.dt.year == y])) for y in sorted(f.date.dt.year.unique())}
    rows["all"] = dict(fallback=qlike(f), fallback_unscaled=qlike(raw), ewma_vol=qlike(e))
    print(f"validation {ev.valid_start}-{ev.valid_end}, QLIKE of vol (lower is better); vol scales per split: "
          + ", ".join(f"{s:.3f}" for s in scales))
    print(pd.DataFrame(rows).T.round(4).to_string())
    print()
    print(score(w, ev.block, ev.n_boot, cfg.project.seed)[COLS].dropna(how="all", axis=1).T.round(4).to_string())
    return timings


def full(cfg, out):
    "Test years with every baseline; returns the fallback's timing."
    import pandas as pd
    from stock_twins.baselines import make_baselines
    from stock_twins.evaluation import evaluate
    from stock_twins.fallback import LightGBMFallback
    timings = {}
    models = [_timed(LightGBMFallback.from_config(cfg), timings)] + make_baselines(None, cfg)
    evaluate(models, out_dir=out, cfg=cfg, progress=False)
    sc = pd.read_csv(Path(out) / "scores.csv", index_col="model")
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(sc[COLS].round(4).to_string(na_rep=""))
    return timings


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--valid", action="store_true", help="validation years: vol scale on/off against EWMA")
    g.add_argument("--full", action="store_true", help="test years next to every baseline")
    ap.add_argument("--out", default=None, help="output folder of --full (default: a temporary one)")
    a = ap.parse_args()
    import lightgbm
    import torch
    from stock_twins.config import load_config
    cfg = load_config()
    load0 = os.getloadavg()
    t0, c0 = time.perf_counter(), _cpu()
    with tempfile.TemporaryDirectory() as d:
        timings = valid(cfg) if a.valid else full(cfg, a.out or d)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    print(f"\nwall {wall:.0f} s, CPU {cpu:.0f} s; fallback fit+predict {timings.get('fallback', float('nan')):.0f} s"
          + (f"; report in {a.out}" if a.out else ""))
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, torch {torch.__version__}, lightgbm {lightgbm.__version__}")
    print(f"load average at start {load0[0]:.1f}, at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
