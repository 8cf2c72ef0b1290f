"""The Feast repository on the bundled real sample: `stock-twins feast apply` and `feast materialize`, point-in-time
features through Feast equal to the store's, and the API answering a date without a stored prediction from the online
store (in-process and in a real uvicorn process)."""
import io
from contextlib import redirect_stdout
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from fastcore.test import test_close as _close
from fastcore.test import test_eq as _eq

from _serve_fixtures import api_process, predictions
from stock_twins import featurestore
from stock_twins.cli import main
from stock_twins.config import Config, save_config
from stock_twins.data import ingest_prices, load_sample, load_sample_index
from stock_twins.schema import emb_columns
from stock_twins.store import Store, publish_snapshot

D_PRED, D_ONLINE = pd.Timestamp("2022-12-23"), pd.Timestamp("2022-12-27")
TICKERS = ["AAPL", "MSFT", "JPM", "KO", "XOM", "GE", "LLY", "RRC"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    "A store with the bundled sample's prices, features and labels, generated embeddings, predictions stored for one day only; Feast applied and materialised to D_ONLINE."
    tmp = tmp_path_factory.mktemp("feast")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)                                                            # every default path (checkpoints, ...) lands in tmp
        yield _build(tmp)


def _build(tmp):
    cfg = Config().replace(data={"store": str(tmp / "st.duckdb"), "checkpoint_dir": str(tmp / "data" / "checkpoints")},
                           main={"fallback_years": 2.0, "fallback_rounds": 20},
                           serve={"snapshot_dir": str(tmp / "snap"), "feast_dir": str(tmp / "repo")})
    path = save_config(cfg, tmp / "config.yaml")
    p, ix = load_sample(cfg), load_sample_index(cfg)                             # 8 of the sample's stocks since 2012 (real data)
    with Store(cfg.data.store) as st:
        ingest_prices(st, p[p.ticker.isin(TICKERS) & (p.date >= "2012-01-01")], "bundled sample, 8 stocks", cfg=cfg)
        ingest_prices(st, ix[ix.date >= "2012-01-01"], "bundled sample index", table="index_prices")
    with redirect_stdout(io.StringIO()): _eq(main(["--config", str(path), "features"]), 0)
    with Store(cfg.data.store) as st:
        rows = st.read("features", ["AAPL", "MSFT", "JPM", "LLY"], start="2022-11-01", columns=[])[["date", "ticker"]]
        rng = np.random.default_rng(0)                                            # generated embeddings (plumbing only)
        st.upsert("embeddings", rows.assign(**{c: rng.normal(size=len(rows)) for c in emb_columns(8)}, foundation_hash="f" * 64))
        st.upsert("predictions", predictions(days=(f"{D_PRED:%Y-%m-%d}",)))
        publish_snapshot(st, cfg.serve.snapshot_dir, ["predictions"])
        from stock_twins.pipeline import ensure_fallback
        ensure_fallback(cfg, st, D_PRED)                                          # saved under <checkpoint_dir>/fallback
    out = io.StringIO()
    with redirect_stdout(out):
        _eq(main(["--config", str(path), "feast", "apply"]), 0)
        _eq(main(["--config", str(path), "feast", "materialize", "--end", f"{D_ONLINE:%Y-%m-%d}"]), 0)
    return cfg, path, out.getvalue()


def test_apply_and_materialize_from_the_cli(repo):
    cfg, _, out = repo
    assert "features (27 features), embeddings (9 features)" in out, out
    assert "features, embeddings: rows dated 2022-12-17 .. 2022-12-27" in out, out
    d = Path(cfg.serve.feast_dir)
    _eq(sorted(p.name for p in d.iterdir()), ["data", "feature_store.yaml", "online.db", "registry.db", "repo.py"])
    _eq(sorted(p.name for p in (d / "data").iterdir()), ["embeddings.parquet", "features.parquet"])
    with Store(cfg.data.store, read_only=True) as st:
        ref = st.read("features", dates=[D_ONLINE]).set_index("ticker")
    on = featurestore.online(cfg, ["AAPL", "XOM", "NOPE"])
    _eq(on["date"].tolist()[:2], [D_ONLINE, D_ONLINE])
    _eq(on["date"].isna().tolist(), [False, False, True])
    for c in ("ret_1", "vol_20", "beta_60", "rsi_14"):
        _close(on.set_index("ticker").loc[["AAPL", "XOM"], c].to_numpy(), ref.loc[["AAPL", "XOM"], c].to_numpy(), eps=1e-12)
    e = featurestore.online(cfg, ["MSFT"], view="embeddings")
    _eq((e["foundation_hash"].iloc[0], e["date"].iloc[0]), ("f" * 64, D_ONLINE))


def test_point_in_time_through_feast_equals_the_store(repo):
    "Random (date, ticker) rows, weekends included: Feast's point-in-time join returns exactly the store's as-of rows."
    cfg, _, _ = repo
    rng = np.random.default_rng(1)
    dates = pd.to_datetime(rng.choice(pd.date_range("2019-01-01", "2022-12-31").to_numpy(), 200))   # weekends and holidays too
    rows = pd.DataFrame({"date": dates, "ticker": rng.choice(["AAPL", "GE", "RRC", "KO", "ZZZ"], 200)})
    rows = pd.concat([rows, rows.iloc[:5]], ignore_index=True)                   # repeated requests come back once each
    with Store(cfg.data.store, read_only=True) as st:
        via_store = featurestore.point_in_time(rows, st, cfg)
        via_feast = featurestore.point_in_time(rows, st, cfg.replace(serve={"feast": True}))
        exact = st.read("features", ["AAPL", "GE", "RRC", "KO"], start="2019-01-01")
    pd.testing.assert_frame_equal(via_store, via_feast)
    _eq(len(via_feast), len(rows))
    on_day = rows.merge(exact[["date", "ticker"]], on=["date", "ticker"]).drop_duplicates()
    assert len(on_day) > 50
    m = via_feast.drop_duplicates(["date", "ticker"]).merge(exact, on=["date", "ticker"], suffixes=("", "_store"))
    _close(m["ret_20"].to_numpy(), m["ret_20_store"].to_numpy(), eps=1e-12)        # on trading days: that very row
    _eq(via_feast.loc[rows.ticker == "ZZZ", "ret_1"].isna().all(), True)


def _expected(cfg, day):
    "What the on-demand path must return: the saved fallback on the store's own features of `day`."
    from stock_twins.api import fallback_candidates
    from stock_twins.fallback import LightGBMFallback
    (cut, where), = fallback_candidates(cfg)
    _eq(cut, D_PRED)
    fb = LightGBMFallback.load(where)
    with Store(cfg.data.store, read_only=True) as st: f = st.read("features", dates=[day])
    return fb.predict_latest(f, ["AAPL"], day).iloc[0]


def test_the_api_answers_a_date_without_a_stored_prediction_from_the_online_store(repo):
    cfg, path, _ = repo
    from stock_twins.api import create_app
    c = TestClient(create_app(cfg.replace(serve={"feast": True}), token=""))
    _eq(c.get("/health").json()["on_demand"], True)
    stored = c.get("/predictions/AAPL", params={"date": f"{D_PRED:%Y-%m-%d}"}).json()
    _eq(stored["origin"], "stored")
    p = c.get("/predictions/AAPL", params={"date": f"{D_ONLINE:%Y-%m-%d}"}).json()
    want = _expected(cfg, D_ONLINE)
    _eq((p["origin"], p["source"], p["model"], p["date"], p["regime"], p["rank"]), ("on_demand", "fallback", "fallback", "2022-12-27", None, None))
    for k in ("exp_return", "hit_prob", "vol", "q10", "q50", "q90"): _close(p[k], want[k], eps=1e-9)
    _close(p["priority"], want["exp_return"] * want["hit_prob"] / (1 + want["vol"] * np.sqrt(5 / 252)), eps=1e-12)   # portfolio.priority_score
    r = c.get("/predictions/AAPL", params={"date": "2022-12-28"})
    _eq(r.status_code, 404)
    assert "online store holds AAPL's features of 2022-12-27, not 2022-12-28" in r.json()["detail"], r.json()
    r = c.get("/predictions/AAPL", params={"date": "2022-12-20"})
    assert "no saved fallback with a cutoff on or before 2022-12-20" in r.json()["detail"], r.json()
    _eq(c.get("/predictions/AAPL/regime", params={"date": "2022-12-27"}).json()["origin"], "on_demand")
    feast_cfg = save_config(cfg.replace(serve={"feast": True}), Path(path).with_name("feast.yaml"))
    with api_process(feast_cfg, timeout=90) as url:                              # the same through a real server
        q = httpx.get(url + "/predictions/AAPL", params={"date": "2022-12-27"}, timeout=30).json()
        _eq(q["origin"], "on_demand")
        _close(q["exp_return"], want["exp_return"], eps=1e-9)


def test_fallback_trains_on_features_read_through_feast(repo, tmp_path):
    "With `serve.feast` on, the fallback's training set is read through Feast's offline store (re-exported first): the same model as from the store."
    cfg, _, _ = repo
    from stock_twins.checkpoint import read_record
    from stock_twins.pipeline import ensure_fallback
    with Store(cfg.data.store, read_only=True) as st:
        _, a, _ = ensure_fallback(cfg.replace(data={"checkpoint_dir": str(tmp_path / "a")}), st, D_PRED, force=True)
        _, b, _ = ensure_fallback(cfg.replace(data={"checkpoint_dir": str(tmp_path / "b")}, serve={"feast": True}), st, D_PRED, force=True)
    _eq(read_record(b)["sha256"], read_record(a)["sha256"])                         # identical features, identical trees
