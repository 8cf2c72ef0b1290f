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
from stock_twins.checkpoint import CheckpointError, payload_path, read_record, record_path
from stock_twins.evaluation import evaluate, walk_forward, walk_forward_splits
from stock_twins.fallback import HEADS, LightGBMFallback
from stock_twins.metrics import brier, hit_rate, interval_coverage, qlike, regime_accuracy, score
from stock_twins.regime import regime_labels
from stock_twins.schema import PROB_COLUMNS, VALUE_COLUMNS, Panel
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
    stem = m.save(tmp_path / "fallback" / "all" / "fb")
    rec = read_record(stem, "fallback")
    _eq(sorted(rec["meta"]["heads"]), sorted(HEADS))
    _eq(rec["meta"]["features"], m.features_)
    _eq(rec["meta"]["train_end"], f"{data['split'][0].train_end:%Y-%m-%d}")
    assert len(rec["sha256"]) == 64
    assert not list((tmp_path / "fallback" / "all").glob(".*.tmp"))      # atomic writes leave no temp files
    back = LightGBMFallback.load(stem)
    panel = _test_panel(data)
    _eq(back.predict(panel), m.predict(panel))
    day = data["feats"].date.max()
    _eq(back.predict_latest(data["feats"], NON_PILOT, day, data["regs"]), m.predict_latest(data["feats"], NON_PILOT, day, data["regs"]))
    m.save(stem)                                                           # saving again over the same artefact is fine
    _eq(LightGBMFallback.load(stem).predict(panel), m.predict(panel))


def _saved(m, tmp_path, name="fb"):
    return m.save(tmp_path / "fallback" / "all" / name)


def _rewrite(stem, **changes):
    "Change the record's meta (the payload's hash does not cover the record: the loader's own checks must catch it)."
    rec = json.loads(record_path(stem).read_text())
    rec["meta"].update(changes)
    record_path(stem).write_text(json.dumps(rec))


def test_corrupt_or_tampered_files(fitted, tmp_path):
    m, _ = fitted
    d = _saved(m, tmp_path)
    blob = payload_path(d).read_bytes()
    payload_path(d).write_bytes(blob[: len(blob) // 2])                    # truncated
    _fail(lambda: LightGBMFallback.load(d), exc=CheckpointError, contains="truncated")
    payload_path(d).write_bytes(blob.replace(b"shrinkage=", b"shrinkage=9", 1)[: len(blob)])   # edited, same size
    _fail(lambda: LightGBMFallback.load(d), exc=CheckpointError, contains="does not match")
    # a consistent-looking forgery: another head's booster under the name 'ret', with its hash recomputed
    from safetensors.numpy import load, save
    d = _saved(m, tmp_path, "fb2")
    good = load(payload_path(d).read_bytes())
    arrays = {**good, "ret": good["regime"]}
    blob = save(arrays); payload_path(d).write_bytes(blob)
    rec = json.loads(record_path(d).read_text()); rec.update(sha256=hashlib.sha256(blob).hexdigest(), bytes=len(blob))
    record_path(d).write_text(json.dumps(rec))
    _fail(lambda: LightGBMFallback.load(d), exc=CheckpointError, contains="head 'ret' has")
    arrays = {**good, "dir": np.frombuffer(b"not a model", dtype=np.uint8)}
    blob = save(arrays); payload_path(d).write_bytes(blob)
    rec.update(sha256=hashlib.sha256(blob).hexdigest(), bytes=len(blob)); record_path(d).write_text(json.dumps(rec))
    _fail(lambda: LightGBMFallback.load(d), exc=CheckpointError, contains="head 'dir' is not a LightGBM model")
    d = _saved(m, tmp_path, "fb6")
    _rewrite(d, regime_classes=[0, 1, 2])                                 # metadata that disagrees with the regime model
    _fail(lambda: LightGBMFallback.load(d), exc=CheckpointError, contains="4 classes, the record lists 3")
    d = _saved(m, tmp_path, "fb4")
    rec = json.loads(record_path(d).read_text()); del rec["meta"]["vol_scale"]; record_path(d).write_text(json.dumps(rec))
    _fail(lambda: LightGBMFallback.load(d), exc=CheckpointError, contains="lacks 'vol_scale'")
    record_path(d).write_text("[]")
    _fail(lambda: LightGBMFallback.load(d), exc=CheckpointError, contains="not a checkpoint record")
    record_path(d).write_text("{truncated")
    _fail(lambda: LightGBMFallback.load(d), exc=CheckpointError, contains="corrupt checkpoint record")
    d = _saved(m, tmp_path, "fb5")
    payload_path(d).unlink()
    _fail(lambda: LightGBMFallback.load(d), exc=CheckpointError, contains="payload file missing")
    _fail(lambda: LightGBMFallback.load(tmp_path / "nowhere"), exc=CheckpointError, contains="missing file")


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
