"""Digital twins on the real sample through the walk-forward harness: twins vs foundation vs fallback vs baselines,
and the twin's ablations (no LoRA, no regime detector, no stock embedding).

    python benchmarks/bench_twin_eval.py --quick              # 4 stocks from 2012, test years 2019-2020 (debugging, minutes)
    python benchmarks/bench_twin_eval.py                      # 20 stocks, test years evaluation.test_start..test_end (2005-2022)
    python benchmarks/bench_twin_eval.py --test-start 2015    # the same with test years 2015-2022 (a shorter run)

In steps, or across machines (the harness scores each model on its own rows, so the merged report is the one-run one):
    python benchmarks/bench_twin_eval.py --only pretrain --save-foundation parts/ck                # the foundation only (a checkpoint root)
    python benchmarks/bench_twin_eval.py --only baselines --no-report --split-preds parts/a         # baselines + fallback
    python benchmarks/bench_twin_eval.py --only foundation --foundation parts/ck/foundation/all/<name> --no-report --split-preds parts/b
    python benchmarks/bench_twin_eval.py --merge parts/a parts/b                                    # score together, write the report

Protocol. The foundation (reduced: --hidden, --epochs, every --stride-th date) is pretrained ONCE, on data up to
foundation.train_end (2004-12-31) or the first split's training end if that is earlier (--quick: the first split's
training end, as its data starts in 2012), then frozen; its embeddings of every date are computed once and shared by
the foundation's heads, the linear probe and all twin variants. Twins are fine-tuned at every harness split
(evaluation.refit, yearly) on the twins.window_months before it. Baselines and the LightGBM fallback are refit at
every split as usual. Nothing is tuned here: every setting is the config's or the flags'.

Prints the machine, the foundation's parameter count and training record, the twins' parameter counts and fine-tune
log summary, seconds per model, and the report (report.md, scores.csv, predictions.parquet and plots under --out).
"""
import argparse
import os
import platform
import time
import warnings

import numpy as np
import pandas as pd
import torch


def _machine() -> str:
    la = os.getloadavg()
    return (f"machine: {platform.platform()} | {platform.processor() or platform.machine()} | CPUs {os.cpu_count()} | "
            f"torch threads {torch.get_num_threads()} | python {platform.python_version()} | torch {torch.__version__} | "
            f"cuda {torch.cuda.is_available()} | load average {la[0]:.1f} {la[1]:.1f} {la[2]:.1f}")


def _timed(m, seconds: dict):
    "Wrap m.fit and m.predict to add their wall time to seconds[m.name]."
    for meth in ("fit", "predict"):
        f = getattr(m, meth)
        def timed(*args, _f=f, **kw):
            t = time.perf_counter(); r = _f(*args, **kw); seconds[m.name] = seconds.get(m.name, 0.0) + time.perf_counter() - t
            return r
        setattr(m, meth, timed)
    return m


def _prewarm(fc, prices, index, cfg, model):
    "Embed every date in one pass (one cross-section build) instead of split by split, and check on a few dates that this is point in time."
    from stock_twins.embed import FoundationForecaster
    from stock_twins.schema import Panel
    t0 = time.perf_counter()
    rows = prices[["date", "ticker"]]
    fc.outputs_on(Panel(rows, rows["date"].min(), rows["date"].max()))
    dates = np.sort(rows["date"].unique())
    check = FoundationForecaster(prices, index, cfg, model=model)            # no cache: prices cut at each date asked
    worst = 0.0
    for d in dates[np.linspace(len(dates) // 3, len(dates) - 1, 3).astype(int)]:
        r = rows[rows["date"] <= d]
        x, y = (f.outputs_on(Panel(r, pd.Timestamp(d), pd.Timestamp(d))).filter(regex=r"^e\d+$").to_numpy() for f in (fc, check))
        if not np.array_equal(np.isnan(x), np.isnan(y)): raise AssertionError(f"{d}: embeddings missing in one pass but not cut at the date")
        worst = max(worst, float(np.nanmax(np.abs(x - y))))
    print(f"embedded {len(dates)} dates in one pass, {time.perf_counter() - t0:.0f} s; against prices cut at the date, on 3 dates: "
          f"max abs difference {worst:.1e}{' (WARNING: not float noise)' if worst > 1e-3 else ''}", flush=True)


def _order(names) -> list[str]:
    "Report order: baselines, fallback, foundation, probe, twins (then anything else)."
    first = ["always_up", "momentum_20", "reversal_5", "ridge", "lgbm", "ewma_vol", "garch", "empirical_q", "lgbm_q", "persistence",
             "lgbm_regime", "fallback", "foundation", "foundation_probe", "twin", "twin_no_lora", "twin_no_regime", "twin_no_stock"]
    return sorted(names, key=lambda n: first.index(n) if n in first else len(first))


def _merge(a, cfg, ev, splits, out):
    "Score the predictions of several runs (same splits, rows and labels) together and write one report."
    from pathlib import Path
    from stock_twins.metrics import score
    from stock_twins.report import write_report
    from stock_twins.schema import validate_predictions
    files = [f for d in a.merge for f in sorted(Path(d).glob("pred_*.parquet"))]
    if not files: raise SystemExit(f"--merge: no pred_*.parquet under {a.merge}")
    preds = validate_predictions(pd.concat([pd.read_parquet(f) for f in files], ignore_index=True))
    # a run whose models need no regimes has none joined (y_regime, regime_now): take them from the runs that have them
    key = ["date", "ticker"]
    lab = preds.groupby(key)[["y_ret", "y_vol", "y_dir", "y_regime", "regime_now"]].agg(["first", "max", "min"])
    for c in ("y_ret", "y_vol", "y_dir"):                             # the outcomes of a row are the same in every run
        bad = (lab[(c, "max")] - lab[(c, "min")]).abs() > 1e-12
        if bad.any(): raise SystemExit(f"--merge: runs disagree on {c} for {int(bad.sum())} rows")
    fill = pd.DataFrame({c: lab[(c, "first")] for c in ("y_regime", "regime_now")}).reset_index()
    preds = validate_predictions(preds.drop(columns=["y_regime", "regime_now"]).merge(fill, on=key, how="left"))
    order = _order(preds["model"].unique())
    preds = preds.assign(_o=preds["model"].map({m: i for i, m in enumerate(order)})).sort_values(["_o", "date", "ticker"], kind="stable").drop(columns="_o")
    print(f"merged {len(files)} files: {', '.join(order)}; {len(preds):,} rows", flush=True)
    t0 = time.perf_counter()
    scores = score(preds, ev.block, ev.n_boot, cfg.project.seed)
    report = write_report(preds, scores, out, cfg, splits, elapsed=None)
    print(f"## scored in {time.perf_counter() - t0:.0f} s; report: {report}\n")
    print(open(report).read())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="4 stocks from 2012, test years 2019-2020, 200 bootstrap resamples")
    p.add_argument("--test-start", type=int, default=None, help="first test year (default evaluation.test_start)")
    p.add_argument("--hidden", type=int, default=64, help="foundation TFT hidden size (config: 256)")
    p.add_argument("--epochs", type=int, default=3, help="foundation pretraining epochs")
    p.add_argument("--stride", type=int, default=5, help="foundation pretraining uses every stride-th date")
    p.add_argument("--n-jobs", type=int, default=None, help="processes for the twin fine-tunes (default twins.n_jobs)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    p.add_argument("--device", default="auto", help="foundation pretraining and inference: auto (cuda if there is one), cpu or cuda")
    p.add_argument("--no-prewarm", action="store_true", help="let the harness embed date by date (slower; same numbers)")
    p.add_argument("--baselines", default="always_up,momentum_20,ridge,lgbm,ewma_vol,garch,empirical_q,persistence")
    p.add_argument("--twins", default="twin,twin_no_lora,twin_no_regime,twin_no_stock")
    p.add_argument("--only", choices=["all", "baselines", "foundation", "pretrain"], default="all",
                   help="baselines = the baselines and the fallback; foundation = the foundation, its probe and the twins; "
                        "pretrain = only pretrain the foundation (with --save-foundation)")
    p.add_argument("--save-foundation", default=None, help="save the pretrained foundation under this checkpoint root")
    p.add_argument("--foundation", default=None, help="load this foundation checkpoint instead of pretraining (its train_end is checked)")
    p.add_argument("--split-preds", default=None, help="also write each model's predictions to DIR/pred_<model>.parquet")
    p.add_argument("--no-report", action="store_true", help="only predict (with --split-preds): no scoring, no report")
    p.add_argument("--merge", nargs="+", default=None, help="score the pred_*.parquet files of these folders together; no training")
    p.add_argument("--out", default=None, help="output folder (default reports/twin_eval, --quick: reports/twin_eval_quick)")
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore", module="lightning")
    print(_machine(), flush=True)

    from stock_twins.baselines import make_baselines
    from stock_twins.config import load_config
    from stock_twins.data import load_sample, load_sample_index
    from stock_twins.evaluation import QUICK_START, QUICK_TICKERS, quick_config, run_walk_forward, walk_forward_splits
    from stock_twins.metrics import score
    from stock_twins.report import write_report
    from stock_twins.fallback import LightGBMFallback

    t00 = time.perf_counter()
    cfg = load_config().replace(data={"store": ":memory:"})
    if a.test_start is not None: cfg = cfg.replace(evaluation={"test_start": a.test_start})   # this run only; config untouched
    ev_cfg = quick_config(cfg) if a.quick else cfg                                            # what evaluate() will use
    ev = ev_cfg.evaluation
    prices, index = load_sample(cfg), load_sample_index(cfg)
    if a.quick: prices = prices[prices["ticker"].isin(QUICK_TICKERS) & (prices["date"] >= QUICK_START)].reset_index(drop=True)
    splits = walk_forward_splits(prices["date"], ev.test_start, ev.test_end, ev.refit, cfg.features.horizon, ev.purge)
    out = a.out or ("reports/twin_eval_quick" if a.quick else "reports/twin_eval")
    if a.merge: return _merge(a, ev_cfg, ev, splits, out)
    first_end = splits[0].train_end
    f_end = first_end if a.quick else min(pd.Timestamp(cfg.foundation.train_end), first_end)
    print(f"test years {ev.test_start}-{ev.test_end}, {ev.refit} refit ({len(splits)} splits), {prices.ticker.nunique()} stocks", flush=True)

    models, twins = [], []
    if a.only in ("all", "baselines"):
        models += make_baselines([s for s in a.baselines.split(",") if s], cfg) + [LightGBMFallback.from_config(cfg)]
    if a.only == "pretrain":
        if not a.save_foundation: raise SystemExit("--only pretrain needs --save-foundation PATH")
        return _pretrained(a, cfg, prices, index, f_end)
    if a.only in ("all", "foundation"):
        fc, twins = _foundation_models(a, cfg, prices, index, f_end)
        models += [fc, _probe(fc)] + twins
    if a.split_preds: os.makedirs(a.split_preds, exist_ok=True)
    seconds = {}
    models = [_timed(x, seconds) for x in models]
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:                     # what evaluate() does, with the scoring optional
        warnings.simplefilter("always")
        preds = run_walk_forward(models, prices, index, ev_cfg, out=os.path.join(out, "predictions.parquet"), progress=False)
    no_twin = sorted({str(w.message) for w in caught if "no twin for" in str(w.message)})
    print(f"## walk-forward: {time.perf_counter() - t0:.0f} s (whole run {time.perf_counter() - t00:.0f} s)")
    print("seconds per model (fit + predict; the foundation's inference of every date is counted under the first model "
          "that asks for it):\n   " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()), flush=True)
    for w in no_twin: print("warning:", w)
    if twins:
        log = pd.concat([t.fit_log() for t in twins], ignore_index=True)
        tr = log[log.status == "trained"]
        summ = log.groupby("model", sort=False).agg(fits=("ticker", "size"), trained=("status", lambda s: int((s == "trained").sum())))
        summ = summ.join(tr.groupby("model", sort=False).agg(
            beat_neutral=("best_epoch", lambda s: float((s > 0).mean())), median_epochs=("epochs", "median"),
            val_loss_init=("val_loss_init", "mean"), val_loss=("val_loss", "mean"), seconds_per_twin=("seconds", "mean")))
        print("## twin fine-tunes (beat_neutral = share whose best validation epoch is after the neutral start):")
        print(summ.round(3).to_string(), flush=True)
        log.to_csv(os.path.join(a.split_preds or out, "twin_fit_log.csv"), index=False)
    if a.split_preds:
        for m, g in preds.groupby("model", sort=False): g.to_parquet(os.path.join(a.split_preds, f"pred_{m}.parquet"), index=False, compression="zstd")
        print(f"predictions per model in {a.split_preds}", flush=True)
    if a.no_report: return
    scores = score(preds, ev.block, ev.n_boot, cfg.project.seed)
    report = write_report(preds, scores, out, ev_cfg, splits, elapsed=time.perf_counter() - t00)
    print(f"## report: {report}\n")
    print(open(report).read())


def _probe(fc):
    from stock_twins.embed import FoundationProbe
    return FoundationProbe(fc)


def _pretrained(a, cfg, prices, index, f_end):
    "The foundation, pretrained once up to f_end (or loaded with --foundation), and the device it runs on."
    from stock_twins.foundation import FoundationSpec, param_table
    from stock_twins.pretrain import REAL_FEATURES, load_foundation, pretrain, save_foundation
    from stock_twins.store import Store
    spec = FoundationSpec.from_config(cfg, len(REAL_FEATURES), len(cfg.universe.sectors), hidden=a.hidden)
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    t0 = time.perf_counter()
    if a.foundation:
        model, how = load_foundation(a.foundation, spec=spec), f"loaded from {a.foundation}"
        if pd.Timestamp(model.meta["train_end"]) > f_end:
            raise SystemExit(f"{a.foundation} was trained up to {model.meta['train_end']}, after {f_end:%Y-%m-%d} (lookahead)")
    else:
        model, _ = pretrain(prices, index, cfg, train_end=f_end, epochs=a.epochs, store=Store(), progress=False, checkpoint_dir=False,
                            spec=spec, date_stride=a.stride, accelerator="gpu" if dev == "cuda" else "cpu")
        how = f"pretrained on {dev} ({a.epochs} epochs max, every {a.stride}th date)"
        if a.save_foundation: save_foundation(model, a.save_foundation)
    m = model.meta
    print(f"## foundation: {int(param_table(model).loc['total', 'params']):,} parameters (hidden {spec.hidden}, embed {spec.embed_dim}), "
          f"{how}, once, up to {m['train_end']} (last label {m['last_label_date']}), {m['train_dates']} train / "
          f"{m['val_dates']} val dates, epochs run {m['epochs_run']}, best epoch {m['best_epoch']}, best val loss "
          f"{m['best_val_loss']:.4f}; {time.perf_counter() - t0:.0f} s", flush=True)
    return model, dev, spec


def _foundation_models(a, cfg, prices, index, f_end):
    "The foundation (pretrained once, up to f_end) and the foundation, probe and twin forecasters on it."
    from stock_twins.embed import FoundationForecaster
    from stock_twins.twin import DigitalTwin, TwinSpec
    from stock_twins.twin_train import TWIN_VARIANTS, TwinForecaster
    model, dev, spec = _pretrained(a, cfg, prices, index, f_end)
    fc = FoundationForecaster(prices, index, cfg, model=model.to(dev))
    if not a.no_prewarm: _prewarm(fc, prices, index, cfg, model)
    twins = TwinForecaster.variants(fc, [s for s in a.twins.split(",") if s], n_jobs=a.n_jobs, cfg=cfg)
    for t in twins:
        print(f"   {t.name}: {DigitalTwin(TwinSpec.from_config(cfg, emb_dim=spec.embed_dim, **TWIN_VARIANTS[t.name])).n_params:,} "
              "parameters per twin", flush=True)
    return fc, twins


if __name__ == "__main__":
    main()
