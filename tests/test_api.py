"""The HTTP API (stock_twins.api) through FastAPI's TestClient and through a real uvicorn process: every endpoint, the
errors (401, 404, 422, 503, never a traceback), no heavy import on the serving path, and a writer that rewrites the store
and publishes snapshots while the API serves."""
import json
import subprocess
import sys
import textwrap
import threading
import time
from datetime import date
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from fastcore.test import test_close as _close
from fastcore.test import test_eq as _eq

from _serve_fixtures import CLI, DAYS, TICKERS, api_process, predictions, serving_tree
from stock_twins.api import create_app, get_catalog
from stock_twins.config import REGIMES
from stock_twins.store import Store, publish_snapshot


@pytest.fixture
def tree(tmp_path):
    return serving_tree(tmp_path)


@pytest.fixture
def client(tree):
    cfg, _ = tree
    return TestClient(create_app(cfg, token=""))


def test_every_endpoint_answers(client):
    h = client.get("/health").json()
    _eq((h["status"], h["snapshot"]["predictions_layout"], h["snapshot"]["latest_prediction_date"]), ("ok", "stored_predictions", "2022-12-28"))
    _eq((h["checkpoints"]["foundation"]["count"], h["checkpoints"]["twin"]["count"], h["auth"], h["on_demand"]), (1, 3, False, False))
    assert 0 <= h["checkpoints"]["twin"]["age_hours"] < 1 and h["snapshot"]["age_seconds"] >= 0
    tw = client.get("/models/twins").json()
    _eq(sorted(t["ticker"] for t in tw["twins"]), ["AAPL", "JPM", "MSFT"])
    aapl = next(t for t in tw["twins"] if t["ticker"] == "AAPL")
    _eq((aapl["serving"]["cutoff"], aapl["selected_by"], aapl["checkpoints"], aapl["serving"]["deployed"]), ("2022-12-21", "manifest", 2, True))
    d = client.get("/models/twins/AAPL").json()
    _eq(([c["cutoff"] for c in d["checkpoints"]], d["decisions"][-1]["action"], d["pilot"]), (["2022-12-21", "2022-12-28"], "refuse", True))
    _eq(client.get("/models/twins/MSFT").json()["serving"]["metrics"], {"val_loss": 0.95, "val_loss_init": 1.0})
    ref = predictions().assign(date=lambda x: x.date.dt.strftime("%Y-%m-%d")).set_index(["date", "ticker"])
    p = client.get("/predictions/JPM").json()
    _eq((p["date"], p["origin"], p["source"], p["model"]), ("2022-12-28", "stored", "twin", "twin"))
    _close(p["exp_return"], ref.loc[("2022-12-28", "JPM"), "exp_return"])
    p = client.get("/predictions/jpm", params={"date": "2022-12-23"}).json()
    _eq((p["date"], p["rank"]), ("2022-12-23", int(ref.loc[("2022-12-23", "JPM"), "rank"])))
    r = client.get("/predictions/LLY/regime", params={"date": "2022-12-27"}).json()
    row = ref.loc[("2022-12-27", "LLY")]
    _eq((r["regime"], r["name"], r["source"], r["horizon_days"]), (int(row.regime), REGIMES[int(row.regime)], "fallback", 5))
    _close(r["probabilities"]["Volatile"], row.p_volatile)
    t = client.get("/predictions").json()
    _eq((t["date"], t["count"], [x["rank"] for x in t["rows"]]), ("2022-12-28", 4, [1, 2, 3, 4]))
    _eq([x["ticker"] for x in t["rows"]], ref.xs("2022-12-28").sort_values("rank").index.tolist())
    _eq(client.get("/predictions", params={"date": "2022-12-27", "limit": 2}).json()["count"], 4)
    _eq(len(client.get("/predictions", params={"date": "2022-12-27", "limit": 2}).json()["rows"]), 2)


def test_errors_are_clear_json_never_a_traceback(tree):
    cfg, _ = tree
    app = create_app(cfg, token="")
    c = TestClient(app)
    for url, params, code, text in [
        ("/predictions/ZZZZ", None, 404, "unknown ticker 'ZZZZ'"),
        ("/models/twins/ZZZZ", None, 404, "unknown ticker"),
        ("/models/twins/LLY", None, 404, "not a pilot stock"),
        ("/models/twins/KO", None, 404, "no readable twin checkpoint"),
        ("/predictions/AAPL", {"date": "2022-12-26"}, 404, "no stored prediction for AAPL on 2022-12-26"),
        ("/predictions/KO", None, 404, "no stored prediction for KO"),
        ("/predictions", {"date": "2021-01-04"}, 404, "stored dates 2022-12-23 .. 2022-12-28"),
        ("/portfolio/latest", None, 404, "the portfolio (50_portfolio) layer writes it"),
        ("/explanations/AAPL", None, 404, "the agents (60_agents) layer writes it"),
    ]:
        r = c.get(url, params=params)
        _eq((url, r.status_code), (url, code))
        assert text in r.json()["detail"], (url, r.json())
    for bad in ("2022-13-01", "yesterday", "2022-02-30"):
        r = c.get("/predictions/AAPL", params={"date": bad})
        _eq(r.status_code, 422)
        _eq(r.json()["detail"][0]["loc"], ["query", "date"])
    _eq(c.get("/predictions", params={"limit": 0}).status_code, 422)
    app.dependency_overrides[get_catalog] = lambda: {}["boom"]                 # any unexpected failure inside an endpoint
    r = TestClient(app, raise_server_exceptions=False).get("/models/twins")
    _eq(r.status_code, 500)
    assert "internal error (reference" in r.json()["detail"] and "Traceback" not in r.text and "boom" not in r.text


def test_token(tree):
    cfg, _ = tree
    c = TestClient(create_app(cfg, token="s3cret"))
    for url in ("/health", "/models/twins", "/predictions", "/predictions/AAPL", "/portfolio/latest"):
        _eq((url, c.get(url).status_code), (url, 401))
        _eq(c.get(url, headers={"Authorization": "Basic s3cret"}).status_code, 401)
    _eq(c.get("/predictions/AAPL", headers={"Authorization": "Bearer s3cret"}).status_code, 200)
    _eq(c.get("/docs").status_code, 200)                                       # the OpenAPI page itself shows no data


def test_openapi_declares_the_response_models(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"Prediction", "PredictionTable", "RegimeForecast", "TwinList", "TwinDetail", "Health", "TableRows"} <= set(schemas)
    ok = lambda path: spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    _eq([ok(p) for p in ("/health", "/models/twins", "/models/twins/{ticker}", "/predictions/{ticker}", "/predictions/{ticker}/regime", "/predictions")],
        ["Health", "TwinList", "TwinDetail", "Prediction", "RegimeForecast", "PredictionTable"])


def test_layers_above_once_written(tmp_path):
    "Portfolio and explanation tables (whatever their columns) are served once a snapshot holds them."
    cfg, _ = serving_tree(tmp_path)
    with Store(cfg.data.store) as st:
        st.upsert("portfolio", pd.DataFrame({"date": pd.to_datetime(["2022-12-27", "2022-12-28", "2022-12-28"]), "ticker": ["AAPL", "AAPL", "JPM"],
                                             "weight": [1.0, 0.6, 0.4]}))
        st.upsert("explanations", pd.DataFrame({"date": pd.to_datetime(["2022-12-28"]), "ticker": ["AAPL"], "text": ["momentum and low vol"]}))
        publish_snapshot(st, cfg.serve.snapshot_dir, cfg.serve.snapshot_tables)
    c = TestClient(create_app(cfg, token=""))
    p = c.get("/portfolio/latest").json()
    _eq((p["date"], p["count"], sorted(r["weight"] for r in p["rows"])), ("2022-12-28", 2, [0.4, 0.6]))
    e = c.get("/explanations/AAPL").json()
    _eq((e["date"], e["rows"][0]["text"]), ("2022-12-28", "momentum and low vol"))
    _eq(c.get("/explanations/JPM").status_code, 404)


def test_nothing_published_is_503_and_legacy_predictions_are_flagged(tmp_path):
    cfg, _ = serving_tree(tmp_path)
    empty = TestClient(create_app(cfg.replace(serve={"snapshot_dir": str(tmp_path / "none")}), token=""))
    _eq((empty.get("/health").status_code, empty.get("/health").json()["status"]), (503, "unavailable"))
    r = empty.get("/predictions/AAPL")
    _eq((r.status_code, r.headers.get("retry-after")), (503, "60"))
    legacy = pd.DataFrame({"rank": [1, 2], "date": pd.to_datetime(["2022-12-28"] * 2), "ticker": ["AAPL", "MSFT"], "priority": [0.001, 0.0],
                           "exp_return": [0.01, 0.0], "hit_prob": [0.55, 0.5], "vol": [0.3, 0.2], "q10": [-0.02, -0.03], "q50": [0.01, 0.0],
                           "q90": [0.04, 0.03], "regime": ["Volatile", "Choppy"], "regime_prob": [0.4, 0.5], "source": ["twin", "twin"],
                           "created": pd.Timestamp("2022-12-28")})
    with Store(tmp_path / "old.duckdb") as st:
        st.upsert("predictions", legacy)
        publish_snapshot(st, tmp_path / "oldsnap", ["predictions"])
    c = TestClient(create_app(cfg.replace(serve={"snapshot_dir": str(tmp_path / "oldsnap")}), token=""))
    p = c.get("/predictions/AAPL").json()
    _eq((p["regime"], p["regime_name"], p["layout"], p["p_volatile"], p["model"]), (3, "Volatile", "legacy", None, None))
    h = c.get("/health").json()
    assert any("layout before" in n for n in h["notes"]), h


def test_the_api_imports_nothing_heavy(tree):
    cfg, path = tree
    code = textwrap.dedent(f"""
        import sys
        from stock_twins.config import load_config
        import stock_twins.api as api
        from fastapi.testclient import TestClient
        c = TestClient(api.create_app(load_config({str(path)!r})))
        assert c.get('/predictions/AAPL').status_code == 200 and c.get('/models/twins').status_code == 200
        print(sorted({{m.split('.')[0] for m in sys.modules}} & {{'torch', 'lightning', 'pytorch_lightning', 'pytorch_forecasting',
                                                              'torch_geometric', 'feast', 'lightgbm', 'stable_baselines3', 'ray'}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    _eq(out, "[]")


def test_real_uvicorn_process(tree):
    cfg, path = tree
    with api_process(path) as url:
        with httpx.Client(base_url=url, timeout=10) as c:
            _eq(c.get("/health").json()["status"], "ok")
            _eq(c.get("/predictions/MSFT").json()["date"], "2022-12-28")
            _eq(c.get("/predictions/MSFT/regime").status_code, 200)
            _eq(c.get("/models/twins").json()["count"], 3)
            _eq(c.get("/predictions", params={"date": "bad"}).status_code, 422)
            _eq(c.get("/predictions/NOPE").status_code, 404)
            _eq(c.get("/docs").status_code, 200)
    with api_process(path, env={cfg.serve.token_env: "tok"}) as url:
        _eq(httpx.get(url + "/predictions/MSFT").status_code, 401)
        _eq(httpx.get(url + "/predictions/MSFT", headers={"Authorization": "Bearer tok"}).status_code, 200)


def test_serve_publishes_a_fresh_snapshot_when_the_store_is_newer(tmp_path):
    cfg, path = serving_tree(tmp_path)
    time.sleep(1.1)
    with Store(cfg.data.store) as st: st.upsert("predictions", predictions(days=("2022-12-29",)))
    with api_process(path, args=()) as url:
        _eq(httpx.get(url + "/predictions/AAPL").json()["date"], "2022-12-29")


WRITER = """
import sys, time
import numpy as np, pandas as pd
sys.path.insert(0, {tests!r})
from _serve_fixtures import predictions
from stock_twins.store import Store, publish_snapshot
days = pd.bdate_range("2023-01-02", periods={n}).strftime("%Y-%m-%d")
t0 = time.time()
with Store({store!r}) as st:                                    # read-write: the API must not hold the file
    print("open", time.time() - t0, flush=True)
    for i, d in enumerate(days):
        big = pd.DataFrame({{"date": pd.Timestamp(d), "ticker": [f"X{{k}}" for k in range(20000)], "x": np.random.rand(20000)}})
        with st.transaction():                                   # a long write: a bulky table and the day's predictions together
            st.upsert("bulk", big.assign(date=pd.Timestamp(d) + pd.to_timedelta(np.arange(20000) % 7, "D")).drop_duplicates(["date", "ticker"]))
            st.upsert("predictions", predictions(days=(d,), seed=i + 1))
        publish_snapshot(st, {snap!r}, ["predictions"])
        time.sleep(0.2)
print("done", time.time() - t0, flush=True)
"""


def test_a_writer_rewrites_the_store_while_the_api_serves(tmp_path):
    "A process holds the store read-write and publishes snapshot after snapshot while the API serves: no error, no mixed or corrupt answer."
    cfg, path = serving_tree(tmp_path)
    n = 8
    code = WRITER.format(tests=str(Path(__file__).parent), n=n, store=cfg.data.store, snap=cfg.serve.snapshot_dir)
    with api_process(path) as url, httpx.Client(base_url=url, timeout=10) as c:
        w = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        answers, errors = [], []
        while w.poll() is None or len(answers) < 20:
            for u in ("/predictions", "/predictions/AAPL", "/health"):
                r = c.get(u)
                if r.status_code != 200: errors.append((u, r.status_code, r.text[:200]))
                else: answers.append((u, r.json()))
        out, err = w.communicate(timeout=120)
        _eq((w.returncode, err[-500:] if w.returncode else ""), (0, ""))                 # the writer was never blocked
        assert out.startswith("open") and "done" in out, out
        _eq(errors, [])
        for u, a in answers:
            if u == "/predictions":                                                   # one snapshot per answer: a whole, ranked day
                _eq((a["count"], sorted(r["rank"] for r in a["rows"]), {r["date"] for r in a["rows"]}), (4, [1, 2, 3, 4], {a["date"]}))
        seen = {a["date"] for u, a in answers if u == "/predictions"}
        assert len(seen) >= 2, f"the API never switched snapshots while the writer published: {seen}"
        last = pd.bdate_range("2023-01-02", periods=n)[-1].strftime("%Y-%m-%d")
        _eq(c.get("/predictions").json()["date"], last)                              # the newest publication is served
    with Store(cfg.data.store, read_only=True) as st:                                # and the file is whole
        _eq((st.count("predictions"), st.dates("predictions")[-1].strftime("%Y-%m-%d")), ((len(DAYS) + n) * len(TICKERS), last))
        _eq(st.count("bulk") > 0, True)
