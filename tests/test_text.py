"Text items across process boundaries: the CLI on a DuckDB file, the cut-off rule under random perturbations, and the language-model backend against a real local HTTP server (valid, malformed, slow and failing answers)."
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_eq as _eq

from stock_twins.cli import main
from stock_twins.config import load_config
from stock_twins.data import ingest_prices, load_sample
from stock_twins.store import Store
from stock_twins.text import (LMClient, build_text_features, cutoff_utc, ingest_text, item_ids, item_signals,
                              read_text_features, text_features)

NEWS = Path(__file__).parent / "data" / "handwritten_news.csv"   # hand-written for the tests, not real news


@pytest.fixture(scope="module")
def tail():
    cfg = load_config()
    return cfg, load_sample(cfg).query("date >= '2022-10-01'")


def test_cli_ingest_features_and_bad_input(tmp_path, tail, capsys):
    cfg, prices = tail
    db = tmp_path / "st.duckdb"
    with Store(db) as st: ingest_prices(st, prices, "sample tail", cfg=cfg)
    _eq(main(["--store", str(db), "text", "ingest", "--source", str(NEWS)]), 0)
    _eq(main(["--store", str(db), "text", "ingest", "--source", str(NEWS)]), 0)      # idempotent
    assert "duplicates 20" in capsys.readouterr().out
    _eq(main(["--store", str(db), "text", "features"]), 0)
    out = capsys.readouterr().out
    assert "18 dated, 1 after the last trading day's cut-off" in out, out
    bad = tmp_path / "naive.csv"
    pd.read_csv(NEWS).assign(published="2022-12-27 10:00", headline=lambda d: d.headline + " (new)").to_csv(bad, index=False)
    _eq(main(["--store", str(db), "text", "ingest", "--source", str(bad)]), 2)
    err = capsys.readouterr().err
    assert err.startswith("stock-twins text: error: text: 20 timestamps have no time zone") and "Traceback" not in err, err
    with Store(db, read_only=True) as st:
        _eq(st.count("text_items"), 19)                                          # the refused file wrote nothing
        f = read_text_features(st, "2022-12-28", ["MSFT"], cfg)
        _eq(f[["n_items", "ev_mna"]].values.tolist(), [[1, 1]])


def _random_items(rng, days, n=300):
    tick = rng.choice(["AAPL", "JPM", "XOM", None], n)
    words = np.array("beats misses lawsuit dividend raises cuts record loss strong weak upgrade downgrade merger guidance".split())
    t0 = pd.Timestamp(days[0]) - pd.Timedelta(days=3)
    pub = t0 + pd.to_timedelta(rng.uniform(0, (pd.Timestamp(days[-1]) - t0).total_seconds() + 86400, n), unit="s")
    heads = [" ".join(rng.choice(words, 4)) for _ in range(n)]
    it = pd.DataFrame({"published_utc": pub.round("s"), "ticker": tick, "source": "generated", "headline": heads, "body": None, "url": None})
    return it.assign(item_id=item_ids(it))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_features_at_t_never_see_items_after_ts_cutoff(seed, tail):
    "Generated items (random times, including weekends and around the cut-off): perturbing anything after t's cut-off leaves every feature dated <= t unchanged."
    cfg, prices = tail
    rng = np.random.default_rng(seed)
    cal = pd.DatetimeIndex(prices["date"].unique()).sort_values()[-40:]
    items = _random_items(rng, cal)
    base = text_features(item_signals(items, cal, cfg), cal)
    for t in rng.choice(cal[5:-2], 4, replace=False):
        late = items["published_utc"] > cutoff_utc(t, cfg)
        changed = items.copy()
        changed.loc[late, "headline"] = [h + " terrible awful losses" for h in changed.loc[late, "headline"]]
        changed = pd.concat([changed[~late | (rng.random(len(items)) < 0.5)], _random_items(rng, cal, 50).pipe(
            lambda d: d[d["published_utc"] > cutoff_utc(t, cfg)])], ignore_index=True)
        got = text_features(item_signals(changed, cal, cfg), cal)
        sel = lambda f: f[f["date"] <= t].reset_index(drop=True)
        pd.testing.assert_frame_equal(sel(got), sel(base))
        assert not got[got["date"] > t].reset_index(drop=True).equals(base[base["date"] > t].reset_index(drop=True))


# --- the language-model backend against a local HTTP server --------------------------------------------------------

GOOD = dict(sentiment=-0.4, event_type="litigation", horizon="weeks", confidence=0.7)

class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv.requests.append(dict(body=body, auth=self.headers.get("Authorization"), path=self.path))
        mode = srv.mode
        if mode == "flaky": mode = "fail" if len(srv.requests) == 1 else "valid"
        if mode == "slow": time.sleep(1.0); mode = "valid"
        if mode == "fail": self.send_response(500); self.end_headers(); self.wfile.write(b"boom"); return
        content = json.dumps(GOOD) if mode == "valid" else '{"sentiment": "very bad", "event": "lawsuit"}'
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json"); self.send_header("Content-Length", str(len(out)))
        self.end_headers(); self.wfile.write(out)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.mode, srv.requests = "valid", []
    th = threading.Thread(target=srv.serve_forever, daemon=True); th.start()
    yield srv
    srv.shutdown(); srv.server_close()


def _lm(server, **kw):
    cfg = load_config()
    return cfg.agents.lm.model_copy(update=dict(enabled=True, base_url=f"http://127.0.0.1:{server.server_port}/v1", model="test-model",
                                                api_key_env="ST_TEST_LM_KEY", timeout_s=0.3, retries=2, backoff_s=0.0, **kw))


def test_valid_answer_is_used_and_cached_in_the_store_file(server, tmp_path, monkeypatch):
    monkeypatch.setenv("ST_TEST_LM_KEY", "sk-test-123")
    db = tmp_path / "cache.duckdb"
    with Store(db) as st:
        x = LMClient(_lm(server), st).extract("JPMorgan faces lawsuit over fees")
    _eq((x.source, x.answer.sentiment, x.answer.event_type), ("lm", -0.4, "litigation"))
    r = server.requests[0]
    _eq((r["path"], r["auth"], r["body"]["model"]), ("/v1/chat/completions", "Bearer sk-test-123", "test-model"))
    _eq(r["body"]["response_format"]["json_schema"]["strict"], True)
    with Store(db) as st:                                              # a new process would see the same file
        again = LMClient(_lm(server), st).extract("JPMorgan faces lawsuit over fees")
        other = LMClient(_lm(server).model_copy(update=dict(model="other-model")), st).extract("JPMorgan faces lawsuit over fees")
        _eq(st.count("lm_cache"), 2)
    _eq((again.source, again.answer, other.source, len(server.requests)), ("cache", x.answer, "lm", 2))   # keyed by text and model


@pytest.mark.parametrize("mode, reason, attempts", [("malformed", "does not match the schema", 1),
                                                    ("slow", "timeout after 0.3s (3 attempts)", 3),
                                                    ("fail", "HTTP 500 (3 attempts)", 3)])
def test_failures_fall_back_to_the_offline_answer_and_log_why(server, mode, reason, attempts, caplog):
    server.mode = mode
    st = Store()
    with caplog.at_level(logging.WARNING, logger="stock_twins.text"):
        x = LMClient(_lm(server), st).extract("Exxon raises quarterly dividend")
    _eq((x.source, x.answer.event_type, x.answer.confidence), ("offline", "dividend", 0.0))
    assert reason in x.reason, x.reason
    assert reason in caplog.text and "using the offline extractor" in caplog.text
    _eq(len(server.requests), attempts)
    _eq(st.has("lm_cache"), False)                                     # failures are not cached: a later run asks again


def test_a_retry_recovers_from_one_failure(server):
    server.mode = "flaky"
    x = LMClient(_lm(server)).extract("Exxon raises quarterly dividend")
    _eq((x.source, len(server.requests)), ("lm", 2))


def test_the_endpoint_is_never_called_unless_enabled(server, tail):
    cfg, prices = tail
    st = Store()
    ingest_prices(st, prices, "sample tail", cfg=cfg)
    ingest_text(st, NEWS, cfg)
    off = cfg.replace(agents={"lm": _lm(server).model_copy(update=dict(enabled=False)).model_dump()})
    s = build_text_features(st, off)
    _eq((s["extractors"], len(server.requests)), ({"offline": 19}, 0))
    on = cfg.replace(agents={"lm": _lm(server).model_dump()})
    s = build_text_features(st, on)
    _eq((s["extractors"], len(server.requests)), ({"lm": 18, "offline": 1}, 18))
    _eq(read_text_features(st, "2022-12-27", ["JNJ"], on)[["sent_mean", "ev_litigation"]].values.tolist(), [[-0.4, 1]])
