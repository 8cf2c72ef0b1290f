"Options layer across boundaries: the CLI on a DuckDB file, bad chain files, all-or-nothing loads, options and plain twins in one store."
import numpy as np
import pandas as pd
import pytest
import torch
from fastcore.test import test_eq as _eq

from stock_twins.cli import main
from stock_twins.config import Config
from stock_twins.data import ingest_prices
from stock_twins.options import (build_options_features, generate_chains, ingest_chains, options_features_frame, options_tickers,
                                 read_chains, write_chains)
from stock_twins.priors import PRIOR_COLUMNS
from stock_twins.regime import REGIME_FEATURES
from stock_twins.schema import OPTIONS_FEATURES, PROB_COLUMNS, emb_columns
from stock_twins.simulate import simulate_market
from stock_twins.store import Store
from stock_twins.testing import synthetic_embeddings
from stock_twins.twin import TwinSpec
from stock_twins.twin_data import load_twin_frame
from stock_twins.twin_train import fine_tune


@pytest.fixture(scope="module")
def market():
    m = simulate_market(3, 200, n_sectors=1, seed=21)
    return m, m.config(Config())


@pytest.fixture()
def store_file(tmp_path, market):
    m, cfg = market
    path = tmp_path / "st.duckdb"
    with Store(path) as st: ingest_prices(st, m.prices, "simulated", cfg=cfg)
    cfg_file = tmp_path / "config.yaml"
    from stock_twins.config import save_config
    save_config(cfg.replace(data={"store": str(path)}), cfg_file)
    return path, cfg_file


def _run(cfg_file, *args):
    return main(["--config", str(cfg_file), *args])


def test_cli_generate_ingest_features(store_file, tmp_path, capsys):
    path, cfg = store_file
    _eq(_run(cfg, "options", "features"), 2)
    assert "no option chains in the store" in capsys.readouterr().err
    out = tmp_path / "chains_GENERATED.parquet"
    _eq(_run(cfg, "options", "generate", "--out", str(out), "--days", "120", "--tickers", "S0001,S0002"), 0)
    _eq(_run(cfg, "options", "ingest", "--source", str(out)), 0)
    _eq(_run(cfg, "options", "ingest", "--source", str(out)), 0)                 # idempotent
    _eq(_run(cfg, "options", "features"), 0)
    txt = capsys.readouterr().out
    assert "GENERATED" in txt and "rows: 2 tickers on 120 dates" in txt, txt
    with Store(path, read_only=True) as st:
        _eq(st.count("options_chains"), len(read_chains(out)))
        f = st.read("options_features")
        _eq(f["generated"].all(), True)
        _eq(set(OPTIONS_FEATURES) <= set(f.columns), True)
        late = f[f.date >= f.date.unique()[40]]                                  # past the trailing windows' warm-up
        assert np.isfinite(late[list(OPTIONS_FEATURES)].to_numpy(float)).all()
    _eq(_run(cfg, "options", "generate", "--out", str(tmp_path / "chains.csv")), 2)
    assert "put 'GENERATED' in the file name" in capsys.readouterr().err


def _good(market, ticker="S0001", day_index=150):
    m, cfg = market
    d = pd.Timestamp(m.prices.date.unique()[day_index])
    return pd.DataFrame({"date": d, "ticker": ticker, "expiry": d + pd.Timedelta(days=30), "strike": [90.0, 90.0, 110.0, 110.0],
                         "type": ["C", "P", "C", "P"], "bid": [12.0, 0.5, 1.0, 9.0], "ask": [12.5, 0.6, 1.1, 9.5],
                         "last": [12.2, np.nan, 1.05, 9.1], "volume": [5, 0, 3, 2], "open_interest": [50, 40, 30, 20]})


BAD = {"crossed quote (bid > ask)": dict(bid=(2, 2.0)),
       "negative or non-finite bid": dict(bid=(0, -1.0)),
       "negative or non-finite open_interest": dict(open_interest=(1, -5)),
       "negative or non-finite volume": dict(volume=(3, np.inf)),
       "expiry before the quote date": dict(expiry=(0, pd.Timestamp("2000-01-03"))),
       "strike <= 0": dict(strike=(0, -90.0)),
       "duplicate contracts": dict(strike=(2, 90.0), type=(2, "C")),
       "the underlying has no price that day": dict(date=(3, pd.Timestamp("2031-01-06")), expiry=(3, pd.Timestamp("2031-02-21")))}


@pytest.mark.parametrize("what", list(BAD))
def test_cli_refuses_bad_chains_and_writes_nothing(what, market, store_file, tmp_path, capsys):
    path, cfg = store_file
    _eq(_run(cfg, "options", "ingest", "--source", str(_write(tmp_path / "ok.csv", _good(market)))), 0)
    bad = _good(market).astype(object)
    for c, (i, v) in BAD[what].items(): bad.loc[i, c] = v
    bad["strike"] = bad["strike"] + 1                                            # new contracts, so a partial write would show
    _eq(_run(cfg, "options", "ingest", "--source", str(_write(tmp_path / "bad.csv", bad))), 2)
    err = capsys.readouterr().err.strip()
    assert err.startswith("stock-twins options: error:") and what in err and "S0001" in err and "strike" in err and "\n" not in err, err
    with Store(path, read_only=True) as st: _eq(st.count("options_chains"), 4)


def _write(p, df):
    df.to_csv(p, index=False, date_format="%Y-%m-%d")
    return p


def test_unknown_underlying_and_interrupted_load(market, tmp_path, monkeypatch):
    m, cfg = market
    with Store(tmp_path / "s.duckdb") as st:
        ingest_prices(st, m.prices, "simulated", cfg=cfg)
        with pytest.raises(ValueError, match="no price for the underlying in the store for ZZZ"): ingest_chains(st, _good(market, "ZZZ"), "x")
        orig = Store.upsert
        def boom(self, table, df, key=("date", "ticker"), **kw):
            if table == "sources": raise RuntimeError("disk full")
            return orig(self, table, df, key, **kw)
        monkeypatch.setattr(Store, "upsert", boom)                             # fails after the chains were written
        with pytest.raises(RuntimeError, match="disk full"): ingest_chains(st, _good(market), "x")
        monkeypatch.undo()
        assert not st.has("options_chains") or st.count("options_chains") == 0


def test_options_and_plain_twins_side_by_side_in_one_store(tmp_path):
    m = simulate_market(4, 260, n_sectors=2, seed=8)
    cfg = m.config(Config()).replace(foundation={"embed_dim": 8}, twins={"max_epochs": 5})
    with Store(tmp_path / "s.duckdb") as st:
        ingest_prices(st, m.prices, "simulated", cfg=cfg); ingest_prices(st, m.index, "simulated", table="index_prices")
        p = write_chains(generate_chains(m.prices[m.prices.ticker.isin(["S0001", "S0003"])], seed=1, cfg=cfg), tmp_path / "c_GENERATED.csv.gz")
        ingest_chains(st, read_chains(p), str(p))
        build_options_features(st, cfg)
        st.upsert("embeddings", synthetic_embeddings(m.prices, m.index, dim=8))
        _eq(options_tickers(st), ["S0001", "S0003"])
        _eq(sorted(options_features_frame(st, ["S0002", "S0003"]).ticker.unique()), ["S0003"])
        cut = pd.Timestamp(m.prices.date.unique()[-6])
        rows = []
        for tk in ["S0001", "S0002", "S0003", "S0004"]:
            opt = tk in options_tickers(st)
            data = load_twin_frame(st, cfg, [tk], cut - pd.DateOffset(months=7), cut, options=opt)
            twin, met = fine_tune(tk, data, TwinSpec.from_config(cfg, options=opt), cfg, cut)
            r = data[data.date == cut]
            f = lambda cols: torch.as_tensor(r[list(cols)].to_numpy(np.float32))
            with torch.no_grad(): o = twin(f(emb_columns(8)), f(REGIME_FEATURES), f(PRIOR_COLUMNS), f(OPTIONS_FEATURES) if opt else None)
            rows.append((tk, twin.spec.options, float(o["hit_prob"][0])))
        _eq([r[:2] for r in rows], [("S0001", True), ("S0002", False), ("S0003", True), ("S0004", False)])
        assert all(0 < r[2] < 1 for r in rows)

def test_retrain_all_and_the_manager_serve_options_and_plain_twins(tmp_path):
    "With twins.options: stocks with chains get options twins, the others plain twins; the manager serves each with its own inputs, and the fallback an options twin whose day has no options features."
    from stock_twins.manager import TwinManager
    from stock_twins.schema import prediction_frame
    from stock_twins.twin_train import retrain_all
    m = simulate_market(4, 300, n_sectors=2, seed=8)
    cfg = m.config(Config()).replace(foundation={"embed_dim": 8}, data={"checkpoint_dir": str(tmp_path / "ck")},
                                     twins={"max_epochs": 5, "window_months": 4, "options": True})
    with Store(tmp_path / "s.duckdb") as st:
        ingest_prices(st, m.prices, "simulated", cfg=cfg); ingest_prices(st, m.index, "simulated", table="index_prices")
        days = m.prices.date.unique()
        p = write_chains(generate_chains(m.prices[m.prices.ticker.isin(["S0001", "S0003"]) & (m.prices.date < days[-3])], seed=1, cfg=cfg),
                         tmp_path / "c_GENERATED.csv.gz")                       # no chains on the last 3 days
        ingest_chains(st, read_chains(p), str(p))
        build_options_features(st, cfg)
        st.upsert("embeddings", synthetic_embeddings(m.prices, m.index, dim=8))
        cut, fh = pd.Timestamp(days[-10]), "f" * 64
        s = retrain_all(cfg, st, cut, foundation_hash=fh, progress=False)
        _eq(s.status.tolist(), ["trained"] * 4)
        _eq(dict(zip(s.ticker, s.options)), {"S0001": True, "S0002": False, "S0003": True, "S0004": False})
        _eq(retrain_all(cfg, st, cut, foundation_hash=fh, progress=False).options.tolist(), s.options.tolist())   # skipped: read from the records
        class Const:                                                             # a stand-in fallback
            def predict(self, tickers, date):
                n = len(tickers)
                return prediction_frame(pd.DataFrame({"date": pd.Timestamp(date), "ticker": list(tickers)}), "fallback", exp_return=np.zeros(n),
                                        hit_prob=np.full(n, .5), vol=np.full(n, .2), q10=np.full(n, -.05), q50=np.zeros(n), q90=np.full(n, .05),
                                        **{c: np.full(n, .25) for c in PROB_COLUMNS})
        mgr = TwinManager(cfg, st, foundation_hash=fh, fallback=Const())
        out = mgr.predict(["S0001", "S0002", "S0003", "S0004"], days[-5])
        _eq(out.model.tolist(), ["twin+options", "twin", "twin+options", "twin"])
        assert set(out.source) <= {"twin", "prior"} and np.isfinite(out.exp_return).all()
        late = mgr.predict(["S0001", "S0002"], days[-1])                          # S0001's chains stop 3 days before
        _eq(late.source.iloc[0], "fallback"); _eq(late.model.tolist(), ["fallback", "twin"])
        with pytest.raises(ValueError, match=r"options twins of \['S0001'\] have no options features"):
            TwinManager(cfg, st, foundation_hash=fh).predict(["S0001"], days[-1])
        plain = retrain_all(cfg.replace(twins={"options": False}), st, cut, foundation_hash=fh, progress=False)
        assert not plain.options.any()                                           # options off: every stock a plain twin (its own config hash)


def test_cli_options_twins_from_chains_to_predict(tmp_path, capsys):
    "The README's path: the main job, chains ingested and featured, `twins.options: true`, then `retrain` and `predict` serve options twins."
    from stock_twins.data import load_sample, load_sample_index
    s, ix = load_sample(), load_sample_index()
    s[s.ticker.isin(["AAPL", "MSFT", "KO", "GE"]) & (s.date >= "2020-06-01")].to_parquet(tmp_path / "p.parquet")
    ix[ix.date >= "2020-06-01"].to_parquet(tmp_path / "idx.parquet")
    cfg = tmp_path / "c.yaml"
    base = (f"data:\n  checkpoint_dir: {tmp_path}/ck\nmain:\n  out_dir: {tmp_path}/reports\n  tiny: true\n  epochs: 1\n  train_years: 0.5\n"
            f"  embed_days: 150\n  fallback_years: 2.0\n  fallback_rounds: 10\nserve:\n  snapshot_dir: {tmp_path}/snap\n"
            f"agents:\n  report_dir: {tmp_path}/daily\ntwins:\n  window_months: 3\n  max_epochs: 5\n")
    cfg.write_text(base)
    run = lambda *a: main(["--config", str(cfg), "--store", str(tmp_path / "st.duckdb"), *map(str, a)])
    _eq(run("main", "--source", tmp_path / "p.parquet", "--index", tmp_path / "idx.parquet"), 0)
    _eq(run("options", "generate", "--out", tmp_path / "ch_GENERATED.csv.gz", "--tickers", "AAPL,KO", "--days", 150), 0)
    _eq(run("options", "ingest", "--source", tmp_path / "ch_GENERATED.csv.gz"), 0)
    _eq(run("options", "features"), 0)
    cfg.write_text(base + "  options: true\n")
    capsys.readouterr()
    _eq(run("retrain"), 0)
    out = capsys.readouterr().out
    rows = {l.split()[0]: l.split()[2] for l in out.splitlines() if l.split()[:1] in (["AAPL"], ["MSFT"], ["KO"])}
    _eq(rows, {"AAPL": "True", "MSFT": "False", "KO": "True"})
    _eq(run("predict"), 0)
    with Store(tmp_path / "st.duckdb", read_only=True) as st: p = st.read("predictions").set_index("ticker")
    _eq(p.loc[["AAPL", "KO", "MSFT", "GE"], "model"].tolist(), ["twin+options", "twin+options", "twin", "fallback"])
