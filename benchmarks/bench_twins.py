"""Digital-twin benchmarks: batched fine-tuning against the one-by-one loop (16, 50, 500 twins), batched inference,
weekly retrain, a 500-stock universe.

Run: python benchmarks/bench_twins.py [--quick] [--train-500]
     python benchmarks/bench_twins.py --batched-only      # only the batched vs one-by-one fine-tuning table

All inputs are a SIMULATED market (stock_twins.simulate) with SYNTHETIC foundation embeddings
(stock_twins.testing.synthetic_embeddings): timings depend only on shapes, but no accuracy figure here means
anything about the real foundation.
"""
from __future__ import annotations
import argparse
import os
import platform
import resource
import tempfile
import time

import numpy as np
import pandas as pd
import torch

from stock_twins.data import ingest_prices

from stock_twins.config import Config
from stock_twins.manager import TwinManager, TwinStack, loop_forward
from stock_twins.simulate import simulate_market
from stock_twins.store import Store
from stock_twins.testing import synthetic_embeddings
from stock_twins.twin import DigitalTwin, TwinSpec
from stock_twins.twin_data import load_twin_frame, twin_frame
from stock_twins.twin_train import fine_tune, fine_tune_many, one_thread, retrain_all, save_twin, twin_config_hash

FH = "5e" * 32  # foundation hash stand-in (synthetic embeddings)


def _rss_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KB


def _time(fn, reps: int) -> float:
    "Median seconds of `fn()` over `reps` runs after one warm-up."
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _prior(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn(n, generator=g) * 0.02, torch.rand(n, generator=g) * 0.6 + 0.2,
                        torch.rand(n, generator=g) * 0.5 + 0.1, torch.randint(-1, 4, (n,), generator=g).float()], -1)


def bench_batched(ns=(16, 50, 500), one_by_one_max: int = 500):
    "All twins of a cutoff in one batched (vmap) fine-tune against the one-by-one loop (`fine_tune` per stock), same spec and data."
    print(f"\n## Batched fine-tuning vs the one-by-one loop (full-size spec, twins section defaults; SYNTHETIC embeddings)")
    n = max(ns)
    t0 = time.perf_counter()
    m = simulate_market(n, 320, n_sectors=11, seed=4)
    cfg = m.config(Config())
    fr = twin_frame(synthetic_embeddings(m.prices, m.index, dim=128), m.prices, m.index, cfg)
    print(f"simulated {n} stocks x 320 days + synthetic embeddings + twin_frame: {time.perf_counter() - t0:.1f} s")
    cut = pd.Timestamp(m.prices.date.unique()[300])
    spec, tickers = TwinSpec.from_config(cfg), list(m.stocks.ticker)
    fine_tune_many(tickers[:2], fr, spec, cfg, cut)                      # warm-up (imports, first vmap trace)
    rows = []
    for k in ns:
        la0 = os.getloadavg()[0]
        t0 = time.perf_counter(); tw, met, failed = fine_tune_many(tickers[:k], fr, spec, cfg, cut); b = time.perf_counter() - t0
        one = np.nan
        if k <= one_by_one_max:
            t0 = time.perf_counter()
            for t in tickers[:k]: fine_tune(t, fr, spec, cfg, cut)
            one = time.perf_counter() - t0
        ep = pd.Series([r["epochs"] for r in met.values()])
        rows.append(dict(twins=k, trained=len(tw), batched_s=b, one_by_one_s=one, speedup=one / b, median_steps=ep.median(),
                         max_steps=ep.max(), load_before=la0, load_after=os.getloadavg()[0]))
    df = pd.DataFrame(rows)
    print(df.round(2).to_string(index=False))
    return df


def _twins(n: int, spec: TwinSpec, seed: int = 0) -> list[DigitalTwin]:
    torch.manual_seed(seed)
    out = []
    for _ in range(n):
        t = DigitalTwin(spec)
        with torch.no_grad():
            for p in t.parameters():
                p.add_(0.05 * torch.randn_like(p))
        out.append(t.eval())
    return out


def bench_inference(reps: int):
    print("\n## Batched inference (TwinStack: stack_module_state + functional_call + vmap, inference_mode)")
    rows = []
    for options in (False, True):
        spec = TwinSpec.from_config(Config().replace(twins={"options": options}))
        for n in (20, 50):
            ts = _twins(n, spec)
            emb, reg, pr = torch.randn(n, 128), torch.randn(n, 6), _prior(n)
            opt = torch.randn(n, 40) if options else None
            stack_s = _time(lambda: TwinStack.of(ts), max(3, reps // 10))
            st = TwinStack.of(ts)
            for threads in (1, torch.get_num_threads()):
                n0 = torch.get_num_threads(); torch.set_num_threads(threads)
                try:
                    v = _time(lambda: st(emb, reg, pr, opt), reps)
                    lp = _time(lambda: loop_forward(ts, emb, reg, pr, opt), max(3, reps // 5))
                finally:
                    torch.set_num_threads(n0)
                rows.append(dict(options=options, twins=n, threads=threads, params_each=ts[0].n_params,
                                 stack_ms=stack_s * 1e3, vmap_batch_ms=v * 1e3, vmap_per_stock_ms=v * 1e3 / n,
                                 loop_batch_ms=lp * 1e3))
    df = pd.DataFrame(rows)
    print(df.round(3).to_string(index=False))
    return df


def bench_gpu(reps: int):
    "Batched twin inference on CUDA (the stack lives on the GPU; inputs are copied in, outputs copied out)."
    if not torch.cuda.is_available():
        print("\n## GPU: no CUDA device, skipped"); return None
    print(f"\n## Batched inference on {torch.cuda.get_device_name(0)} (TwinStack on the GPU, host->device->host copies included)")
    rows, dev = [], torch.device("cuda")
    for options in (False, True):
        spec = TwinSpec.from_config(Config().replace(twins={"options": options}))
        for n in (50, 500):
            st = TwinStack.of([t.to(dev) for t in _twins(n, spec)])
            emb, reg, pr = torch.randn(n, 128), torch.randn(n, 6), _prior(n)
            opt = torch.randn(n, 40) if options else None
            def run():
                o = st(emb.to(dev), reg.to(dev), pr.to(dev), None if opt is None else opt.to(dev))
                o = {k: v.cpu() for k, v in o.items()}
                torch.cuda.synchronize()
                return o
            v = _time(run, reps)
            rows.append(dict(options=options, twins=n, params_each=sum(x[0].numel() for x in st.params.values()),
                             batch_ms=v * 1e3, per_stock_ms=v * 1e3 / n))
    df = pd.DataFrame(rows)
    print(df.round(4).to_string(index=False))
    return df


def _market_store(n_stocks: int, n_days: int, dim: int = 128, seed: int = 0):
    m = simulate_market(n_stocks, n_days, n_sectors=min(11, n_stocks), seed=seed)
    st = Store()
    cfg = m.config(Config())
    ingest_prices(st, m.prices, "sim", cfg=cfg)
    ingest_prices(st, m.index, "sim", table="index_prices")
    st.upsert("embeddings", synthetic_embeddings(m.prices, m.index, dim=dim))
    return m, st, cfg


def bench_fine_tune(n_twins: int):
    print(f"\n## Fine-tune time per twin, one at a time (full-size spec, twins section defaults; {n_twins} twins, in-process)")
    m, st, cfg = _market_store(max(n_twins, 2), 500, seed=1)
    cut = pd.Timestamp(m.prices.date.unique()[480])
    fr = twin_frame(st.read("embeddings"), st.prices(), m.index, cfg)
    spec = TwinSpec.from_config(cfg)
    rows = []
    for i, t in enumerate(m.stocks.ticker[:n_twins]):
        t0 = time.perf_counter()
        _, met = fine_tune(t, fr, spec, cfg, cut)
        rows.append(dict(ticker=t, seconds=time.perf_counter() - t0, epochs=met["epochs"], best_epoch=met["best_epoch"],
                         n_train=met["n_train"], val_init=met["val_loss_init"], val=met["val_loss"]))
    df = pd.DataFrame(rows)
    print(df.round(3).to_string(index=False))
    print(f"first twin (includes the one-off torch optimizer/dynamo import): {df.seconds.iloc[0]:.2f} s; "
          f"median of the others: {df.seconds.iloc[1:].median():.2f} s; mean epochs {df.epochs.mean():.0f}")
    return df


def bench_retrain(n: int, n_jobs: int):
    print(f"\n## retrain_all: {n} twins in one batch (includes the store read and {n} checkpoint writes)")
    m, st, cfg = _market_store(n, 500, seed=2)
    with tempfile.TemporaryDirectory() as d:
        c = cfg.replace(data={"checkpoint_dir": d}, universe={"pilot": list(m.stocks.ticker)})
        cut = pd.Timestamp(m.prices.date.unique()[480])
        t0 = time.perf_counter()
        s = retrain_all(c, st, cut, n_jobs=n_jobs, foundation_hash=FH, progress=False)
        wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        s2 = retrain_all(c, st, cut, n_jobs=n_jobs, foundation_hash=FH, progress=False)
        resume = time.perf_counter() - t0
    print(s.status.value_counts().to_dict(), f"| wall {wall:.1f} s = {wall / n:.2f} s per twin | sum of per-twin seconds "
          f"{s.seconds.sum():.1f} s | resumed call (all skipped: {(s2.status == 'skipped').all()}) {resume:.2f} s")
    print(f"peak RSS: this process {_rss_mb():.0f} MB, largest worker {_rss_mb(resource.RUSAGE_CHILDREN):.0f} MB")
    return wall


def bench_universe(n: int, train: bool, n_jobs: int):
    print(f"\n## A simulated {n}-stock universe, every stock a twin")
    t0 = time.perf_counter()
    m, st, cfg = _market_store(n, 320, seed=3)
    print(f"simulate + features + synthetic embeddings + store load: {time.perf_counter() - t0:.1f} s, RSS {_rss_mb():.0f} MB")
    tickers = list(m.stocks.ticker)
    dates = m.prices.date.unique()
    cut, day = pd.Timestamp(dates[300]), pd.Timestamp(dates[310])
    with tempfile.TemporaryDirectory() as d:
        c = cfg.replace(data={"checkpoint_dir": d}, universe={"pilot": tickers})
        t0 = time.perf_counter()
        if train:
            s = retrain_all(c, st, cut, n_jobs=n_jobs, foundation_hash=FH, progress=False)
            print(f"retrain_all of {n} twins, n_jobs={n_jobs}: {time.perf_counter() - t0:.1f} s ({s.status.value_counts().to_dict()})")
        else:
            spec, ch = TwinSpec.from_config(c), twin_config_hash(c)
            for t, tw in zip(tickers, _twins(n, spec)):
                save_twin(tw, d, t, cut, ch, FH, {})
            print(f"create + checkpoint {n} twins (untrained, random weights; --train-500 fine-tunes them): {time.perf_counter() - t0:.1f} s")
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
        print(f"checkpoints on disk: {size / 2**20:.1f} MB ({size / n / 1024:.0f} KB per twin)")
        t0 = time.perf_counter()
        mgr = TwinManager(c, st, foundation_hash=FH)
        frame = load_twin_frame(st, c, tickers, day, day)
        t_inputs = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = mgr.predict(tickers, day, inputs=frame)          # loads, verifies and stacks all twins
        t_first = time.perf_counter() - t0
        t_warm = _time(lambda: mgr.predict(tickers, day, inputs=frame), 10)
        t0 = time.perf_counter()
        mgr.predict(tickers, day)                                # inputs read from the store
        t_store = time.perf_counter() - t0
        assert (pred.source == "twin").all() and len(pred) == n
    print(f"manager + inputs for {n} stocks from the store: {t_inputs:.2f} s | first predict (load {n} checkpoints, verify, "
          f"stack): {t_first:.2f} s | warm predict of {n}: {t_warm * 1e3:.1f} ms ({t_warm * 1e3 / n:.3f} ms per stock) | "
          f"predict reading inputs from the store: {t_store:.2f} s")
    print(f"peak RSS of this process: {_rss_mb():.0f} MB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and twins")
    ap.add_argument("--train-500", action="store_true", help="fine-tune the 500 twins instead of checkpointing random ones")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--gpu-only", action="store_true", help="only the CUDA inference section")
    ap.add_argument("--batched-only", action="store_true", help="only the batched vs one-by-one fine-tuning table")
    a = ap.parse_args()
    print("# bench_twins")
    print(f"machine: {platform.platform()} | {platform.processor() or platform.machine()} | CPUs {os.cpu_count()} | "
          f"python {platform.python_version()} | torch {torch.__version__} (intra-op threads {torch.get_num_threads()}) | "
          f"load average {os.getloadavg()[0]:.1f}")
    print("DATA: simulated market with SYNTHETIC foundation embeddings (the foundation's embeddings are not used here); "
          "timings depend on shapes only.")
    if a.gpu_only:
        bench_gpu(reps=50); return
    if a.batched_only:
        bench_batched((16, 50) if a.quick else (16, 50, 500)); return
    bench_batched((16, 50) if a.quick else (16, 50, 500))
    bench_inference(reps=20 if a.quick else 200)
    bench_fine_tune(3 if a.quick else 6)
    bench_retrain(20, a.n_jobs)
    bench_universe(100 if a.quick else 500, a.train_500, a.n_jobs)
    bench_gpu(reps=20 if a.quick else 100)


if __name__ == "__main__":
    main()
