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
from stock_twins.priors import PRIOR_COLUMNS
from stock_twins.twin import ROUTED, DigitalTwin, TwinSpec
from stock_twins.twin_data import twin_frame
from stock_twins.twin_train import (fine_tune, fine_tune_many, list_twins, load_twin, retrain_all, save_twin, twin_config_hash,
                                    twin_stem)

FH = "c0ffee" * 10 + "abcd"  # a foundation hash (64 hex digits); the embeddings below are SYNTHETIC


@pytest.fixture(scope="module")
def market():
    return simulate_market(4, 400, n_sectors=2, seed=11)


@pytest.fixture(scope="module")
def cfg(market, tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    return market.config(Config(), n_pilot=3).replace(
        twins={"max_epochs": 25, "lora_rank": 2, "stock_dim": 4, "regime_dim": 4, "hidden": 8, "window_months": 6},
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


def _prior(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn(n, generator=g) * 0.02, torch.rand(n, generator=g) * 0.6 + 0.2,
                        torch.rand(n, generator=g) * 0.5 + 0.1, torch.randint(-1, 4, (n,), generator=g).float()], -1)


def test_untrained_twin_equals_its_prior():
    torch.manual_seed(0)
    for spec in (TwinSpec(), TwinSpec(lora=False), TwinSpec(regime_detector=False), TwinSpec(stock_embedding=False)):
        twin = DigitalTwin(spec).eval()
        emb, pr = torch.randn(7, 128), _prior(7)
        out = twin(emb, torch.randn(7, len(REGIME_FEATURES)), pr)
        assert torch.equal(out["adapted"], emb)
        assert torch.equal(out["exp_return"], pr[:, 0]) and torch.equal(out["vol"], pr[:, 2])
        torch.testing.assert_close(out["hit_prob"], pr[:, 1], atol=1e-6, rtol=0)
        sd = pr[:, 2] * (5 / 252) ** 0.5
        torch.testing.assert_close(out["quantiles"], torch.stack([pr[:, 0] - 1.2815515655 * sd, pr[:, 0], pr[:, 0] + 1.2815515655 * sd], -1))
        now = pr[:, 3].long()
        known = now >= 0
        _eq(out["regime_probs"].argmax(-1)[known].tolist(), now[known].tolist())   # the untrained transition prior is persistence
    with torch.no_grad():
        twin.lora.up.weight.add_(0.01)
        twin.ret_head.bias.add_(0.5)
    o = twin(emb, torch.zeros(7, 6), pr)
    assert not torch.equal(o["adapted"], emb) and not torch.equal(o["exp_return"], pr[:, 0])


def test_vol_forecast_moves_with_its_prior():
    "A (randomly) trained twin's vol is its prior times a bounded factor that does not depend on the prior."
    torch.manual_seed(3)
    twin = DigitalTwin(TwinSpec.tiny()).eval()
    for p in twin.parameters(): torch.nn.init.normal_(p, std=0.5)
    emb, reg, pr = torch.randn(9, 8), torch.randn(9, 6), _prior(9, 1)
    v = twin(emb, reg, pr)["vol"]
    for k in (0.5, 3.0, 10.0):                     # a regime shift: the prior triples, the forecast triples the same day
        q = pr.clone(); q[:, 2] *= k
        torch.testing.assert_close(twin(emb, reg, q)["vol"], k * v)
    assert ((v / pr[:, 2]).log().abs() <= TwinSpec.tiny().vol_bound + 1e-6).all()


def test_untrained_fine_tune_serves_the_prior(frame, cfg, market):
    twin, met = fine_tune("S0001", frame, TwinSpec.from_config(cfg), cfg, _cut(market), train=False)
    _eq(met["route"], dict.fromkeys(ROUTED, False))
    _eq(repr(twin).endswith("twin serves none)"), True)


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
    emb, reg, pr = torch.randn(12, 8), torch.randn(12, 6), _prior(12)
    opt = torch.randn(12, 40) if options else None
    a, b = TwinStack.of(twins)(emb, reg, pr, opt), loop_forward(twins, emb, reg, pr, opt)
    for k in b:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    assert a["exp_return"].std() > 0


def test_fine_tune_never_ends_worse_than_its_prior(frame, cfg, market):
    twin, met = fine_tune("S0001", frame, TwinSpec.from_config(cfg), cfg, _cut(market))
    assert met["val_loss"] <= met["val_loss_init"], met
    assert pd.Timestamp(met["last_label_date"]) <= _cut(market)
    for k in ROUTED:                                           # served only where it beat the prior on the calibration tail
        _eq(met["route"][k], met["cal_twin"][k] < met["cal_prior"][k] - 1e-9)


def test_batched_fine_tuning_equals_one_by_one(frame, cfg, market):
    "All twins in one vmapped loop = each twin alone (same seed, own early stopping), to float tolerance."
    c = cfg.replace(twins={"max_epochs": 30, "patience": 4, "min_cal_rows": 1})   # own-rows calibration: independent of the batch
    spec, cut, names = TwinSpec.from_config(c), _cut(market), ["S0001", "S0002", "S0003", "S0004"]
    many, met, failed = fine_tune_many(names, frame, spec, c, cut)
    _eq(failed, {})
    for t in names:
        one, m1 = fine_tune(t, frame, spec, c, cut)
        _eq((m1["epochs"], m1["best_epoch"], m1["route"]), (met[t]["epochs"], met[t]["best_epoch"], met[t]["route"]))
        for (k, v), w in zip(one.state_dict().items(), many[t].state_dict().values()):
            torch.testing.assert_close(v, w, atol=1e-5, rtol=1e-4, msg=f"{t} {k}")
    assert len({met[t]["epochs"] for t in names}) > 1                          # per-stock early stopping really differs


def test_too_little_history(frame, cfg, market):
    early = pd.Timestamp(market.prices.date.unique()[40])
    _fail(lambda: fine_tune("S0002", frame, TwinSpec.from_config(cfg), cfg, early), contains="S0002: too little history")
    with pytest.raises(ValueError) as e:
        fine_tune("S0002", frame, TwinSpec.from_config(cfg), cfg, early)
    # rows found vs needed: none yet has a history prior (63 five-day windows) and a label known by the cutoff
    assert "0 rows with inputs, priors and labels" in str(e.value) and "need 60" in str(e.value), e.value
    later = pd.Timestamp(market.prices.date.unique()[100])
    with pytest.raises(ValueError) as e:
        fine_tune("S0002", frame, TwinSpec.from_config(cfg), cfg, later)
    n = int(str(e.value).split(": ")[2].split(" rows")[0])
    assert 0 < n < 60 and "need 60" in str(e.value), e.value


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


def test_retrain_all_batched_and_resumable(store, cfg, market):
    cut = _cut(market, 380)
    s1 = retrain_all(cfg, store, cut, foundation_hash=FH, progress=False)  # pilots S0001..S0003, one batch
    _eq(s1.ticker.tolist(), ["S0001", "S0002", "S0003"])
    _eq(s1.status.tolist(), ["trained"] * 3)
    assert (s1.val_loss <= s1.val_loss_init).all()
    s2 = retrain_all(cfg, store, cut, foundation_hash=FH, progress=False)
    _eq(s2.status.tolist(), ["skipped"] * 3)
    _eq(s2.val_loss.tolist(), s1.val_loss.tolist())
    # each saved twin is its own artefact; its weights equal the same fine-tune alone (seeded per ticker), calibration aside
    fr = twin_frame(store.read("embeddings", ["S0002"]), store.prices(["S0002"]), market.index, cfg)
    fr = fr[fr.date <= cut]
    twin, _ = fine_tune("S0002", fr, TwinSpec.from_config(cfg), cfg, cut)
    saved, rec = load_twin(s1.path.iloc[1], twin_config_hash(cfg), FH)
    _eq(rec["subject"], "S0002")
    for (k, v), w in zip(twin.state_dict().items(), saved.state_dict().values()):
        if k not in ("platt", "q_margin"): torch.testing.assert_close(v, w, atol=1e-5, rtol=1e-4, msg=k)


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
    src = ["twin" if mgr.twin(t, day).route.any() else "prior" for t in ("S0003", "S0001")]
    _eq(pred.source.tolist(), ["fallback", *src])
    assert set(pred.source) <= {"twin", "prior", "fallback"}
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
    e, r, o, pr = torch.randn(3, 8), torch.randn(3, 6), torch.randn(3, 40), _prior(3)
    torch.testing.assert_close(back(e, r, pr, o)["hit_prob"], twin(e, r, pr, o)["hit_prob"])
    _fail(lambda: back(e, r, pr), contains="no options features were passed")
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
    emb, reg, pr = torch.randn(4, 128), torch.randn(4, 6), _prior(4)
    for k in ABLATIONS:
        t = DigitalTwin(TwinSpec.from_config(c, **{k: False})).eval()
        assert t.n_params < full.n_params, k
        out = t(emb, reg, pr)
        assert all(torch.isfinite(v).all() for v in out.values()), k
        assert torch.equal(out["adapted"], emb), k           # untrained: pass-through, with or without the adapter
    no_lora = DigitalTwin(TwinSpec.from_config(c, lora=False))
    assert no_lora.lora is None and not any(n.startswith("lora.") for n, _ in no_lora.named_parameters())
    no_reg = DigitalTwin(TwinSpec.from_config(c, regime_detector=False)).eval()
    torch.testing.assert_close(no_reg(emb, reg, pr)["regime_logits"], no_reg(emb, reg, pr)["prior_regime_logits"])   # the regime prior
    torch.testing.assert_close(no_reg(emb, reg, pr)["exp_return"], no_reg(emb, torch.randn(4, 6), pr)["exp_return"])  # regime features unused


def test_ablated_checkpoints_roundtrip_and_old_records_load_as_full(frame, cfg, market, tmp_path):
    cut, cfg = _cut(market), cfg.replace(twins={"max_epochs": 5})
    for k in ABLATIONS:
        spec = TwinSpec.from_config(cfg, **{k: False})
        twin, met = fine_tune("S0001", frame, spec, cfg, cut)
        p = save_twin(twin, tmp_path / k, "S0001", cut, "x" * 64, FH, met)
        back, rec = load_twin(p)
        _eq((back.spec, rec["meta"]["spec"][k]), (spec, False))
        e, r, pr = torch.randn(3, 8), torch.randn(3, 6), _prior(3)
        torch.testing.assert_close(back(e, r, pr)["exp_return"], twin(e, r, pr)["exp_return"])
    # a record written before the switches existed: its spec has none of them, and it loads as a full twin
    twin, met = fine_tune("S0002", frame, TwinSpec.from_config(cfg), cfg, cut)
    p = save_twin(twin, tmp_path / "old", "S0002", cut, "x" * 64, FH, met)
    j = p.with_suffix(".json")
    m = json.loads(j.read_text())
    for k in ABLATIONS: del m["meta"]["spec"][k]
    j.write_text(json.dumps(m))
    back, _ = load_twin(p)
    _eq(back.spec, twin.spec)


def test_twin_forecaster_weekly_through_the_harness(market, cfg):
    from stock_twins.evaluation import walk_forward, walk_forward_splits
    from stock_twins.features import compute_features, compute_labels
    from stock_twins.schema import VALUE_COLUMNS
    from stock_twins.twin_train import TwinForecaster
    d = market.prices.date.unique()
    prices = market.prices[(market.prices.ticker != "S0004") | (market.prices.date >= d[300])].reset_index(drop=True)  # S0004: late
    c = cfg.replace(twins={"max_epochs": 8})
    fnd = SyntheticFoundation(prices, market.index, c)
    models = TwinForecaster.variants(fnd, ["twin", "twin_prior", "twin_no_regime"])
    split = walk_forward_splits(d, d[360], d[-1], "monthly", 5, 5)[:1]
    with pytest.warns(UserWarning, match=r"no twin for \['S0004'\].*too little history"):
        wf = walk_forward(models, compute_features(prices, market.index), compute_labels(prices, 5), split, horizon=5, progress=False)
    _eq(fnd.fits, 1)
    tw = wf[wf.model == "twin"]
    late = tw.ticker == "S0004"
    assert late.any() and tw.loc[late, list(VALUE_COLUMNS)].isna().all().all()
    assert tw.loc[~late, list(VALUE_COLUMNS)].notna().all().all()
    assert (tw.loc[~late, "q10"] <= tw.loc[~late, "q90"]).all() and (tw.loc[~late, "vol"] > 0).all()
    log = models[0].fit_log()
    weeks = pd.DatetimeIndex(tw.date.unique()).to_period("W-FRI").nunique()
    _eq(log.cutoff.nunique(), weeks + 1)                        # one fine-tune per week + the in-sample one at the split's end
    assert (models[1].fit_log().dropna(subset=["serves"]).serves == "").all()   # the priors variant serves its priors


def _train_panel(prices, index, end):
    from stock_twins.schema import Panel
    from stock_twins.features import compute_features
    f = compute_features(prices, index)
    f = f[f.date <= end]
    return Panel(f, f.date.min(), end)


def test_periodic_foundation_refits_on_its_schedule(monkeypatch, market):
    "The harness's foundation is refit every few years (or on fixed dates), never trained past a split's end."
    from types import SimpleNamespace
    import stock_twins.pretrain as P
    from stock_twins.evaluation import periodic_foundation
    from stock_twins.schema import Panel
    calls = []
    def fake_pretrain(prices, index, cfg, train_end=None, **kw):
        calls.append(pd.Timestamp(train_end))
        return SimpleNamespace(meta=dict(train_end=f"{pd.Timestamp(train_end):%Y-%m-%d}"), spec=SimpleNamespace(embed_dim=8)), None
    monkeypatch.setattr(P, "pretrain", fake_pretrain)
    feats = market.prices[["date", "ticker"]]
    ends = [pd.Timestamp(f"2015-{m:02d}-27") for m in (3, 5, 7, 9, 11)] + [pd.Timestamp("2016-01-27"), pd.Timestamp("2016-03-28")]
    f = periodic_foundation(market.prices, market.index, Config(), every_years=0.5)
    for e in ends: f.fit(Panel(feats[feats.date <= e], feats.date.min(), e))
    _eq(calls, [ends[0], ends[3], ends[6]])                               # every half year from the first split
    calls.clear()
    g = periodic_foundation(market.prices, market.index, Config(), refit_dates=[ends[0], ends[2]])
    for e in ends[1:4]: g.fit(Panel(feats[feats.date <= e], feats.date.min(), e))   # a run resumed at the second split
    _eq(calls, [ends[0], ends[2]])                                        # refits where the whole run would have
