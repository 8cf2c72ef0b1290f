"""The LightGBM fallback across boundaries: files on disk (round trip, corrupt and tampered files), production look-ups,
the TwinManager's fallback interface, and scoring through the evaluation harness on a quick split of the real sample."""
import hashlib
import json
import os
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_eq as _eq, test_close as _close, test_fail as _fail

from stock_twins.config import Config
from stock_twins.data import load_sample, load_sample_index
from stock_twins.evaluation import (PROB_COLUMNS, VALUE_COLUMNS, Panel, brier, evaluate, hit_rate, interval_coverage, qlike,
                                    regime_accuracy, regime_labels, score, walk_forward, walk_forward_splits)
from stock_twins.fallback import HEADS, META_FILE, FallbackError, LightGBMFallback
from stock_twins.features import compute_features, compute_labels

TICKERS = ("AAPL", "JNJ", "JPM", "XOM", "BBY", "GE", "LLY", "RRC")
NON_PILOT = ["BBY", "GE", "LLY", "RRC"]
ROUNDS = 30


@pytest.fixture(scope="module")
def data():
    cfg = Config()
    p = load_sample(cfg)
    p = p[p.ticker.isin(TICKERS) & (p.date >= "2012-01-01") & (p.date <= "2019-12-31")].reset_index(drop=True)
    idx = load_sample_index(cfg)
    idx = idx[(idx.date >= "2012-01-01") & (idx.date <= "2019-12-31")].reset_index(drop=True)
    feats, labels, regs = compute_features(p, idx), compute_labels(p, 5), regime_labels(p, idx, cfg)
    split = walk_forward_splits(feats.date, 2019, 2019, "yearly", horizon=5, purge=5)
    return dict(cfg=cfg, feats=feats, labels=labels, regs=regs, split=split)


@pytest.fixture(scope="module")
def fitted(data):
    m = LightGBMFallback.from_config(data["cfg"], n_estimators=ROUNDS)
    preds = walk_forward([m], data["feats"], data["labels"], data["split"], data["regs"], horizon=5, progress=False)
    return m, preds


def _test_panel(data):
    f = data["feats"]
    return Panel(f, pd.Timestamp("2019-01-02"), f.date.max(), None, data["regs"])


def test_round_trip_identical(data, fitted, tmp_path):
    m, _ = fitted
    m.save(tmp_path / "fb")
    meta = json.loads((tmp_path / "fb" / META_FILE).read_text())
    _eq(sorted(meta["files"]), sorted(HEADS))
    _eq(meta["features"], m.features_)
    _eq(meta["train_end"], f"{data['split'][0].train_end:%Y-%m-%d}")
    assert all(len(v["sha256"]) == 64 for v in meta["files"].values())
    assert not list((tmp_path / "fb").glob(".*.tmp"))                     # atomic writes leave no temp files
    assert b"pickle" not in (tmp_path / "fb" / "ret.txt").read_bytes()[:200] and \
        (tmp_path / "fb" / "ret.txt").read_text().startswith("tree")       # LightGBM text format
    back = LightGBMFallback.load(tmp_path / "fb")
    panel = _test_panel(data)
    _eq(back.predict(panel), m.predict(panel))
    day = data["feats"].date.max()
    _eq(back.predict_latest(data["feats"], NON_PILOT, day, data["regs"]), m.predict_latest(data["feats"], NON_PILOT, day, data["regs"]))
    m.save(tmp_path / "fb")                                                # saving again over the same folder is fine
    _eq(LightGBMFallback.load(tmp_path / "fb").predict(panel), m.predict(panel))


def _saved(m, tmp_path, name="fb"):
    d = tmp_path / name
    m.save(d)
    return d


def test_corrupt_or_tampered_files(fitted, tmp_path):
    m, _ = fitted
    d = _saved(m, tmp_path)
    txt = (d / "vol.txt").read_bytes()
    (d / "vol.txt").write_bytes(txt[: len(txt) // 2])                       # truncated
    _fail(lambda: LightGBMFallback.load(d), exc=FallbackError, contains="vol.txt: sha256")
    (d / "vol.txt").write_bytes(txt.replace(b"shrinkage=", b"shrinkage=9", 1))   # edited
    _fail(lambda: LightGBMFallback.load(d), exc=FallbackError, contains="corrupt or was modified")
    # a consistent-looking forgery: garbage with its hash written into the metadata
    d = _saved(m, tmp_path, "fb2")
    (d / "dir.txt").write_bytes(b"not a model\n")
    meta = json.loads((d / META_FILE).read_text())
    meta["files"]["dir"]["sha256"] = hashlib.sha256(b"not a model\n").hexdigest()
    (d / META_FILE).write_text(json.dumps(meta))
    _fail(lambda: LightGBMFallback.load(d), exc=FallbackError, contains="dir.txt: not a LightGBM model")
    # a model file swapped for another head's (right format, wrong feature count) and its hash
    d = _saved(m, tmp_path, "fb3")
    meta = json.loads((d / META_FILE).read_text())
    meta["files"]["ret"] = meta["files"]["regime"]
    (d / META_FILE).write_text(json.dumps(meta))
    _fail(lambda: LightGBMFallback.load(d), exc=FallbackError, contains="features")
    meta["files"]["ret"] = {"file": "../ret.txt", "sha256": "0" * 64}
    (d / META_FILE).write_text(json.dumps(meta))
    _fail(lambda: LightGBMFallback.load(d), exc=FallbackError, contains="not a plain file name")
    d = _saved(m, tmp_path, "fb6")
    meta = json.loads((d / META_FILE).read_text())
    meta["regime_classes"] = [0, 1, 2]                                    # metadata that disagrees with the regime model
    (d / META_FILE).write_text(json.dumps(meta))
    _fail(lambda: LightGBMFallback.load(d), exc=FallbackError, contains="4 classes, fallback.json lists 3")
    d = _saved(m, tmp_path, "fb4")
    meta = json.loads((d / META_FILE).read_text())
    del meta["vol_scale"]
    (d / META_FILE).write_text(json.dumps(meta))
    _fail(lambda: LightGBMFallback.load(d), exc=FallbackError, contains="missing entry 'vol_scale'")
    (d / META_FILE).write_text("[]")
    _fail(lambda: LightGBMFallback.load(d), exc=FallbackError, contains="not a fallback")
    (d / META_FILE).write_text("{truncated")
    _fail(lambda: LightGBMFallback.load(d), exc=FallbackError, contains="not valid JSON")
    d = _saved(m, tmp_path, "fb5")
    (d / "q90.txt").unlink()
    _fail(lambda: LightGBMFallback.load(d), exc=FallbackError, contains="q90.txt: model file is missing")
    _fail(lambda: LightGBMFallback.load(tmp_path / "nowhere"), exc=FileNotFoundError, contains=META_FILE)


def test_unknown_ticker_or_date(data, fitted):
    m, _ = fitted
    f, day = data["feats"], data["feats"].date.max()
    _fail(lambda: m.predict_latest(f, ["GE", "ZZZZ"], day), exc=KeyError, contains="['ZZZZ']")
    _fail(lambda: m.predict_latest(f, ["GE"], "2030-01-02"), exc=KeyError, contains="2030-01-02")
    # a ticker that has rows, but not on that date
    _fail(lambda: m.predict_latest(f[~((f.ticker == "LLY") & (f.date == day))], NON_PILOT, day), exc=KeyError, contains="['LLY']")
    _fail(lambda: LightGBMFallback().predict(_test_panel(data)), exc=RuntimeError, contains="not fitted")
    _fail(lambda: m.predict_latest(f.drop(columns="ret_5"), ["GE"], day), contains="lack columns ['ret_5']")
    p = m.predict_latest(f, "GE", day)                                     # one ticker as a string; no regimes
    _eq(p.ticker.tolist(), ["GE"])
    assert p[list(PROB_COLUMNS)].isna().all().all() and p.exp_return.notna().all()


def test_scores_through_harness_metrics(data, fitted):
    m, preds = fitted
    _eq(sorted(preds.ticker.unique()), sorted(TICKERS))
    _eq(sorted(preds.date.dt.year.unique()), [2019])
    assert preds[list(VALUE_COLUMNS)].notna().all().all()
    sc = score(preds, n_boot=100)
    row = sc.loc["fallback"]
    assert np.isfinite(row[["hit", "hit_lo", "hit_hi", "edge", "top_hit", "ic", "brier", "qlike", "vol_rmse", "cov80", "width80",
                            "pinball", "regime_acc", "regime_f1", "regime_acc_persist"]].astype(float)).all(), row
    _close(row["hit"], hit_rate(preds, n_boot=100).point)
    assert 0.3 < row["hit"] < 0.75 and 0.15 < row["brier"] < 0.3 and 0.5 < row["cov80"] < 1.0, row
    assert 0 < qlike(preds) < 2 and 0.4 < regime_accuracy(preds) <= 1, row
    _close(brier(preds), row["brier"]); _close(interval_coverage(preds), row["cov80"])


def test_evaluate_accepts_the_fallback(tmp_path):
    "The harness's `evaluate` runs the fallback next to baselines and writes it into the report."
    fb = LightGBMFallback.from_config(Config(), n_estimators=ROUNDS)
    rep = evaluate([fb, "always_up", "persistence"], quick=True, out_dir=tmp_path, cfg=Config(), progress=False)
    text = rep.read_text()
    assert "| fallback |" in text
    sc = pd.read_csv(tmp_path / "scores.csv", index_col="model")
    assert {"fallback", "always_up", "persistence"} <= set(sc.index)
    assert np.isfinite(sc.loc["fallback", ["hit", "qlike", "cov80", "regime_acc"]].astype(float)).all()


def test_twin_manager_uses_the_bound_fallback(data, fitted, tmp_path):
    "A TwinManager without any twin routes every stock to the fallback through `bind(...)`."
    from stock_twins.manager import TwinManager
    from stock_twins.store import Store
    m, _ = fitted
    cfg = Config()
    day = data["feats"].date.max()
    mgr = TwinManager(cfg, Store(":memory:"), foundation_hash="f" * 64, fallback=m.bind(data["feats"], data["regs"]),
                      checkpoint_dir=tmp_path / "none")
    out = mgr.predict(["LLY", "GE"], day)
    _eq(out.ticker.tolist(), ["LLY", "GE"])
    _eq(out.source.tolist(), ["fallback", "fallback"])
    ref = m.predict_latest(data["feats"], ["LLY", "GE"], day, data["regs"])
    np.testing.assert_array_equal(out[list(VALUE_COLUMNS)].to_numpy(float), ref[list(VALUE_COLUMNS)].to_numpy(float))
