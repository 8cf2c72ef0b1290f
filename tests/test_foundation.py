"""Foundation model checkpoints, leakage and embeddings, across file and store boundaries.

- checkpoints: save -> load gives identical outputs; truncated/corrupt weights, broken or tampered JSON and a
  spec mismatch are refused with a clear `CheckpointError`; loading never unpickles (torch.load and pickle.loads
  are patched to raise); a checkpoint from before the TFT's static encoders is refused too;
- the TFT's static covariates (sector, liquidity) change a stock's temporal embedding and no other stock's, and
  masked days stay invisible with them; the parameter count per part is printed by the benchmark (about 5M);
- no lookahead: `pretrain(train_end=X)` gives bit-identical weights when every price after X is changed (and
  different weights when a price before X is changed, so the test can fail);
- `embed` writes one row per (date, ticker) asked to the store's `embeddings` table, in a DuckDB file on disk;
- on the real sample at the default size, span batches (each stock-day encoded once, the closed-form variable selection)
  give what stacked windows through pytorch-forecasting's own `VariableSelectionNetwork` give.
"""
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fastcore.test import test_eq as _eq, test_fail as _fail

from stock_twins.config import load_config
from stock_twins.data import load_sample, load_sample_index
from stock_twins.foundation import FoundationModel, FoundationSpec, random_batch
from stock_twins.checkpoint import CheckpointError, payload_path, record_path
from stock_twins.embed import embed
from stock_twins.pretrain import REAL_FEATURES, load_foundation, pretrain, save_foundation
from stock_twins.schema import FOUNDATION_HEAD_COLUMNS
from stock_twins.store import Store

torch.set_num_threads(1)
TICK = ["AAPL", "JNJ", "XOM", "JPM"]


@pytest.fixture(scope="module")
def data():
    p, i = load_sample(), load_sample_index()
    small = p[p.ticker.isin(TICK) & (p.date >= "2003-06-01")].groupby("ticker").head(300).reset_index(drop=True)
    return small, i[i.date.isin(small.date)].reset_index(drop=True)


@pytest.fixture(scope="module")
def cfg():
    return load_config().replace(data={"store": ":memory:"}, graph={"k": 2}, foundation={"dates_per_batch": 16})


def _model(seed=0) -> FoundationModel:
    torch.manual_seed(seed)
    m = FoundationModel(FoundationSpec.tiny(n_features=len(REAL_FEATURES), n_sectors=11)).eval()
    m.temporal.set_scaler(np.random.default_rng(seed).normal(size=len(REAL_FEATURES)), np.full(len(REAL_FEATURES), 2.0))
    m.meta = {"features": list(REAL_FEATURES), "sectors": [f"s{i}" for i in range(11)], "train_end": "2004-01-01"}
    return m


@pytest.fixture()
def ckpt(tmp_path):
    m = _model()
    return m, save_foundation(m, tmp_path)


def _same_outputs(a: FoundationModel, b: FoundationModel) -> bool:
    batch = random_batch(a.spec, n_dates=2, n_stocks=5, seed=3)
    with torch.inference_mode():
        oa, ob = a(**batch), b(**batch)
    return all(torch.equal(oa[k], ob[k]) for k in ("embedding", "ret", "vol", "quantiles", "hit_prob"))


def test_round_trip(ckpt):
    m, path = ckpt
    back = load_foundation(path, spec=m.spec)
    assert _same_outputs(m, back)
    _eq(back.meta["features"], list(REAL_FEATURES))
    assert not _same_outputs(_model(seed=1), back)  # the comparison can fail


def test_no_pickle(ckpt, monkeypatch):
    m, path = ckpt
    def boom(*a, **k): raise AssertionError("unpickling is not allowed when loading a checkpoint")
    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    assert _same_outputs(m, load_foundation(path))


def _write(stem, weights: bytes, rec: dict | str):
    "A copy of an artefact under another stem, with the given payload and record."
    payload_path(stem).write_bytes(weights)
    if isinstance(rec, dict): rec = {**rec, "file": payload_path(stem).name}
    record_path(stem).write_text(rec if isinstance(rec, str) else json.dumps(rec))


def test_corrupt_and_tampered(ckpt, tmp_path):
    import hashlib
    m, path = ckpt
    w, rec = payload_path(path).read_bytes(), json.loads(record_path(path).read_text())
    meta = rec["meta"]
    bad = tmp_path / "bad"
    _write(bad, w[: len(w) // 3], rec)                                    # truncated weights
    _fail(lambda: load_foundation(bad), contains="truncated or padded", exc=CheckpointError)
    flipped = bytearray(w); flipped[len(w) // 2] ^= 0xFF                  # one flipped byte
    _write(bad, bytes(flipped), rec)
    _fail(lambda: load_foundation(bad), contains="does not match", exc=CheckpointError)
    junk = b"not a safetensors file at all"                               # garbage with a matching hash
    _write(bad, junk, {**rec, "sha256": hashlib.sha256(junk).hexdigest(), "bytes": len(junk)})
    _fail(lambda: load_foundation(bad), contains="not a readable safetensors file", exc=CheckpointError)
    _write(bad, w, json.dumps(rec)[:-10])                                 # broken JSON
    _fail(lambda: load_foundation(bad), contains="corrupt checkpoint record", exc=CheckpointError)
    _write(bad, w, {**rec, "meta": {**meta, "spec": {**meta["spec"], "hidden": 32}}})      # tampered spec
    _fail(lambda: load_foundation(bad), contains="do not fit the spec", exc=CheckpointError)
    _write(bad, w, {**rec, "meta": {**meta, "spec": {**meta["spec"], "bogus": 1}}})
    _fail(lambda: load_foundation(bad), contains="bogus", exc=CheckpointError)
    _write(bad, w, {**rec, "meta": {**meta, "scaler": {**meta["scaler"], "scale": [1.0] * len(REAL_FEATURES)}}})   # tampered scaler
    _fail(lambda: load_foundation(bad), contains="scaler", exc=CheckpointError)
    _write(bad, w, {**rec, "format": "something else"})
    _fail(lambda: load_foundation(bad), contains="not a stock_twins checkpoint record", exc=CheckpointError)
    _write(bad, w, {**rec, "kind": "twin"})
    _fail(lambda: load_foundation(bad), contains="a twin checkpoint, expected a foundation", exc=CheckpointError)
    _write(bad, w, {"format": "stock_twins.foundation/1", **{k: v for k, v in meta.items()}})   # the format before 0.2
    _fail(lambda: load_foundation(bad), contains="old format", exc=CheckpointError)
    _fail(lambda: load_foundation(path, spec=FoundationSpec.tiny(len(REAL_FEATURES), 11, embed_dim=16)),
          contains="spec mismatch", exc=CheckpointError)
    _fail(lambda: load_foundation(tmp_path / "nope"), contains="missing", exc=CheckpointError)
    assert _same_outputs(m, load_foundation(path))                       # the original is still fine


def test_checkpoint_without_static_encoders_is_refused(ckpt, tmp_path):
    "A checkpoint saved before the static encoders existed (same spec keys, fewer weights) gives a clear CheckpointError."
    import hashlib
    from safetensors.torch import load, save
    m, path = ckpt
    rec = json.loads(record_path(path).read_text())
    state = load(payload_path(path).read_bytes())
    old = {k: v for k, v in state.items() if not k.startswith("temporal.static.") and not k.startswith("temporal.enrichment.")
           and "context" not in k.split(".")[-2] and "_l1" not in k}  # no static encoders, enrichment, VSN context, 2nd LSTM layer
    assert len(old) < len(state)
    blob = save(old)
    bad = tmp_path / "old"
    _write(bad, blob, {**rec, "meta": {**rec["meta"], "spec": {**rec["meta"]["spec"], "lstm_layers": 1}},
                       "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)})
    _fail(lambda: load_foundation(bad), contains="do not fit the spec", exc=CheckpointError)


def _temporal(m, batch):
    with torch.inference_mode():
        return m(**batch)["temporal"]


def test_static_covariates_and_masking():
    m = _model()
    b = random_batch(m.spec, n_dates=2, n_stocks=5, seed=4)
    b["mask"][2, :6] = False                                               # stock 2 not listed for the first 6 days
    h = _temporal(m, b)
    for key, n in (("sector", m.spec.n_sectors + 1), ("liquidity", m.spec.n_liquidity)):
        b2 = {**b, key: b[key].clone()}; b2[key][3] = (b2[key][3] + 1) % n
        h2 = _temporal(m, b2)
        assert (h2[3] - h[3]).abs().max() > 1e-4, f"{key} does not reach the temporal encoder"
        others = [i for i in range(10) if i != 3]
        torch.testing.assert_close(h2[others], h[others])
    x = b["x"].clone(); x[2, :6] = 1e3; x[2, 1, 0] = float("nan")          # junk under the mask
    torch.testing.assert_close(_temporal(m, {**b, "x": x}), h)
    x[2, 8] += 1.0                                                         # an observed day does count
    assert (_temporal(m, {**b, "x": x})[2] - h[2]).abs().max() > 1e-4
    _fail(lambda: m.temporal(b["x"], b["mask"], torch.zeros(10, 3)), contains="static covariates must be", exc=ValueError)


def test_param_count_per_part_printed():
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_foundation.py"), "params"], capture_output=True, text=True,
                       cwd=root, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {l.rsplit(None, 1)[0].strip(): int(l.rsplit(None, 1)[1]) for l in r.stdout.splitlines() if l.strip() and l.split()[-1].isdigit()}
    parts = ["TFT (temporal, per day)", "TFT static encoders (per stock)", "GAT (graph)", "embeddings (context)", "backbone", "heads"]
    assert all(p in rows for p in parts), r.stdout
    _eq(sum(rows[p] for p in parts), rows["total"])
    assert 4_500_000 < rows["total"] < 5_500_000, rows["total"]
    assert rows["TFT static encoders (per stock)"] > 500_000 and "lstm_layers 2" in r.stdout


def _perturb_after(prices: pd.DataFrame, t: pd.Timestamp, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = prices.copy()
    after = out.date > t
    out.loc[after, "adj_close"] *= rng.uniform(0.7, 1.4, after.sum())
    return out


def _weights(prices, index, cfg, train_end):
    m, _ = pretrain(prices, index, cfg, train_end=train_end, epochs=1, tiny=True, progress=False, checkpoint_dir=False,
                    accelerator="cpu", max_steps=4)
    return m.state_dict(), m.meta


def test_pretrain_never_sees_after_train_end(data, cfg):
    prices, index = data
    X = pd.Timestamp(np.sort(prices.date.unique())[-40])
    w0, meta = _weights(prices, index, cfg, X)
    assert pd.Timestamp(meta["last_label_date"]) < X and meta["train_end"] == f"{X:%Y-%m-%d}"
    pi = index.copy(); pi.loc[pi.date > X, "close"] *= 1.3
    w1, _ = _weights(_perturb_after(prices, X, 1), pi, cfg, X)
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "weights changed when only prices after train_end changed"
    before = X - pd.Timedelta(days=90)                                   # control: a change before X must show
    w2, _ = _weights(_perturb_after(prices, before, 2), index, cfg, X)
    assert not all(torch.equal(w0[k], w2[k]) for k in w0)


def test_embed_writes_store(data, cfg, tmp_path):
    prices, index = data
    m = _model()
    m.meta = {**m.meta, "sectors": list(cfg.universe.sectors), "lookback": 20}
    dates = list(np.sort(prices.date.unique())[-4:])
    with Store(tmp_path / "s.duckdb") as st:
        e = embed(m, prices, index, dates, tickers=["XOM", "AAPL", "JPM"], store=st, cfg=cfg)
        _eq(len(e), 4 * 3)
        _eq(list(e.columns), ["date", "ticker"] + [f"e{i}" for i in range(m.spec.embed_dim)] + list(FOUNDATION_HEAD_COLUMNS) + ["foundation_hash"])
        _eq(set(e.foundation_hash), {""})                                   # an unsaved model has no weights hash
        embed(m, prices, index, dates[-2:], store=st, cfg=cfg)              # all 4 stocks on 2 dates: upsert, no duplicates
    with Store(tmp_path / "s.duckdb", read_only=True) as st:
        got = st.read("embeddings")
        _eq(len(got), 4 * 3 + 2)
        _eq(got.duplicated(["date", "ticker"]).any(), False)
        _eq(sorted(got[got.date == dates[0]].ticker), ["AAPL", "JPM", "XOM"])
        ecols = [f"e{i}" for i in range(m.spec.embed_dim)]
        np.testing.assert_allclose(got.set_index(["date", "ticker"]).loc[(dates[0], "XOM"), ecols].to_numpy(dtype=float),
                                   e.set_index(["date", "ticker"]).loc[(dates[0], "XOM"), ecols].to_numpy(dtype=float), rtol=1e-6)
    _fail(lambda: embed(m, prices, index, dates, tickers=["NOPE"], cfg=cfg), contains="unknown tickers ['NOPE']")


def test_span_batches_match_stacked_windows_on_the_sample():
    "Default-size model on the real sample: span batches with the per-day part shared give what stacked windows through the library's VSN give."
    from stock_twins.graph import DuckDBGraphStore
    from stock_twins.pretrain import DateDataset, MODEL_KEYS, SPAN_KEYS, build_cross_sections, collate_dates, fit_scaler, span_batch
    cfg = load_config().replace(data={"store": ":memory:"})
    p, i = load_sample(), load_sample_index()
    p = p[(p.date >= "2007-01-01") & (p.date <= "2008-06-30")].reset_index(drop=True)
    cs = build_cross_sections(p, i[i.date.isin(p.date)], cfg, DuckDBGraphStore(Store()))
    torch.manual_seed(0)
    m = FoundationModel(FoundationSpec.from_config(cfg, len(REAL_FEATURES), len(cfg.universe.sectors))).eval()
    with torch.no_grad():
        for q in m.parameters(): q.add_(0.05 * torch.randn_like(q))
    m.temporal.set_scaler(*fit_scaler(cs.values, cs.valid, np.arange(len(cs.dates))))
    days = list(range(len(cs.dates) - 12, len(cs.dates), 2)) + [len(cs.dates) - 1]         # 7 dates, not all consecutive
    with torch.inference_mode():
        new = m(**{k: v for k, v in span_batch(cs, days, 60).items() if k in SPAN_KEYS})
        enc = m.temporal
        def library_vsn(x, c_s):                                                          # the code the per-day part replaced
            o, w = enc.vsn({n: x[..., j:j + 1] for j, n in enumerate(enc.names)}, c_s.unsqueeze(1))
            return o, w.squeeze(-2)
        enc.select_variables = library_vsn
        old = m(**{k: v for k, v in collate_dates([DateDataset(cs, [d], 60)[0] for d in days]).items() if k in MODEL_KEYS})
    _eq(len(new["embedding"]), 7 * 20)
    for k in ("embedding", "temporal", "graph", "ret", "vol", "quantiles"):
        torch.testing.assert_close(new[k], old[k], rtol=1e-4, atol=1e-5)
