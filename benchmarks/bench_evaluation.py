"""Time the walk-forward evaluation of the baselines on the bundled real sample.

    python benchmarks/bench_evaluation.py            # quick configuration (4 stocks, 2019-2020)
    python benchmarks/bench_evaluation.py --full     # the full baseline run (20 stocks, 2005-2022, yearly refits)
    python benchmarks/bench_evaluation.py --full --models lgbm,garch

Prints wall and CPU seconds, the per-model fit+predict time, and the machine (platform, CPU count, torch version,
load average at start and end: other jobs on the machine inflate wall time, not CPU time).
"""
import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the full run instead of the quick one")
    ap.add_argument("--models", default=None, help="comma-separated baseline names (default: all)")
    ap.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    a = ap.parse_args()
    import torch
    from stock_twins.config import load_config
    from stock_twins.evaluation import evaluate
    from stock_twins.baselines import make_baselines
    cfg = load_config()
    names = a.models.split(",") if a.models else None
    models = make_baselines(names, cfg)
    timings = {m.name: 0.0 for m in models}
    for m in models:                                   # wrap fit/predict to time each model
        for meth in ("fit", "predict"):
            f = getattr(m, meth)
            def timed(*args, _f=f, _n=m.name, **kw):
                t = time.perf_counter(); r = _f(*args, **kw); timings[_n] += time.perf_counter() - t; return r
            setattr(m, meth, timed)
    load0 = os.getloadavg()
    t0, c0 = time.perf_counter(), _cpu()
    with tempfile.TemporaryDirectory() as d:
        out = Path(a.out or d)
        report = evaluate(models=models, quick=not a.full, out_dir=out, cfg=cfg, progress=False)
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        print(f"\nreport: {report if a.out else '(temporary)'}")
    print(f"\n{'full' if a.full else 'quick'} evaluation of {len(models)} models: wall {wall:.1f} s, CPU {cpu:.1f} s")
    for n, s in sorted(timings.items(), key=lambda kv: -kv[1]): print(f"  {n:<14} fit+predict {s:7.1f} s")
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, torch {torch.__version__}")
    print(f"load average at start {load0[0]:.1f}, at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
