"Digital twins across process and file boundaries: checkpoints on disk, a DuckDB store file, joblib workers, the manager."
import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch
from fastcore.test import test_close as _close, test_eq as _eq, test_fail as _fail

from stock_twins.data import ingest_prices

from stock_twins.config import Config
from stock_twins.checkpoint import CheckpointError, payload_path, read_record, record_path
from stock_twins.manager import TwinManager, TwinStack, loop_forward
from stock_twins.regime import REGIME_FEATURES
from stock_twins.schema import PRED_COLUMNS, prediction_frame
from stock_twins.simulate import simulate_market
from stock_twins.store import Store
from stock_twins.testing import SyntheticFoundation, synthetic_embeddings
from stock_twins.twin import DigitalTwin, TwinSpec
from stock_twins.twin_data import twin_frame
from stock_twins.twin_train import fine_tune, list_twins, load_twin, retrain_all, save_twin, twin_config_hash, twin_stem

FH = "c0ffee" * 10 + "abcd"  # a foundation hash (64 hex digits); the embeddings below are SYNTHETIC


@pytest.fixture(scope="module")
def market():
    return simulate_market(4, 400, n_sectors=2, seed=11)


@pytest.fixture(scope="module")
def cfg(market, tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    return market.config(Config(), n_pilot=3).replace(
        twins={"max_epochs": 25, "lora_rank": 2, "stock_dim": 4, "regime_dim": 4, "hidden": 8},
        foundation={"embed_dim": 8}, data={"store": str(tmp_path_factory.mktemp("db") / "st.duckdb"), "checkpoint_dir": str(d)})


@pytest.fixture(scope="module")
def store(market, cfg):
    st = Store(cfg.data.store)  # a DuckDB file on disk
    ingest_prices(st, market.prices, "sim", cfg=cfg)
    ingest_prices(st, market.index, "sim", table="index_prices")
    st.upsert("embeddings", synthetic_embeddings(market.prices, market.index, dim=8))
    yield st
    st.close()


@pytest.fixture(scope="module")
def frame(market, cfg):
    return twin_frame(synthetic_embeddings(market.prices, market.index, dim=8), market.prices, market.index, cfg)


def _cut(market, i=360):
    return pd.Timestamp(market.prices.date.unique()[i])


def test_untrained_twin_is_passthrough():
    torch.manual_seed(0)
    twin = DigitalTwin(TwinSpec()).eval()
    emb = torch.randn(7, 128)
    out = twin(emb, torch.randn(7, len(REGIME_FEATURES)))
    assert torch.equal(out["adapted"], emb)
    with torch.no_grad():
        twin.lora.up.weight.add_(0.01)
    assert not torch.equal(twin(emb, torch.zeros(7, 6))["adapted"], emb)


def test_parameter_counts():
    c = Config()
    plain = DigitalTwin(TwinSpec.from_config(c)).n_params
    opts = DigitalTwin(TwinSpec.from_config(c.replace(twins={"options": True}))).n_params
    assert 45_000 <= plain <= 55_000, plain
    assert 70_000 <= opts <= 80_000, opts


@pytest.mark.parametrize("options", [False, True])
def test_vmap_equals_loop(options):
    spec = TwinSpec.tiny(options=options)
    torch.manual_seed(1)
    twins = []
    for _ in range(12):
        t = DigitalTwin(spec)
        with torch.no_grad():
            for p in t.parameters():
                p.add_(0.2 * torch.randn_like(p))
        twins.append(t.eval())
    emb, reg = torch.randn(12, 8), torch.randn(12, 6)
    opt = torch.randn(12, 40) if options else None
    a, b = TwinStack.of(twins)(emb, reg, opt), loop_forward(twins, emb, reg, opt)
    for k in b:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    assert a["exp_return"].std() > 0


def test_fine_tune_reduces_validation_loss(frame, cfg, market):
    twin, met = fine_tune("S0001", frame, TwinSpec.from_config(cfg), cfg, _cut(market))
    assert met["val_loss"] < met["val_loss_init"], met
    assert met["best_epoch"] >= 1
    assert pd.Timestamp(met["last_label_date"]) <= _cut(market)


def test_too_little_history(frame, cfg, market):
    early = pd.Timestamp(market.prices.date.unique()[40])
    _fail(lambda: fine_tune("S0002", frame, TwinSpec.from_config(cfg), cfg, early), contains="S0002: too little history")
    with pytest.raises(ValueError) as e:
        fine_tune("S0002", frame, TwinSpec.from_config(cfg), cfg, early)
    # rows found vs needed: 41 sessions up to the cutoff, of which the last 5 have labels ending after it
    assert "36 rows" in str(e.value) and "need 60" in str(e.value), e.value


def test_checkpoint_roundtrip_and_refusals(frame, cfg, market, tmp_path):
    cut = _cut(market)
    twin, met = fine_tune("S0003", frame, TwinSpec.from_config(cfg), cfg, cut)
    ch = twin_config_hash(cfg)
    p = save_twin(twin, tmp_path, "S0003", cut, ch, FH, met)
    _eq(p, twin_stem(tmp_path, "S0003", cut, ch, FH))
    back, rec = load_twin(p, ch, FH)
    for (k, v), w in zip(twin.state_dict().items(), back.state_dict().values()):
        assert torch.equal(v, w), k
    _eq(rec["meta"]["spec"], twin.spec.to_dict())
    _eq(rec["meta"]["metrics"]["n_train"], met["n_train"])
    w = payload_path(p)
    assert rec["sha256"] == hashlib.sha256(w.read_bytes()).hexdigest()
    assert b"pickle" not in w.read_bytes()[:200] and w.read_bytes()[8:9] == b"{"  # safetensors: 8-byte length + JSON header

    _fail(lambda: load_twin(p, twin_config_hash(cfg.replace(twins={"patience": 3})), FH), exc=CheckpointError, contains="another configuration")
    _fail(lambda: load_twin(p, ch, "0" * 64), exc=CheckpointError, contains="another foundation")

    good = w.read_bytes()
    flipped = bytearray(good); flipped[-20] ^= 0xFF
    w.write_bytes(bytes(flipped))
    _fail(lambda: load_twin(p, ch, FH), exc=CheckpointError, contains="does not match")
    w.write_bytes(good[: len(good) // 2])
    _fail(lambda: load_twin(p, ch, FH), exc=CheckpointError, contains="truncated")
    # a consistent record whose weights are garbage: refused when loading, not silently
    junk = b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + b"\x00" * 32
    w.write_bytes(junk)
    j = record_path(p)
    m = json.loads(j.read_text()); m.update(sha256=hashlib.sha256(junk).hexdigest(), bytes=len(junk))
    j.write_text(json.dumps(m))
    _fail(lambda: load_twin(p, ch, FH), exc=CheckpointError, contains="not a readable safetensors file")
    j.write_text('{"format": "stock_twins.artifact/2", "tick')
    _fail(lambda: load_twin(p, ch, FH), exc=CheckpointError, contains="corrupt checkpoint record")
    _eq(list_twins(tmp_path).error.notna().tolist(), [True])
    w.unlink(); j.unlink()
    _fail(lambda: read_record(p), exc=CheckpointError, contains="missing")


def test_retrain_all_resumable_in_processes(store, cfg, market):
    cut = _cut(market, 380)
    s1 = retrain_all(cfg, store, cut, n_jobs=2, foundation_hash=FH, progress=False)  # pilots S0001..S0003, 2 worker processes
    _eq(s1.ticker.tolist(), ["S0001", "S0002", "S0003"])
    _eq(s1.status.tolist(), ["trained"] * 3)
    assert (s1.val_loss <= s1.val_loss_init).all()
    s2 = retrain_all(cfg, store, cut, n_jobs=2, foundation_hash=FH, progress=False)
    _eq(s2.status.tolist(), ["skipped"] * 3)
    _eq(s2.val_loss.tolist(), s1.val_loss.tolist())
    # a twin trained in a worker process equals the same fine-tune in this process (seeded per ticker)
    fr = twin_frame(store.read("embeddings", ["S0002"]), store.prices(["S0002"]), market.index, cfg)
    fr = fr[fr.date <= cut]
    twin, _ = fine_tune("S0002", fr, TwinSpec.from_config(cfg), cfg, cut)
    saved, _ = load_twin(s1.path.iloc[1], twin_config_hash(cfg), FH)
    for (k, v), w in zip(twin.state_dict().items(), saved.state_dict().values()):
        torch.testing.assert_close(v, w, atol=1e-5, rtol=1e-4, msg=k)


class _Fallback:
    def __init__(self): self.calls = []
    def predict(self, tickers, date):
        self.calls.append(list(tickers))
        return prediction_frame(pd.DataFrame({"date": pd.Timestamp(date), "ticker": list(tickers)}), "fb", exp_return=0.0, hit_prob=0.5)


def test_manager_routes_and_refuses(store, cfg, market):
    cut = _cut(market, 380)
    retrain_all(cfg, store, cut, n_jobs=1, foundation_hash=FH, progress=False)  # resumes: already trained above or here
    fb = _Fallback()
    mgr = TwinManager(cfg, store, foundation_hash=FH, fallback=fb)
    day = pd.Timestamp(market.prices.date.unique()[390])
    pred = mgr.predict(["S0004", "S0003", "S0001"], day)
    _eq(list(pred.columns), [*PRED_COLUMNS, "source"])
    _eq(pred.source.tolist(), ["fallback", "twin", "twin"])
    _eq(fb.calls, [["S0004"]])
    assert pred.loc[pred.source == "twin", "vol"].gt(0).all()
    _fail(lambda: mgr.predict(["S0001", "NOTATICKER"], day), exc=KeyError, contains="NOTATICKER")
    # another foundation's manager sees no usable twin and sends everything to the fallback
    other = TwinManager(cfg, store, foundation_hash="0" * 64, fallback=_Fallback())
    _eq(other.predict(["S0001"], day).source.tolist(), ["fallback"])


def test_options_twin_end_to_end(frame, cfg, market, tmp_path):
    "An options twin trains on (random, clearly fake) options features, checkpoints, and refuses to run without them."
    from stock_twins.schema import OPTIONS_FEATURES
    rng = np.random.default_rng(0)
    opts = frame[["date", "ticker"]].assign(**{c: rng.standard_normal(len(frame)) for c in OPTIONS_FEATURES})
    fr = frame.merge(opts, on=["date", "ticker"])
    spec = TwinSpec.tiny(options=True)
    twin, met = fine_tune("S0001", fr, spec, cfg, _cut(market))
    assert np.isfinite(met["val_loss"])
    p = save_twin(twin, tmp_path, "S0001", _cut(market), "x" * 64, FH, met)
    back, _ = load_twin(p)
    e, r, o = torch.randn(3, 8), torch.randn(3, 6), torch.randn(3, 40)
    torch.testing.assert_close(back(e, r, o)["hit_prob"], twin(e, r, o)["hit_prob"])
    _fail(lambda: back(e, r), contains="no options features were passed")
    _fail(lambda: fine_tune("S0001", frame, spec, cfg, _cut(market)), contains="no options features")


def test_ray_address_without_ray(store, cfg, market):
    try:
        import ray  # noqa: F401
        pytest.skip("ray is installed; this checks the message when it is not")
    except ImportError:
        pass
    c = cfg.replace(twins={"ray_address": "auto"})
    _fail(lambda: retrain_all(c, store, _cut(market, 385), tickers=["S0001"], resume=False, foundation_hash=FH, progress=False),
          exc=ImportError, contains="pip install -e '.[ray]'")


# --- ablations and the harness model ---------------------------------------------------------------------------------

ABLATIONS = ("lora", "regime_detector", "stock_embedding")


def test_ablations_drop_parameters_and_keep_defaults():
    c = Config()
    full = DigitalTwin(TwinSpec.from_config(c))
    _eq((full.n_params, DigitalTwin(TwinSpec.from_config(c.replace(twins={"options": True}))).n_params), (50_810, 74_590))
    emb, reg = torch.randn(4, 128), torch.randn(4, 6)
    for k in ABLATIONS:
        t = DigitalTwin(TwinSpec.from_config(c, **{k: False})).eval()
        assert t.n_params < full.n_params, k
        out = t(emb, reg)
        assert all(torch.isfinite(v).all() for v in out.values()), k
        assert torch.equal(out["adapted"], emb), k           # untrained: pass-through, with or without the adapter
    no_lora = DigitalTwin(TwinSpec.from_config(c, lora=False))
    assert no_lora.lora is None and not any(n.startswith("lora.") for n, _ in no_lora.named_parameters())
    no_reg = DigitalTwin(TwinSpec.from_config(c, regime_detector=False)).eval()
    torch.testing.assert_close(no_reg(emb, reg)["regime_probs"], torch.full((4, 4), 0.25))
    torch.testing.assert_close(no_reg(emb, reg)["exp_return"], no_reg(emb, torch.randn(4, 6))["exp_return"])  # regime features unused


def test_ablated_checkpoints_roundtrip_and_old_records_load_as_full(frame, cfg, market, tmp_path):
    cut, cfg = _cut(market), cfg.replace(twins={"max_epochs": 5})
    for k in ABLATIONS:
        spec = TwinSpec.from_config(cfg, **{k: False})
        twin, met = fine_tune("S0001", frame, spec, cfg, cut)
        p = save_twin(twin, tmp_path / k, "S0001", cut, "x" * 64, FH, met)
        back, rec = load_twin(p)
        _eq((back.spec, rec["meta"]["spec"][k]), (spec, False))
        e, r = torch.randn(3, 8), torch.randn(3, 6)
        torch.testing.assert_close(back(e, r)["exp_return"], twin(e, r)["exp_return"])
    # a record written before the switches existed: its spec has none of them, and it loads as a full twin
    twin, met = fine_tune("S0002", frame, TwinSpec.from_config(cfg), cfg, cut)
    p = save_twin(twin, tmp_path / "old", "S0002", cut, "x" * 64, FH, met)
    j = p.with_suffix(".json")
    m = json.loads(j.read_text())
    for k in ABLATIONS: del m["meta"]["spec"][k]
    j.write_text(json.dumps(m))
    back, _ = load_twin(p)
    _eq(back.spec, twin.spec)


def test_twin_forecaster_through_the_harness(market, cfg):
    from stock_twins.evaluation import walk_forward, walk_forward_splits
    from stock_twins.features import compute_features, compute_labels
    from stock_twins.schema import PROB_COLUMNS, VALUE_COLUMNS
    from stock_twins.twin_train import TwinForecaster
    d = market.prices.date.unique()
    prices = market.prices[(market.prices.ticker != "S0004") | (market.prices.date >= d[300])].reset_index(drop=True)  # S0004: late
    c = cfg.replace(twins={"max_epochs": 8})
    fnd = SyntheticFoundation(prices, market.index, c)
    models = TwinForecaster.variants(fnd, ["twin", "twin_no_regime"], n_jobs=1)
    split = walk_forward_splits(d, d[360], d[-1], "monthly", 5, 5)[:1]
    with pytest.warns(UserWarning, match=r"no twin for \['S0004'\].*too little history"):
        wf = walk_forward(models, compute_features(prices, market.index), compute_labels(prices, 5), split, horizon=5, progress=False)
    _eq(fnd.fits, 1)
    tw = wf[wf.model == "twin"]
    late = tw.ticker == "S0004"
    assert late.any() and tw.loc[late, list(VALUE_COLUMNS)].isna().all().all()
    assert tw.loc[~late, list(VALUE_COLUMNS)].notna().all().all()
    assert wf.loc[wf.model == "twin_no_regime", ["regime", *PROB_COLUMNS]].isna().all().all()
    assert wf.loc[wf.model == "twin_no_regime", "exp_return"].notna().any()
    assert (tw.loc[~late, "q10"] <= tw.loc[~late, "q90"]).all() and (tw.loc[~late, "vol"] > 0).all()
    log = models[0].fit_log()
    _eq(sorted(log.status), ["failed", "trained", "trained", "trained"])
    # the same fine-tunes in two worker processes give the same twins (seeded per ticker)
    par = TwinForecaster(SyntheticFoundation(prices, market.index, c), n_jobs=2)
    with pytest.warns(UserWarning, match="S0004"):
        par.fit(_train_panel(prices, market.index, split[0].train_end))
    _eq(sorted(par.twins_), ["S0001", "S0002", "S0003"])
    for t, twin in par.twins_.items():
        for (k, v), w in zip(twin.state_dict().items(), models[0].twins_[t].state_dict().values()):
            torch.testing.assert_close(v, w, atol=1e-5, rtol=1e-4, msg=f"{t} {k}")


def _train_panel(prices, index, end):
    from stock_twins.schema import Panel
    from stock_twins.features import compute_features
    f = compute_features(prices, index)
    f = f[f.date <= end]
    return Panel(f, f.date.min(), end)
