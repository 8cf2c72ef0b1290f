"End-to-end checks of the walk-forward protocol: `evaluate(quick=True)` on the real sample, into a temp dir."
import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_eq as _eq, test_close as _close, test_fail as _fail

from stock_twins.config import Config
from stock_twins.data import load_sample, return_price
from stock_twins.evaluation import QUICK_START, QUICK_TICKERS, evaluate
from stock_twins.schema import PRED_COLUMNS, Forecaster, prediction_frame, validate_predictions
from stock_twins.baselines import BASELINES

H, PURGE = 5, 5


class Spy(Forecaster):
    "Records, per fit, every training row's date and the test span it is then asked to predict."
    name, outputs = "spy", ("exp_return",)

    def __init__(self): self.fits, self.tests = [], []

    def fit(self, train):
        rows = train.training_rows().dropna(subset=["y_ret"])
        self.fits.append(rows[["date", "ticker"]].copy())
        self.feature_ends = getattr(self, "feature_ends", []) + [train.features["date"].max()]
        return self

    def predict(self, test):
        r = test.rows()
        if r["date"].min() > self.fits[-1]["date"].max(): self.tests.append((test.start, test.end))
        return prediction_frame(r, self.name, exp_return=0.001)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick_eval")
    spy = Spy()
    cfg = Config().replace(evaluation={"purge": PURGE}, features={"horizon": H})
    report = evaluate(models=list(BASELINES) + [spy], quick=True, out_dir=out, cfg=cfg, progress=False)
    prices = load_sample(cfg)
    prices = prices[prices.ticker.isin(QUICK_TICKERS) & (prices.date >= QUICK_START)]
    return dict(out=out, report=report, spy=spy, prices=prices,
                preds=pd.read_parquet(out / "predictions.parquet"), scores=pd.read_csv(out / "scores.csv", index_col="model"),
                splits=pd.read_csv(out / "splits.csv", parse_dates=["train_end", "test_start", "test_end", "purge_start"]))


def test_purge_respected(run):
    "(1) No training row's label window t+1..t+h reaches into [test_start - purge, ...]; the last one ends just before it."
    spy, prices, splits = run["spy"], run["prices"], run["splits"]
    _eq(len(spy.fits), 2); _eq(len(spy.tests), 2); _eq(len(splits), 2)
    for fit, fend, (start, end), s in zip(spy.fits, spy.feature_ends, spy.tests, splits.itertuples()):
        _eq((start, end), (s.test_start, s.test_end))
        cal_all = pd.DatetimeIndex(prices["date"].unique()).sort_values()
        last_train = cal_all[cal_all.get_loc(start) - PURGE - H - 1]     # the split itself, not only the label filter
        _eq(s.train_end, last_train); _eq(fend, last_train)
        _eq(s.purge_start, cal_all[cal_all.get_loc(start) - PURGE])
        for t, rows in fit.groupby("ticker"):
            cal = pd.DatetimeIndex(prices.loc[prices.ticker == t, "date"]).sort_values()
            first_test = cal.get_loc(cal[cal >= start][0])
            gap_start = cal[first_test - PURGE]                      # first date of the purge gap
            window_end = cal[cal.get_indexer(rows["date"]) + H]     # last day of each training row's label window
            assert (window_end < gap_start).all(), f"{t}: a training label reaches {window_end.max():%Y-%m-%d} >= {gap_start:%Y-%m-%d}"
            _eq(window_end.max(), cal[first_test - PURGE - 1])      # and no more than needed is thrown away
            _eq(cal[cal.get_loc(rows["date"].max()) + H + PURGE + 1], cal[first_test])


def test_always_up_is_share_of_up(run):
    "(2) Always-up's hit rate equals the share of positive realised 5-day returns on the same rows, recomputed from prices."
    p, prices = run["preds"], run["prices"]
    up = p[p.model == "always_up"].dropna(subset=["y_ret"])
    assert len(up) > 1500
    lp = prices.assign(lp=np.log(return_price(prices))).sort_values(["ticker", "date"])
    lp["fwd"] = lp.groupby("ticker").lp.shift(-H) - lp.lp
    m = up.merge(lp[["date", "ticker", "fwd"]], on=["date", "ticker"])
    _close(m.y_ret.to_numpy(), m.fwd.to_numpy(), eps=1e-12)     # the joined label is log(p[t+5] / p[t])
    _close(run["scores"].loc["always_up", "hit"], (m.fwd > 0).mean())
    _close(run["scores"].loc["always_up", "edge"], 0.0)
    assert (up.exp_return > 0).all()


def test_predictions_schema(run):
    "(3) The predictions parquet validates against the schema and holds every model on the quick test span only."
    p = run["preds"]
    v = validate_predictions(p)
    _eq(list(v.columns[:len(PRED_COLUMNS)]), list(PRED_COLUMNS))
    _eq(sorted(p.model.unique()), sorted(list(BASELINES) + ["spy"]))
    _eq(sorted(p.ticker.unique()), sorted(QUICK_TICKERS))
    _eq(sorted(p.date.dt.year.unique()), [2019, 2020])
    _eq(p.groupby("model").size().nunique(), 1)                  # every model predicts the same rows
    _fail(lambda: validate_predictions(p.assign(hit_prob=2.0)), contains="hit_prob outside [0, 1]")


def test_report_names_every_model(run):
    "(4) report.md exists, names every model in its tables, and its plots exist."
    text = run["report"].read_text()
    for m in list(BASELINES) + ["spy"]: assert f"| {m} |" in text, m
    for png in ("hit_rate_cumulative.png", "ic_rolling.png", "calibration.png", "coverage_by_year.png"):
        assert (run["out"] / png).stat().st_size > 1000 and png in text


def test_bad_model_name(tmp_path):
    _fail(lambda: evaluate(models="always_up,nope", quick=True, out_dir=tmp_path, cfg=Config(), progress=False), contains="nope")
    assert not (tmp_path / "report.md").exists()
