"""Digital twins on the real sample through the walk-forward harness: the twins (priors + corrections, refit WEEKLY)
against their priors, the foundation, the LightGBM fallback and the baselines, every output scored on identical rows
with paired block-bootstrap intervals.

    python benchmarks/bench_twin_eval.py --design                 # design run: validation years 2000-2004 only
    python benchmarks/bench_twin_eval.py --set twins.return_prior=history --results nbs/results/twin_eval
                                                                  # THE table: test years 2005-2022 (run once, 2026-12-01)
    python benchmarks/bench_twin_eval.py --quick                  # smoke: 4 stocks from 2012, 2019-2020 (minutes)

Resumable parts (each split's predictions are written as soon as they exist; a rerun skips them; the foundation's
fits are saved and reloaded):
    python benchmarks/bench_twin_eval.py --part baselines --no-score   # baselines + LightGBM fallback, yearly refit
    python benchmarks/bench_twin_eval.py --part foundation --no-score  # periodic foundation, its heads, the twin variants
    python benchmarks/bench_twin_eval.py --score-only                  # score what the parts wrote, write the tables

Note. The recorded run's twins read the stock's own history as their return and hit prior (`twins.return_prior=history`):
the harness then handed the foundation's heads to the twins under other column names, so `twin_frame` fell back to the
history prior (fixed since; without the flag the twins now use the foundation heads, a setting not yet evaluated).

Protocol. Expanding-window walk-forward with yearly splits (evaluation.refit) for the baselines and the fallback.
The foundation (hidden --hidden, --epochs epochs over every --stride-th date) is refit on an expanding window every
--every years (the first split, then every --every-th yearly split). The twins are refit WEEKLY inside each split,
at the last close before each week, all twins of a week in one batched fine-tune (`twin_train.TwinForecaster`).
Every model is scored on the rows where the twin has a forecast (identical rows); differences against the twin
come with paired moving-block bootstrap intervals over dates. Design choices are made with --design on 2000-2004.

Outputs under --out: report.md (the harness report), twin_table.md (the issue's table and the paired comparisons),
CSV tables (scores, paired, per year, per stock, reliability, regime confusion, routes), predictions.parquet.
"""
import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def _machine() -> str:
    la = os.getloadavg()
    return (f"machine: {platform.platform()} | {platform.processor() or platform.machine()} | CPUs {os.cpu_count()} | "
            f"torch threads {torch.get_num_threads()} | python {platform.python_version()} | torch {torch.__version__} | "
            f"cuda {torch.cuda.is_available()} | load average {la[0]:.1f} {la[1]:.1f} {la[2]:.1f}")


def _set(cfg, items):
    "Apply --set section.key=value overrides (values parsed as JSON, else kept as strings)."
    for it in items or ():
        k, v = it.split("=", 1)
        sec, key = k.split(".", 1)
        try: v = json.loads(v)
        except json.JSONDecodeError: pass
        cfg = cfg.replace(**{sec: {key: v}})
    return cfg


# --- scoring ----------------------------------------------------------------------------------------------------

def _row_losses(d: pd.DataFrame) -> dict:
    "Per-row losses/scores of one model's predictions (NaN where the model lacks the output)."
    from stock_twins.losses import VOL_FLOOR
    from stock_twins.metrics import hits
    y, up = d["y_ret"].to_numpy(float), (d["y_ret"].to_numpy(float) > 0).astype(float)
    s, h = np.maximum(d["y_vol"].to_numpy(float), VOL_FLOOR), np.maximum(d["vol"].to_numpy(float), VOL_FLOOR)
    r = s ** 2 / h ** 2
    ql = np.where((d["vol"] > 0) & (d["y_vol"] > 0), r - np.log(r) - 1, np.nan)
    pin = np.nanmean(np.stack([np.maximum(t * (y - d[c]), (t - 1) * (y - d[c])) for c, t in
                               (("q10", 0.1), ("q50", 0.5), ("q90", 0.9))]), 0) if d["q10"].notna().any() else np.full(len(d), np.nan)
    cov = np.where(d["q10"].notna() & d["q90"].notna(), ((y >= d["q10"]) & (y <= d["q90"])).astype(float), np.nan)
    reg = np.where(d["regime"].notna() & d["y_regime"].notna(), (d["regime"] == d["y_regime"]).astype(float), np.nan)
    return dict(hit=hits(d), brier=(d["hit_prob"].to_numpy(float) - up) ** 2, qlike=ql, pinball=pin, cov80=cov, regime_acc=reg)


def paired(preds, a, b, metric, block=21, n_boot=1000, seed=0):
    "Mean of `metric` for models a and b on the rows both have, and the paired block-bootstrap CI of a - b."
    from stock_twins.metrics import block_bootstrap
    key = ["date", "ticker"]
    A = preds[preds.model == a].set_index(key)
    B = preds[preds.model == b].set_index(key)
    if metric == "regime_acc" and b == "persistence_now":          # persistence: the regime at t on a's rows
        B = A.assign(regime=A["regime_now"])
    la = pd.Series(_row_losses(A.reset_index())[metric], index=A.index)
    lb = pd.Series(_row_losses(B.reset_index())[metric], index=B.index)
    j = pd.concat([la.rename("a"), lb.rename("b")], axis=1, join="inner").dropna()
    if len(j) == 0: return dict(metric=metric, a=a, b=b, n=0)
    dates = j.index.get_level_values("date")
    per = pd.DataFrame({"d": j["a"] - j["b"], "n": 1.0}).groupby(dates).sum().to_numpy()
    est = block_bootstrap(per, lambda t: t[..., 0] / t[..., 1], block, n_boot, seed)
    return dict(metric=metric, a=a, b=b, n=len(j), a_value=float(j["a"].mean()), b_value=float(j["b"].mean()),
                diff=est.point, lo=est.low, hi=est.high)


def paired_ic(preds, a, b, block=21, n_boot=1000, seed=0):
    "Mean daily IC of a and b on common dates, with the paired CI of the difference."
    from stock_twins.metrics import block_bootstrap, daily_ic
    ia, ib = daily_ic(preds[preds.model == a]), daily_ic(preds[preds.model == b])
    j = pd.concat([ia.rename("a"), ib.rename("b")], axis=1, join="inner").dropna()
    if len(j) < 2: return dict(metric="ic", a=a, b=b, n=len(j))
    est = block_bootstrap(np.c_[(j.a - j.b).to_numpy(), np.ones(len(j))], lambda t: t[..., 0] / t[..., 1], block, n_boot, seed)
    return dict(metric="ic", a=a, b=b, n=len(j), a_value=float(j.a.mean()), b_value=float(j.b.mean()), diff=est.point, lo=est.low, hi=est.high)


def _fill_labels(preds):
    "Runs whose models need no regimes have none joined: take y_regime / regime_now from the runs that have them."
    key = ["date", "ticker"]
    lab = preds.groupby(key)[["y_regime", "regime_now"]].first().reset_index()
    return preds.drop(columns=["y_regime", "regime_now"]).merge(lab, on=key, how="left")


RESULT_FILES = ("twin_table.md", "twin_scores.csv", "paired.csv", "per_year.csv", "per_stock.csv", "reliability.csv",
                "regime_confusion.csv", "coverage_by_year.csv", "route_share.csv", "run.json", "scores.csv")


def score_all(out: Path, cfg, splits, fit_logs, elapsed=None, twin="twin", results=None):
    "Read every part's predictions, restrict to the twin's rows, score, write the report and the twin tables."
    from stock_twins.metrics import coverage_by_year, reliability, score
    from stock_twins.report import md_table, write_report
    from stock_twins.schema import validate_predictions
    ev = cfg.evaluation
    files = sorted((out / "parts").glob("*/split_*.parquet"))
    if not files: raise SystemExit(f"no predictions under {out / 'parts'}")
    preds = validate_predictions(_fill_labels(pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)))
    have = preds[(preds.model == twin) & preds["exp_return"].notna()][["date", "ticker"]]
    common = validate_predictions(preds.merge(have, on=["date", "ticker"], how="inner"))
    common.to_parquet(out / "predictions.parquet", index=False)
    models = list(dict.fromkeys(m for m in ORDER if m in set(common.model)) | dict.fromkeys(common.model.unique()))
    common = common.assign(_o=common.model.map({m: i for i, m in enumerate(models)})).sort_values(["_o", "date", "ticker"]).drop(columns="_o")
    scores = score(common, ev.block, ev.n_boot, cfg.project.seed)
    report = write_report(common, scores, out, cfg, splits, title="Twins walk-forward (identical rows)", elapsed=elapsed)
    kw = dict(block=ev.block, n_boot=ev.n_boot, seed=cfg.project.seed)
    prior = "twin_prior" if "twin_prior" in models else None
    pairs = []
    for b in [m for m in (prior, "foundation", "always_up", "fallback", "twin_unrouted") if m in models]:
        for met in ("hit", "brier", "qlike", "pinball", "cov80", "regime_acc"):
            pairs.append(paired(common, twin, b, met, **kw))
        pairs.append(paired_ic(common, twin, b, **kw))
    for b, met in (("garch", "qlike"), ("ewma_vol", "qlike"), ("empirical_q", "pinball"), ("persistence", "regime_acc")):
        if b in models: pairs.append(paired(common, twin, b, met, **kw))
        if prior and b in models: pairs.append(paired(common, prior, b, met, **kw))
    for v in ("twin_no_lora", "twin_no_regime", "twin_no_stock"):
        if v in models:
            for met in ("hit", "brier", "qlike", "pinball", "regime_acc"): pairs.append(paired(common, twin, v, met, **kw))
            pairs.append(paired_ic(common, twin, v, **kw))
    for v in [m for m in models if m.startswith("twin[")] + ([twin] if prior else []):   # design grid: each setting against the priors
        if prior:
            for met in ("hit", "brier", "qlike", "pinball", "cov80", "regime_acc"): pairs.append(paired(common, v, prior, met, **kw))
            pairs.append(paired_ic(common, v, prior, **kw))
    pr = pd.DataFrame(pairs).drop_duplicates(subset=["metric", "a", "b"])
    pr.to_csv(out / "paired.csv", index=False)
    # per year: coverage, QLIKE, hit, Brier
    yr = common["date"].dt.year
    per_year = {}
    for m, g in common.groupby("model", sort=False):
        l = pd.DataFrame(_row_losses(g)).assign(year=g["date"].dt.year.to_numpy())
        per_year[m] = l.groupby("year").mean()
    py = pd.concat(per_year, names=["model", "year"]).reset_index()
    py.to_csv(out / "per_year.csv", index=False)
    # per stock (twin vs prior)
    ps = []
    for m in [x for x in (twin, prior, "foundation", "always_up", "garch") if x in models]:
        g = common[common.model == m]
        l = pd.DataFrame(_row_losses(g)).assign(ticker=g["ticker"].to_numpy())
        ps.append(l.groupby("ticker").mean().assign(model=m))
    pd.concat(ps).reset_index().to_csv(out / "per_stock.csv", index=False)
    rel = pd.concat({m: reliability(common[common.model == m]) for m in models if common.loc[common.model == m, "hit_prob"].notna().any()},
                    names=["model", "bin"]).reset_index()
    rel.to_csv(out / "reliability.csv", index=False)
    conf = []
    for m in [x for x in (twin, prior, "fallback") if x in models]:
        g = common[(common.model == m)].dropna(subset=["regime", "y_regime"])
        conf.append(pd.crosstab(g["y_regime"], g["regime"]).stack().rename("n").reset_index().assign(model=m))
    g = common[common.model == twin].dropna(subset=["regime_now", "y_regime"])
    conf.append(pd.crosstab(g["y_regime"], g["regime_now"]).stack().rename("n").reset_index().rename(columns={"regime_now": "regime"}).assign(model="persistence (regime at t)"))
    pd.concat(conf).to_csv(out / "regime_confusion.csv", index=False)
    # the table
    cols = ["hit", "hit_lo", "hit_hi", "edge", "edge_lo", "edge_hi", "top_hit", "top_cov", "ic", "brier", "qlike", "cov80", "pinball", "regime_acc"]
    tab = scores[cols].copy()
    tab.to_csv(out / "twin_scores.csv")
    cov_year = pd.DataFrame({m: coverage_by_year(common[common.model == m]) for m in models if common.loc[common.model == m, "q10"].notna().any()})
    cov_year.to_csv(out / "coverage_by_year.csv")
    routes = pd.concat(fit_logs, ignore_index=True) if fit_logs else pd.DataFrame()
    lines = [f"# Twins: the table of issue 12 ({preds['date'].min():%Y-%m-%d}..{preds['date'].max():%Y-%m-%d})", "",
             f"{common.ticker.nunique()} stocks, {common[['date', 'ticker']].drop_duplicates().shape[0]:,} identical rows "
             f"(those where the twin has a forecast), {len(splits)} yearly splits; twins refit weekly.", "",
             md_table(tab.dropna(how="all")), "", "## Paired differences (a - b) on the rows both have, 95% block-bootstrap CI", "",
             md_table(pr, index=False), "", "## q10-q90 coverage by year", "", md_table(cov_year), ""]
    if len(routes):
        tr = routes[routes.status == "trained"]
        share = tr.groupby("model")[[c for c in tr.columns if c.startswith("route_")]].mean()
        lines += ["## Share of weekly fine-tunes whose twin serves each output (else its prior)", "", md_table(share), ""]
        share.to_csv(out / "route_share.csv")
    (out / "twin_table.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"report: {report}")
    if results:
        import shutil
        r = Path(results); r.mkdir(parents=True, exist_ok=True)
        for f in RESULT_FILES:
            if (out / f).exists(): shutil.copy(out / f, r / f)
        print(f"result tables copied to {r}")
    return scores, pr


ORDER = ["always_up", "momentum_20", "ridge", "lgbm", "ewma_vol", "garch", "empirical_q", "persistence", "lgbm_regime", "fallback",
         "foundation", "twin_prior", "twin", "twin_unrouted", "twin_no_lora", "twin_no_regime", "twin_no_stock"]


# --- running ----------------------------------------------------------------------------------------------------

def run_part(name, models, prices, index, cfg, splits, out: Path, horizon):
    "Walk forward split by split; each split's predictions are written to out/parts/<name>/split_<k>.parquet (skipped if there)."
    from stock_twins.evaluation import walk_forward
    from stock_twins.features import compute_features, compute_labels
    from stock_twins.regime import regime_labels
    d = out / "parts" / name
    d.mkdir(parents=True, exist_ok=True)
    feats, labels = compute_features(prices, index), compute_labels(prices, horizon)
    regimes = regime_labels(prices, index, cfg) if any(m.needs_regimes for m in models) else None
    logs = []
    for k, sp in enumerate(splits):
        f = d / f"split_{k:02d}.parquet"
        if f.exists():
            got = pd.read_parquet(f, columns=["date"])["date"]
            if got.min() < sp.test_start or got.max() > sp.test_end:
                raise SystemExit(f"{f} holds {got.min():%Y-%m-%d}..{got.max():%Y-%m-%d}, not split {k}'s test span "
                                 f"{sp.test_start:%Y-%m-%d}..{sp.test_end:%Y-%m-%d}: another run's parts; use another --out")
            lf = d / f"fitlog_{k:02d}.csv"
            if lf.exists(): logs.append(pd.read_csv(lf, parse_dates=["cutoff"]))
            continue
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = walk_forward(models, feats, labels, [sp], regimes, horizon, progress=False).assign(split=k)
        p.to_parquet(f, index=False)
        tw = [m for m in models if hasattr(m, "fit_log")]
        if tw:
            lg = pd.concat([m.fit_log() for m in tw], ignore_index=True)
            lg = lg[lg.cutoff <= sp.test_end]
            lg.to_csv(d / f"fitlog_{k:02d}.csv", index=False)
            logs.append(lg)
            for m in tw: m.log_.clear()
        print(f"[{name}] split {k + 1}/{len(splits)} {sp.test_start:%Y}: {time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    return logs


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="4 stocks from 2012, test years 2019-2020")
    p.add_argument("--design", action="store_true", help="validation years evaluation.valid_start..valid_end (2000-2004) only")
    p.add_argument("--years", nargs=2, type=int, default=None, help="first and last test year")
    p.add_argument("--tickers", default=None, help="comma-separated subset of the sample's stocks")
    p.add_argument("--hidden", type=int, default=32, help="foundation TFT hidden size")
    p.add_argument("--epochs", type=int, default=2, help="foundation pretraining epochs per fit")
    p.add_argument("--stride", type=int, default=10, help="foundation pretraining uses every stride-th date")
    p.add_argument("--every", type=int, default=3, help="refit the foundation every this many yearly splits")
    p.add_argument("--variants", default="twin_prior,twin,twin_unrouted")
    p.add_argument("--baselines", default="always_up,ewma_vol,garch,empirical_q,persistence")
    p.add_argument("--part", choices=["all", "baselines", "foundation"], default="all")
    p.add_argument("--set", action="append", default=[], help="config override section.key=value (repeatable; design runs)")
    p.add_argument("--grid", action="append", default=[], help="design runs: an extra twin under 'sec.key=v;sec.key=v' (repeatable)")
    p.add_argument("--foundation-dir", default=None, help="where the foundation fits are saved and reloaded (default OUT/foundation)")
    p.add_argument("--no-score", action="store_true")
    p.add_argument("--score-only", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--results", default=None, help="also copy the small result tables here (e.g. nbs/results/twin_eval, read by 20_twin)")
    a = p.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", module="lightning")
    print(_machine(), flush=True)
    from stock_twins.baselines import make_baselines
    from stock_twins.config import load_config
    from stock_twins.data import load_sample, load_sample_index
    from stock_twins.evaluation import QUICK_START, QUICK_TICKERS, walk_forward_splits
    from stock_twins.fallback import LightGBMFallback
    t00 = time.perf_counter()
    cfg = _set(load_config().replace(data={"store": ":memory:"}), a.set)
    ev = cfg.evaluation
    years = a.years or ((ev.valid_start, ev.valid_end) if a.design else (2019, 2020) if a.quick else (ev.test_start, ev.test_end))
    cfg = cfg.replace(evaluation={"test_start": years[0], "test_end": years[1], "refit": "yearly", **({"n_boot": 200} if a.quick else {})})
    ev = cfg.evaluation
    prices, index = load_sample(cfg), load_sample_index(cfg)
    if a.quick: prices = prices[prices["ticker"].isin(QUICK_TICKERS) & (prices["date"] >= QUICK_START)].reset_index(drop=True)
    if a.tickers: prices = prices[prices["ticker"].isin(a.tickers.split(","))].reset_index(drop=True)
    h = cfg.features.horizon
    splits = walk_forward_splits(prices["date"], ev.test_start, ev.test_end, "yearly", h, ev.purge)
    out = Path(a.out or ("reports/twin_eval_quick" if a.quick else "reports/twin_eval_design" if a.design else "reports/twin_eval"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps(dict(args=vars(a), years=years, twins=cfg.twins.model_dump(), load=os.getloadavg()), indent=1, default=str))
    print(f"test years {years[0]}-{years[1]}: {len(splits)} yearly splits, {prices.ticker.nunique()} stocks; twins refit weekly; "
          f"foundation hidden {a.hidden}, {a.epochs} epochs, stride {a.stride}, refit every {a.every} splits; out {out}", flush=True)
    logs = []
    if not a.score_only and a.part in ("all", "baselines"):
        ms = make_baselines([s for s in a.baselines.split(",") if s], cfg) + [LightGBMFallback.from_config(cfg)]
        t0 = time.perf_counter()
        run_part("baselines", ms, prices, index, cfg, splits, out, h)
        print(f"## baselines + fallback: {time.perf_counter() - t0:.0f} s", flush=True)
    if not a.score_only and a.part in ("all", "foundation"):
        from stock_twins.evaluation import periodic_foundation
        from stock_twins.foundation import FoundationSpec
        from stock_twins.pretrain import REAL_FEATURES
        from stock_twins.twin_train import TwinForecaster
        spec = FoundationSpec.from_config(cfg, len(REAL_FEATURES), len(cfg.universe.sectors), hidden=a.hidden)
        refit_dates = [s.train_end for s in splits[::a.every]]          # fixed in advance: a resumed run refits where a whole run does
        f0 = periodic_foundation(prices, index, cfg, a.every, a.foundation_dir or str(out / "foundation"), refit_dates=refit_dates,
                                 spec=spec, epochs=a.epochs, date_stride=a.stride, progress=False)
        ms = [f0] + TwinForecaster.variants(f0, [s for s in a.variants.split(",") if s])
        cache = ms[1]._cache if len(ms) > 1 else {}
        for g in a.grid:                                                   # design runs: the twin under other settings
            gcfg = _set(cfg, g.split(";"))
            ms.append(TwinForecaster(f0, name=f"twin[{g}]", cfg=gcfg, cache=cache))
        t0 = time.perf_counter()
        logs = run_part("foundation", ms, prices, index, cfg, splits, out, h)
        print(f"## foundation and twins: {time.perf_counter() - t0:.0f} s; foundation fits at "
              f"{[f'{d:%Y-%m-%d}' for d in getattr(f0, 'fits_', [])]}", flush=True)
    elif (out / "parts" / "foundation").exists():
        logs = [pd.read_csv(f, parse_dates=["cutoff"]) for f in sorted((out / "parts" / "foundation").glob("fitlog_*.csv"))]
    if not a.no_score:
        score_all(out, cfg, splits, logs, elapsed=time.perf_counter() - t00, results=a.results)
    print(f"## whole command: {time.perf_counter() - t00:.0f} s; {_machine()}", flush=True)


if __name__ == "__main__":
    main()
