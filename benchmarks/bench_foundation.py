"""Foundation model benchmarks: parameters, a training step and the epoch it projects on the real sample, embedding
throughput, 50 stocks at one date (foundation + twins, warm), a simulated 500-stock universe (time per step, projected
epoch, peak RSS), a whole `pretrain` run, and the walk-forward evaluation row.

Every section prints the machine (CPU, torch threads, load average) first and a `RESULT {json}` line last; `compare`
runs sections alternately on two copies of the code (old, new, old, new, ...) in fresh processes, so that both see the
same minutes of a shared machine. The code measured is the one on PYTHONPATH (or `--old`/`--new` for `compare`);
sections that need the per-day sharing of issue 13 (`span_batch`) fall back to the stacked-window path on older code.

Run:
    python benchmarks/bench_foundation.py params
    python benchmarks/bench_foundation.py step --threads 1                 # sample to 2014-12-31, default size: 8-date step, projected epoch
    python benchmarks/bench_foundation.py embed --threads 1                # 250 dates of 2015 x 20 stocks through `embed`, cold
    python benchmarks/bench_foundation.py onedate --threads 1              # 50 simulated stocks at one date: foundation + 50 twins, warm
    python benchmarks/bench_foundation.py sim --threads 1 --max-steps 3    # 500 stocks x 756 days: s/step, projected epoch, peak RSS
    python benchmarks/bench_foundation.py sample --epochs 1 --stride 1     # a whole `pretrain` call on the sample to 2014-12-31
    python benchmarks/bench_foundation.py eval --hidden 64 --stride 5      # harness row vs baselines, train_end 2004-12-31
    python benchmarks/bench_foundation.py compare --old /tmp/base --sections step,embed,onedate --rounds 2 --threads 1
        (--old: a copy of the code before, e.g. `mkdir /tmp/base && git archive 9250e04 | tar -x -C /tmp/base`)
Options: --threads N (torch threads; default torch's), --hidden H (TFT hidden size; default config's 256),
--precision 32-true|bf16-mixed (training sections), --memory-gb G (step budget; default config's).
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parents[1]


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _machine() -> str:
    import stock_twins
    return (f"machine: {platform.platform()} | {platform.processor() or platform.machine()} | CPUs {os.cpu_count()} | "
            f"torch threads {torch.get_num_threads()} | python {platform.python_version()} | torch {torch.__version__} | "
            f"cuda {torch.cuda.is_available()} | code {Path(stock_twins.__file__).parent.parent} | load average {_load()}")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _gpu() -> str:
    "Peak GPU memory so far (empty without CUDA)."
    if not torch.cuda.is_available(): return ""
    return f" | {torch.cuda.get_device_name(0)}, peak GPU memory {torch.cuda.max_memory_allocated() / 1024**3:.2f} GB"


def _spec_kw(a) -> dict:
    return {} if a.hidden is None else {"hidden": a.hidden}


def _shared() -> bool:
    "Whether this code encodes each stock-day once (issue 13), or stacks every window's days."
    import stock_twins.pretrain as p
    return hasattr(p, "span_batch")


def _median_time(fn, reps: int) -> tuple[float, list[float]]:
    "Median seconds of `fn()` over `reps` runs after one warm-up, and the runs."
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), [round(t, 3) for t in ts]


def _result(d: dict):
    d = {"section": d.pop("section"), "shared": _shared(), "threads": torch.get_num_threads(), "load": _load(), **d,
         "peak_rss_gb": round(_peak_rss_gb(), 2)}
    print("RESULT " + json.dumps(d), flush=True)


def _sample_model(cfg, cs, spec, seed: int = 0):
    "A default-size model with a scaler fitted on the cross-sections (random weights: timings depend on shapes only)."
    from stock_twins.foundation import FoundationModel
    from stock_twins.pretrain import fit_scaler
    torch.manual_seed(seed)
    m = FoundationModel(spec)
    m.temporal.set_scaler(*fit_scaler(cs.values, cs.valid, np.arange(len(cs.dates))))
    m.meta = {"features": list(cs.features), "sectors": list(cs.sectors), "lookback": spec.lookback}
    return m


def params(a):
    from stock_twins.config import Config
    from stock_twins.foundation import FoundationModel, FoundationSpec, param_table
    from stock_twins.pretrain import REAL_FEATURES
    spec = FoundationSpec.from_config(Config(), n_features=len(REAL_FEATURES), n_sectors=len(Config().universe.sectors))
    print(f"## parameters at the default config ({spec.n_features} real features, {spec.n_sectors} sectors, hidden {spec.hidden}, "
          f"lstm_layers {spec.lstm_layers}, static covariates {spec.static_dim})")
    t = param_table(FoundationModel(spec))
    print(t.to_string())
    _result({"section": "params", "total": int(t.loc["total", "params"])})


def _train_step(model, opt, cs, block, spec, cfg, a):
    "One optimisation step over the dates `block`, as `pretrain`'s training step does it in this code."
    from stock_twins.foundation import pretrain_loss
    from stock_twins.pretrain import DateDataset, MODEL_KEYS, collate_dates
    dev = next(model.parameters()).device
    bf16 = a.precision == "bf16-mixed" or (a.precision == "auto" and dev.type == "cuda")
    if _shared():
        from stock_twins.pretrain import SPAN_KEYS, memory_budget, plan_step
        parts = plan_step(cs, block, spec, memory_budget(cfg, dev.type == "cuda"))
        keys = SPAN_KEYS
    else:
        parts, keys = [collate_dates([DateDataset(cs, [d], spec.lookback)[0] for d in block])], MODEL_KEYS
        for p in parts: p["recompute"] = 0
    n = max(1, sum(int(p["keep"].sum()) for p in parts))
    opt.zero_grad()
    for p in parts:
        kw = {"recompute": p["recompute"]} if p["recompute"] else {}
        p = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in p.items()}
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(**{k: p[k] for k in keys}, **kw)
        y = p["y"]
        loss = pretrain_loss(out, y[:, 0], y[:, 1], y[:, 2], p["keep"], spec.quantiles, float(model.heads.ret_scale))["loss"]
        (loss * int(p["keep"].sum()) / n).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if dev.type == "cuda": torch.cuda.synchronize()
    return len(parts)


def _val_step(model, cs, block, spec, cfg):
    from stock_twins.pretrain import DateDataset, MODEL_KEYS, collate_dates
    dev = next(model.parameters()).device
    with torch.no_grad():
        if _shared():
            from stock_twins.pretrain import SPAN_KEYS, memory_budget, plan_step
            for p in plan_step(cs, block, spec, memory_budget(cfg, dev.type == "cuda")): model(**{k: p[k].to(dev) for k in SPAN_KEYS})
        else: model(**{k: v.to(dev) for k, v in collate_dates([DateDataset(cs, [d], spec.lookback)[0] for d in block]).items() if k in MODEL_KEYS})
        if dev.type == "cuda": torch.cuda.synchronize()


def _step_and_epoch(a, cfg, prices, index, label: str, stride: int):
    "Time training steps of `dates_per_batch` consecutive training dates and project one epoch (training + validation steps)."
    from stock_twins.foundation import FoundationSpec
    from stock_twins.graph import DuckDBGraphStore
    from stock_twins.pretrain import REAL_FEATURES, _split_days, build_cross_sections
    from stock_twins.store import Store
    t0 = time.perf_counter()
    cs = build_cross_sections(prices, index, cfg, DuckDBGraphStore(Store()))
    t_cs = time.perf_counter() - t0
    spec = FoundationSpec.from_config(cfg, len(REAL_FEATURES), len(cs.sectors), **_spec_kw(a))
    model = _sample_model(cfg, cs, spec).train().to("cuda" if torch.cuda.is_available() else "cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tr, va = _split_days(cs, cfg.features.horizon)
    tr, va = tr[::-1][::stride][::-1], va[::-1][::stride][::-1]
    k = cfg.foundation.dates_per_batch
    blocks = [tr[i:i + k] for i in range(len(tr) // 2, len(tr) - k, k)][:a.steps + 1]   # consecutive dates from the middle
    micro = []
    def run():
        micro.append(_train_step(model, opt, cs, blocks[len(micro) % len(blocks)], spec, cfg, a))
    s_step, runs = _median_time(run, a.steps)
    model.eval()
    vblock = va[:k] if len(va) >= k else tr[-k:]
    s_val, _ = _median_time(lambda: _val_step(model, cs, vblock, spec, cfg), max(1, a.steps // 2))
    n_tr, n_va = -(-len(tr) // k), -(-len(va) // k)
    epoch = n_tr * s_step + n_va * s_val
    print(f"## {label}: hidden {spec.hidden}, {k} consecutive dates x {len(cs.tickers)} stocks per step, precision {a.precision}, "
          f"{'each stock-day once (span batches)' if _shared() else 'stacked windows'}")
    print(f"train step {s_step:.2f} s (median of {runs}; micro-batches {micro[-1]}) | validation step {s_val:.2f} s | "
          f"epoch = {n_tr} training + {n_va} validation steps ({len(tr)} + {len(va)} dates) = projected {epoch / 60:.1f} min | "
          f"cross-sections {t_cs:.0f} s | peak RSS {_peak_rss_gb():.2f} GB{_gpu()}")
    return dict(hidden=spec.hidden, stocks=len(cs.tickers), dates_per_step=k, step_s=round(s_step, 3), step_runs=runs,
                val_step_s=round(s_val, 3), micro_batches=micro[-1], train_steps=n_tr, val_steps=n_va,
                epoch_min_projected=round(epoch / 60, 1), precision=a.precision)


def step(a):
    from stock_twins.config import load_config
    from stock_twins.data import load_sample, load_sample_index
    cfg = _cfg(a, load_config().replace(data={"store": ":memory:"}))
    prices, index = load_sample(cfg), load_sample_index(cfg)
    prices, index = prices[prices.date <= "2014-12-31"], index[index.date <= "2014-12-31"]
    r = _step_and_epoch(a, cfg, prices, index, "training step on the real sample (20 stocks, dates to 2014-12-31)", a.stride)
    _result({"section": "step", **r})


def _cfg(a, cfg):
    kw = {}
    if a.memory_gb: kw["memory_gb"] = a.memory_gb
    if a.dates_per_batch: kw["dates_per_batch"] = a.dates_per_batch
    return cfg.replace(foundation=kw) if kw else cfg


def embed_(a):
    "Embedding throughput through `embed` (features at hand, as the jobs pass the store's table; graphs written first), cold."
    from stock_twins.config import load_config
    from stock_twins.data import load_sample, load_sample_index
    from stock_twins.embed import embed
    from stock_twins.features import compute_features
    from stock_twins.foundation import FoundationModel, FoundationSpec
    from stock_twins.graph import DuckDBGraphStore
    from stock_twins.pretrain import REAL_FEATURES, build_cross_sections, ensure_graphs
    from stock_twins.store import Store
    cfg = load_config().replace(data={"store": ":memory:"})
    prices, index = load_sample(cfg), load_sample_index(cfg)
    feats = compute_features(prices, index)
    st = Store()
    ensure_graphs(prices, cfg, DuckDBGraphStore(st))
    cs = build_cross_sections(prices[prices.date <= "2014-12-31"], index[index.date <= "2014-12-31"], cfg, DuckDBGraphStore(st), feats=feats)
    spec = FoundationSpec.from_config(cfg, len(REAL_FEATURES), len(cfg.universe.sectors), **_spec_kw(a))
    base = _sample_model(cfg, cs, spec).eval()
    dates = np.sort(prices.date.unique())
    dates = dates[dates >= np.datetime64("2015-01-01")][:a.embed_dates]
    def fresh():                                        # a new model object: no cached per-day encodings
        m = FoundationModel(spec); m.load_state_dict(base.state_dict()); m.meta = dict(base.meta); return m.eval()
    embed(fresh(), prices, index, dates[:2], store=st, cfg=cfg, feats=feats)     # one-off imports and allocations
    ts, n = [], 0
    for _ in range(a.reps):
        m = fresh()
        t0 = time.perf_counter()
        e = embed(m, prices, index, dates, store=st, cfg=cfg, batch_dates=64, feats=feats)
        ts.append(time.perf_counter() - t0); n = len(e)
    dt = float(np.median(ts))
    print(f"## embedding throughput: {n} stock-dates ({len(dates)} dates of 2015- x 20 stocks) in {dt:.1f} s (median of "
          f"{[round(t, 1) for t in ts]}) = {n / dt:.0f} stock-dates/s, cold (no per-day encoding cached), cross-sections and "
          f"store writes included{_gpu()}")
    _result({"section": "embed", "stock_dates": n, "seconds": round(dt, 2), "runs": [round(t, 2) for t in ts], "per_s": round(n / dt)})


def onedate(a):
    "50 simulated stocks at one date: the foundation's embeddings through `embed` (warm: the model loaded, the previous date done) and 50 twins."
    from stock_twins.config import Config
    from stock_twins.embed import embed
    from stock_twins.features import compute_features
    from stock_twins.foundation import FoundationSpec
    from stock_twins.graph import DuckDBGraphStore
    from stock_twins.pretrain import REAL_FEATURES, build_cross_sections, ensure_graphs
    from stock_twins.simulate import simulate_market
    from stock_twins.store import Store
    mk = simulate_market(a.stocks, 400, n_sectors=min(11, a.stocks), seed=0)
    cfg = mk.config(Config()).replace(data={"store": ":memory:"})
    feats = compute_features(mk.prices, mk.index)
    st = Store()
    ensure_graphs(mk.prices, cfg, DuckDBGraphStore(st))
    cs = build_cross_sections(mk.prices, mk.index, cfg, DuckDBGraphStore(st), feats=feats)
    spec = FoundationSpec.from_config(cfg, len(REAL_FEATURES), len(cfg.universe.sectors), **_spec_kw(a))
    model = _sample_model(cfg, cs, spec).eval()
    dates = np.sort(mk.prices.date.unique())[-(a.reps + 2):]
    embed(model, mk.prices, mk.index, dates[:1], store=st, cfg=cfg, feats=feats)        # warm: loaded, imports done, cache filled
    twins = None
    try:
        from stock_twins.manager import TwinStack
        from stock_twins.twin import DigitalTwin, TwinSpec
        tspec = TwinSpec.from_config(cfg)
        torch.manual_seed(0)
        twins = TwinStack.of([DigitalTwin(tspec).eval() for _ in range(a.stocks)])
        reg = torch.randn(a.stocks, tspec.n_regime)
        prior = torch.tensor([[0.001, 0.52, 0.25, 1.0]]).repeat(a.stocks, 1)   # PRIOR_COLUMNS: return, hit, vol, regime code
    except Exception as e:                              # the twins' API is another module's: report without them
        print(f"(twins skipped: {type(e).__name__}: {e})")
    ecols = [f"e{i}" for i in range(spec.embed_dim)]
    f_ts, t_ts = [], []
    for d in dates[1:]:
        t0 = time.perf_counter()
        e = embed(model, mk.prices, mk.index, [d], store=st, cfg=cfg, feats=feats)
        t1 = time.perf_counter()
        if twins is not None:
            with torch.inference_mode(): twins(torch.as_tensor(e[ecols].to_numpy(np.float32)), reg, prior)
        t2 = time.perf_counter()
        f_ts.append(t1 - t0); t_ts.append(t2 - t1)
    f, t = float(np.median(f_ts[1:])), float(np.median(t_ts[1:]))
    # the model alone for that date (what is left once the cross-section is built)
    from stock_twins.embed import _infer
    cs1 = build_cross_sections(mk.prices[mk.prices.date <= dates[-1]], mk.index, cfg, DuckDBGraphStore(st), feats=feats)
    m_s, _ = _median_time(lambda: _infer(model, cs1, [len(cs1.dates) - 1], None, 64), a.reps)
    print(f"## {a.stocks} stocks at one date, default-size foundation{' + ' + str(a.stocks) + ' twins' if twins else ''}, warm "
          f"(model loaded, the previous date embedded in this process): foundation through `embed` {1e3 * f:.0f} ms "
          f"(model alone {1e3 * m_s:.0f} ms), twins {1e3 * t:.1f} ms, total {1e3 * (f + t):.0f} ms "
          f"(median of {len(f_ts) - 1} dates; SIMULATED market, random weights: timings depend on shapes only)")
    _result({"section": "onedate", "stocks": a.stocks, "foundation_ms": round(1e3 * f), "model_ms": round(1e3 * m_s),
             "twins_ms": round(1e3 * t, 1), "total_ms": round(1e3 * (f + t)), "runs_ms": [round(1e3 * x) for x in f_ts]})


def sim(a):
    "One epoch of a simulated 500-stock x 3-year universe: time per step (projected epoch) and peak RSS."
    from stock_twins.config import load_config
    from stock_twins.simulate import simulate_market
    t0 = time.perf_counter()
    mk = simulate_market(a.stocks, 756)
    cfg = _cfg(a, load_config().replace(data={"store": ":memory:"}, universe={"sectors": dict(mk.sectors), "pilot": []}))
    print(f"simulated {a.stocks} x 756 in {time.perf_counter() - t0:.0f} s")
    r = _step_and_epoch(a, cfg, mk.prices, mk.index, f"SIMULATED universe {a.stocks} stocks x 756 days", 1)
    _result({"section": "sim", "memory_gb": cfg.foundation.memory_gb, **r})


def sample(a):
    "A whole `pretrain` call on the real sample to 2014-12-31 (Lightning, validation, early stopping), then embedding throughput."
    from stock_twins.config import load_config
    from stock_twins.data import load_sample, load_sample_index
    from stock_twins.foundation import FoundationSpec
    from stock_twins.pretrain import REAL_FEATURES, pretrain
    from stock_twins.store import Store
    cfg = _cfg(a, load_config().replace(data={"store": ":memory:"}))
    if a.precision != "auto" and "precision" in type(cfg.foundation).model_fields: cfg = cfg.replace(foundation={"precision": a.precision})
    prices, index = load_sample(cfg), load_sample_index(cfg)
    spec = FoundationSpec.from_config(cfg, len(REAL_FEATURES), len(cfg.universe.sectors), **_spec_kw(a))
    t0 = time.perf_counter()
    model, _ = pretrain(prices, index, cfg, train_end="2014-12-31", epochs=a.epochs, store=Store(), progress=False, checkpoint_dir=False,
                        spec=spec, date_stride=a.stride, max_steps=a.max_steps)
    wall = time.perf_counter() - t0
    m = model.meta
    print(f"## pretrain on the real sample (20 stocks, up to 2014-12-31), hidden {spec.hidden}, epochs {a.epochs}, date stride {a.stride}")
    print(f"wall {wall:.0f} s (fit {m['train_seconds']} s) | train dates {m['train_dates']}, val dates {m['val_dates']} | "
          f"epochs run {m['epochs_run']}, steps {m['steps']} ({m['train_seconds'] / max(1, m['steps']):.2f} s/step incl. validation) | "
          f"best val loss {m['best_val_loss']} | peak RSS {_peak_rss_gb():.2f} GB{_gpu()}")
    _result({"section": "sample", "wall_s": round(wall), "fit_s": m["train_seconds"], "steps": m["steps"], "epochs_run": m["epochs_run"],
             "train_dates": m["train_dates"], "val_dates": m["val_dates"], "best_val_loss": m["best_val_loss"]})


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


def compare(a, rest: list[str]):
    "Run `--sections` alternately on the old and the new code, `--rounds` times, each in a fresh process; print a table."
    rows = []
    for r in range(a.rounds):
        for sec in a.sections.split(","):
            for label, code in (("old", a.old), ("new", a.new)):
                env = {**os.environ, "PYTHONPATH": str(code), "PYTHONUNBUFFERED": "1"}
                cmd = [sys.executable, str(Path(__file__).resolve()), sec, *rest]
                print(f"# round {r + 1} {sec} {label}: {code} (load {_load()})", flush=True)
                p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=HERE)
                res = [json.loads(l[7:]) for l in p.stdout.splitlines() if l.startswith("RESULT ")]
                print("\n".join(l for l in p.stdout.splitlines() if l.startswith("##") or " | " in l), flush=True)
                if p.returncode or not res: print(p.stderr[-3000:]); continue
                rows.append({"round": r + 1, "code": label, **res[-1]})
    df = pd.DataFrame(rows)
    print(df.to_string(index=False))
    if a.json: Path(a.json).write_text(df.to_json(orient="records", indent=1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("section", choices=["all", "params", "step", "embed", "onedate", "sim", "sample", "eval", "compare"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--stocks", type=int, default=None, help="onedate: 50; sim: 500")
    p.add_argument("--embed-dates", type=int, default=250)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--dates-per-batch", type=int, default=None)
    p.add_argument("--memory-gb", type=float, default=None)
    p.add_argument("--precision", default="auto", choices=["auto", "32-true", "bf16-mixed"], help="auto: bf16 autocast on a GPU, float32 on CPU")
    p.add_argument("--baselines", default="always_up,momentum_20,ridge,ewma_vol,empirical_q")
    p.add_argument("--out", default="reports/foundation_eval")
    p.add_argument("--old", default=None, help="compare: the code before (a checkout's root)")
    p.add_argument("--new", default=str(HERE))
    p.add_argument("--sections", default="step,embed,onedate")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default=None, help="compare: also write the table as JSON here")
    a, rest = p.parse_known_args()
    if a.section == "compare":
        if not a.old: p.error("compare needs --old: the root of a copy of the code before")
        argv = sys.argv[2:]
        drop = {"--old", "--new", "--sections", "--rounds", "--json"}
        keep = [x for i, x in enumerate(argv) if x not in drop and (i == 0 or argv[i - 1] not in drop)]
        print(_machine().split(" | code")[0], flush=True)
        return compare(a, keep)
    if a.stocks is None: a.stocks = 500 if a.section == "sim" else 50
    if a.threads: torch.set_num_threads(a.threads)
    print(_machine(), flush=True)
    if a.section == "all":       # each section in its own process, so that peak RSS is its own
        for s in ("params", "step", "embed", "onedate", "sim"):
            subprocess.run([sys.executable, __file__, s, *sys.argv[2:]], check=True)
        return
    {"params": params, "step": step, "embed": embed_, "onedate": onedate, "sim": sim, "sample": sample, "eval": evaluation}[a.section](a)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
