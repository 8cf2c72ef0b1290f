"Your own data, end to end (issue 11): every dialect, the ambiguous case, mixed sources in one store, unknown tickers, a universe without an index, evaluate on your prices."
import io
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_eq as _eq

from stock_twins.cli import main
from stock_twins.data import EQUAL_WEIGHT, load_sample, validate_prices
from stock_twins.store import Store

DAYS = pd.bdate_range("2021-01-04", periods=60)

def made_up(n: int = len(DAYS), seed: int = 0, start: float = 50.0) -> pd.DataFrame:
    "OHLCV of a random walk: made-up prices for fixture files, not market data."
    rng = np.random.default_rng(seed)
    c = start * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return pd.DataFrame({"Open": c * 0.995, "High": c * 1.01, "Low": c * 0.985, "Close": c, "Adj Close": c * 0.98,
                         "Volume": rng.integers(100_000, 1_000_000, n)})

def cli(*args):
    "Run `stock-twins ARGS` in this process: (exit code, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err): rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()

# ---------------------------------------------------------------- every dialect, written here
def _yahoo(d):
    p = d / "msft.csv"; made_up().assign(Date=DAYS.strftime("%Y-%m-%d"))[["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]].to_csv(p, index=False)
    return p, [], "Yahoo-style export", ["MSFT"], {"open", "high", "low", "close", "adj_close", "volume"}

def _openint(d):
    p = d / "ibm.us.txt"; made_up(seed=1).assign(Date=DAYS.strftime("%Y-%m-%d"), OpenInt=0)[["Date", "Open", "High", "Low", "Close", "Volume", "OpenInt"]].to_csv(p, index=False)
    return p, [], "OHLCV dump with OpenInt", ["IBM"], {"open", "high", "low", "close", "volume"}

def _stooq(d):
    m = made_up(seed=2)
    s = pd.DataFrame({"<TICKER>": "KO.US", "<PER>": "D", "<DATE>": DAYS.strftime("%Y%m%d"), "<TIME>": "000000", "<OPEN>": m.Open,
                      "<HIGH>": m.High, "<LOW>": m.Low, "<CLOSE>": m.Close, "<VOL>": m.Volume, "<OPENINT>": 0})
    p = d / "ko.us.txt"; s.to_csv(p, index=False)
    return p, [], "Stooq-style", ["KO"], {"open", "high", "low", "close", "volume"}

def _lower(d):
    m = made_up(seed=3)
    p = d / "prices_lower.csv"; pd.DataFrame({"date": DAYS.strftime("%Y-%m-%d"), "close": m.Close, "volume": m.Volume}).to_csv(p, index=False)
    return p, ["--ticker", "pep"], "one stock per file (columns close, volume)", ["PEP"], {"close", "volume"}

def _upper_semicolon(d):
    m = made_up(seed=4)
    lines = ["DATE;ADJ CLOSE;VOLUME"] + [f"{t:%d.%m.%Y};{f'{c:.4f}'.replace('.', ',')};{v}" for t, c, v in zip(DAYS, m.Close, m.Volume)]
    p = d / "jnj.csv"; p.write_text("\n".join(lines) + "\n")                     # European: ';', decimal comma, day.month.year
    return p, [], "one stock per file (columns adj_close, volume)", ["JNJ"], {"adj_close", "volume"}

def _long(d):
    a, b = made_up(seed=5), made_up(seed=6)
    long = pd.concat([a.assign(Symbol="AAPL", Date=DAYS), b.assign(Symbol="XOM", Date=DAYS)])[["Date", "Symbol", "Close", "Volume"]]
    p = d / "long.parquet"; long.to_parquet(p)
    return p, [], "long table", ["AAPL", "XOM"], {"close", "volume"}

def _wide(d):
    p = d / "wide.csv"; pd.DataFrame({"Date": DAYS, "AAPL": made_up(seed=7).Close, "XOM": made_up(seed=8).Close}).to_csv(p, index=False)
    return p, [], "wide table", ["AAPL", "XOM"], {"adj_close"}

def _mapped(d):
    p = d / "odd.csv"; pd.DataFrame({"Day": DAYS, "Last": made_up(seed=9).Close, "Code": "CVX", "Exchange": "XNYS"}).to_csv(p, index=False)
    return p, ["--columns", "date=Day,close=Last,ticker=Code"], "long table", ["CVX"], {"close"}

def _folder(d):
    f = d / "per"; f.mkdir()
    made_up(seed=10).assign(Date=DAYS).to_csv(f / "HD.csv", index=False)                                     # Yahoo-style
    made_up(seed=11).drop(columns="Adj Close").assign(Date=DAYS, OpenInt=0).to_csv(f / "wmt.us.txt", index=False)  # OpenInt dump
    return f, [], "Yahoo-style export", ["HD", "WMT"], None

DIALECTS = {"yahoo": _yahoo, "openint": _openint, "stooq": _stooq, "lower case, --ticker": _lower, "upper case, ';', decimal comma": _upper_semicolon,
            "long parquet": _long, "wide": _wide, "--columns mapping": _mapped, "folder of two dialects": _folder}

@pytest.mark.parametrize("case", list(DIALECTS))
def test_every_dialect_is_recognised_and_named(tmp_path, case):
    path, flags, named, tickers, cols = DIALECTS[case](tmp_path)
    rc, out, err = cli("--store", tmp_path / "st.duckdb", "ingest", "--source", path, *flags)
    assert rc == 0, err
    assert named in out, out
    with Store(tmp_path / "st.duckdb", read_only=True) as st:
        p = st.prices()
        _eq(sorted(p.ticker.unique()), tickers)
        _eq(len(p), len(DAYS) * len(tickers))
        if cols is not None:
            have = {c for c in ["open", "high", "low", "close", "adj_close", "volume"] if p[c].notna().all()}
            _eq(have, cols)
    if case in ("openint", "stooq"): assert "dropped columns" in err and ("OpenInt" in err or "<OPENINT>" in err), err
    if case == "--columns mapping": assert "dropped columns ['Exchange']" in err, err

def test_values_survive_decimal_commas_and_day_first_dates(tmp_path):
    path, *_ = _upper_semicolon(tmp_path)
    rc, out, err = cli("--store", tmp_path / "st.duckdb", "ingest", "--source", path)
    assert rc == 0, err
    with Store(tmp_path / "st.duckdb", read_only=True) as st: p = st.prices()
    _eq(list(p.date), list(DAYS))
    np.testing.assert_allclose(p.adj_close, made_up(seed=4).Close.round(4), rtol=1e-12)

# ---------------------------------------------------------------- the ambiguous case
def test_ambiguous_layout_is_a_clear_error_naming_the_flags(tmp_path):
    p = tmp_path / "amb.csv"
    pd.DataFrame({"Date": DAYS, "Close": made_up().Close, "LOW": made_up(seed=1).Close}).to_csv(p, index=False)   # Lowe's, or a low price?
    rc, out, err = cli("--store", tmp_path / "st.duckdb", "ingest", "--source", p)
    _eq(rc, 2)
    assert "ambiguous layout" in err and "--layout single --ticker T" in err and "--layout wide" in err and "Traceback" not in err, err
    with Store(tmp_path / "st.duckdb", read_only=True) as st: _eq(st.has("prices"), False)                   # nothing written
    rc, out, err = cli("--store", tmp_path / "st.duckdb", "ingest", "--source", p, "--layout", "wide", "--value", "close")
    _eq(rc, 0)
    with Store(tmp_path / "st.duckdb", read_only=True) as st: _eq(st.tickers("prices"), ["Close", "LOW"])
    (tmp_path / "dec.csv").write_text("date;close\n2021-01-04;1,234\n2021-01-05;1,250\n")                     # decimal or thousands comma?
    rc, out, err = cli("--store", tmp_path / "st2.duckdb", "ingest", "--source", tmp_path / "dec.csv")
    assert rc == 2 and "--decimal" in err, err

# ---------------------------------------------------------------- mixed sources: exactly the sequence that broke the store
def test_adding_an_ohlcv_stock_to_the_sample_store_breaks_nothing(tmp_path):
    db = tmp_path / "st.duckdb"
    _eq(cli("--store", db, "ingest")[0], 0)                                         # the close-only bundled sample
    with Store(db, read_only=True) as st: before = st.prices(["AAPL", "MSFT"])
    new = made_up(len(DAYS), seed=12).assign(Date=DAYS)
    new.to_csv(tmp_path / "NEWCO.csv", index=False)                                  # one OHLCV stock of the user's
    rc, out, err = cli("--store", db, "ingest", "--source", tmp_path / "NEWCO.csv")
    assert rc == 0 and "not in the configured universe" in err, err
    rc, out, err = cli("--store", db, "features")                                    # used to fail: "missing or non-finite open for AAPL ..."
    assert rc == 0 and "166,320 rows written" in out, out + err
    with Store(db, read_only=True) as st:
        pd.testing.assert_frame_equal(st.prices(["AAPL", "MSFT"]), before)           # the stored stocks are as they were
        validate_prices(st.prices())                                                 # and the store as a whole is valid
        f = st.read("features")
        _eq(f.groupby("ticker").size().min() > 0 and f.ticker.nunique(), 21)
        _eq(f.groupby("ticker").volume_z_20.apply(lambda x: x.notna().any()).sum(), 1)   # only NEWCO has volume
        ts = st.read("ticker_sources").set_index("ticker")
    _eq((ts.loc["NEWCO", "columns"], ts.loc["AAPL", "columns"]), ("open,high,low,close,adj_close,volume", "adj_close"))
    rc, out, err = cli("--store", db, "info")
    assert rc == 0 and "NEWCO" in out and "(unknown)" in out and "open,high,low,close,adj_close,volume" in out, out + err
    # an OpenInt dump has no adjusted price: its returns fall back to close, recorded per ticker and shown by info
    made_up(seed=13).drop(columns="Adj Close").assign(Date=DAYS, OpenInt=0).to_csv(tmp_path / "old.us.txt", index=False)
    rc, out, err = cli("--store", db, "ingest", "--source", tmp_path / "old.us.txt", "--sector", "Utilities")
    assert rc == 0 and "no adjusted close for ['OLD']" in err, err
    rc, out, err = cli("--store", db, "info")
    line = next(l for l in out.splitlines() if l.strip().startswith("OLD"))
    assert "Utilities" in line and "close (no adjusted price in the source)" in line, line
    # overlaying a stored stock with rows of another kind is refused; nothing written
    new.assign(Date=pd.bdate_range("2022-10-03", periods=len(DAYS))).to_csv(tmp_path / "MSFT.csv", index=False)
    rc, out, err = cli("--store", db, "ingest", "--source", tmp_path / "MSFT.csv")
    assert rc == 2 and "a column is either absent for a ticker or complete" in err and "nothing was written" in err, err
    with Store(db, read_only=True) as st: pd.testing.assert_frame_equal(st.prices(["AAPL", "MSFT"]), before)

# ---------------------------------------------------------------- unknown tickers
def test_unknown_ticker_accepted_with_warning_or_given_a_sector(tmp_path):
    db = tmp_path / "st.duckdb"
    made_up().assign(Date=DAYS).to_csv(tmp_path / "ZZZZ.csv", index=False)
    rc, out, err = cli("--store", db, "ingest", "--source", tmp_path / "ZZZZ.csv")
    assert rc == 0 and err.startswith("stock-twins ingest: warning: ") and "['ZZZZ']" in err and "--sector" in err, err
    made_up(seed=1).assign(Date=DAYS).to_csv(tmp_path / "YYYY.csv", index=False)
    rc, out, err = cli("--store", db, "ingest", "--source", tmp_path / "YYYY.csv", "--sector", "Crypto")
    assert rc == 2 and "not one of universe.sectors" in err, err                      # a sector the model does not know
    rc, out, err = cli("--store", db, "ingest", "--source", tmp_path / "YYYY.csv", "--sector", "energy")
    assert rc == 0 and err == "", err
    with Store(db, read_only=True) as st:
        _eq(st.tickers("prices"), ["YYYY", "ZZZZ"])
        sec = st.read("ticker_sectors").set_index("ticker").sector
    _eq((sec["YYYY"], pd.isna(sec["ZZZZ"])), ("Energy", True))
    from stock_twins.config import Config
    from stock_twins.pipeline import job_config
    with Store(db, read_only=True) as st: cfg, info = job_config(Config(), st, build=False)
    _eq((cfg.universe.sector_of("YYYY"), cfg.universe.sector_of("ZZZZ"), info["unsectored"]), ("Energy", None, ["ZZZZ"]))
    c = tmp_path / "c.yaml"; c.write_text("universe:\n  unsectored: [ZZZZ]\n")     # made permanent in the config: no warning
    rc, out, err = cli("--config", c, "--store", db, "ingest", "--source", tmp_path / "ZZZZ.csv")
    assert rc == 0 and "not in the configured universe" not in err, err

# ---------------------------------------------------------------- a universe without an index
def test_user_universe_without_an_index_gets_a_labelled_equal_weight_index(tmp_path):
    db, f = tmp_path / "st.duckdb", tmp_path / "mine"
    f.mkdir()
    for i, t in enumerate(["AAA", "BBB", "CCC"]): made_up(seed=20 + i).assign(Date=DAYS).to_csv(f / f"{t}.csv", index=False)
    _eq(cli("--store", db, "ingest", "--source", f)[0], 0)
    rc, out, err = cli("--store", db, "features")
    assert rc == 0 and "EQUAL_WEIGHT: an equal-weight index of the 3 stocks" in out and "not a market index" in out, out + err
    with Store(db, read_only=True) as st:
        ix = st.read("index_prices")
        f1 = st.read("features")
        src = st.read("sources").set_index("table_name")
    _eq((ix.ticker.unique().tolist(), ix.close.iloc[0], len(ix)), ([EQUAL_WEIGHT], 100.0, len(DAYS)))
    r = made_up(seed=20).assign(Date=DAYS)["Adj Close"]
    rets = pd.concat([made_up(seed=20 + i)["Adj Close"].pct_change() for i in range(3)], axis=1).mean(axis=1)
    np.testing.assert_allclose(ix.close.to_numpy(), 100 * (1 + rets.fillna(0)).cumprod().to_numpy(), rtol=1e-10)
    assert f1.mkt_ret_1.notna().sum() > 0 and "equal-weight index" in src.loc["features", "detail"]
    rc, out, err = cli("--store", db, "info")
    assert "market index: EQUAL_WEIGHT" in out and "features computed with the market index: EQUAL_WEIGHT" in out, out
    # your own index file instead: the features are recomputed with it and say so
    pd.DataFrame({"Date": DAYS, "Close": made_up(seed=30).Close}).to_csv(tmp_path / "myindex.csv", index=False)
    rc, out, err = cli("--store", db, "ingest", "--source", f, "--index", tmp_path / "myindex.csv")
    assert rc == 0 and "market index MYINDEX" in out, out + err
    rc, out, err = cli("--store", db, "features")
    assert rc == 0 and "rows written" in out and "MYINDEX (your index, loaded with --index)" in out, out + err

# ---------------------------------------------------------------- evaluate on your prices
def test_evaluate_on_your_prices_and_a_clear_refusal_when_too_short(tmp_path):
    days = pd.bdate_range("2016-01-01", "2020-12-31")
    f = tmp_path / "mine"; f.mkdir()
    for i, t in enumerate(["AAA", "BBB"]): made_up(len(days), seed=40 + i).assign(Date=days).to_csv(f / f"{t}.csv", index=False)
    rc, out, err = cli("evaluate", "--source", f, "--models", "always_up", "--out", tmp_path / "ev")
    assert rc == 2 and "history too short for the protocol" in err and "--test-start 2018 --test-end 2020" in err, err
    rc, out, err = cli("evaluate", "--source", f, "--models", "always_up,momentum_20", "--test-start", "2019", "--test-end", "2020",
                       "--out", tmp_path / "ev")
    assert rc == 0, err
    pr = pd.read_parquet(tmp_path / "ev" / "predictions.parquet")
    _eq((sorted(pr.ticker.unique()), sorted(pr.date.dt.year.unique())), (["AAA", "BBB"], [2019, 2020]))
    rep = (tmp_path / "ev" / "report.md").read_text()
    assert "your prices from" in rep and "equal-weight index" in rep, rep[:600]

# ---------------------------------------------------------------- the product on your universe
def _run(*args):
    exe = Path(sys.executable).parent / "stock-twins"                              # the installed console script, as a user runs it
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=900)

def test_main_smoke_on_your_stocks_then_one_more_and_predict(tmp_path):
    "`main --smoke --source`: two stocks of yours in two dialects and one sample stock in a third; then the failing sequence: add an OHLCV stock, features, predict."
    ko = load_sample()
    ko = ko[(ko.ticker == "KO") & (ko.date >= "2019-01-01")]                    # one sample stock (adjusted closes only)
    days = pd.DatetimeIndex(ko.date)
    src = tmp_path / "mine"; src.mkdir()
    made_up(len(days), seed=50).assign(Date=days.strftime("%Y-%m-%d"))[["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]] \
        .to_csv(src / "USR1.csv", index=False)                                   # Yahoo-style, four years: a twin
    made_up(300, seed=51).assign(Date=days[-300:].strftime("%Y-%m-%d"), OpenInt=0)[["Date", "Open", "High", "Low", "Close", "Volume", "OpenInt"]] \
        .to_csv(src / "usr2.us.txt", index=False)                                # OpenInt dump, 300 sessions: the fallback
    (src / "ko.csv").write_text("date;close\n" + "".join(f"{d:%Y-%m-%d};{str(c).replace('.', ',')}\n" for d, c in zip(ko.date, ko.adj_close)))
    cfg, db = tmp_path / "c.yaml", tmp_path / "st.duckdb"
    cfg.write_text(f"data:\n  checkpoint_dir: {tmp_path / 'ck'}\nmain:\n  out_dir: {tmp_path / 'reports'}\n")
    r = _run("--config", cfg, "--store", db, "main", "--smoke", "--source", src)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    for s in ("Yahoo-style export", "OHLCV dump with OpenInt", "one stock per file (columns close)", "EQUAL_WEIGHT: an equal-weight index of the 3 stocks",
              "twins for 2 stocks", "the fallback serves them: USR2", "ranked forecasts for the 5 trading days after 2022-12-28"):
        assert s in out, (s, out[-3000:])
    assert "['USR1', 'USR2']" in r.stderr and "unknown-sector id" in r.stderr, r.stderr[-2000:]
    with Store(db, read_only=True) as st:
        _eq(st.tickers("prices"), ["KO", "USR1", "USR2"])                          # the sample was not ingested
        _eq(st.tickers("index_prices"), [EQUAL_WEIGHT])
        pred = st.read("predictions").set_index("ticker")
    _eq(pred.source.replace("prior", "twin").to_dict(), {"KO": "twin", "USR1": "twin", "USR2": "fallback"})   # a twin (its correction or its prior)
    # one more stock of yours, OHLCV, with a sector: features and predict still work for every stock
    made_up(500, seed=52).assign(Date=days[-500:]).to_csv(tmp_path / "NEWCO.csv", index=False)
    r = _run("--config", cfg, "--store", db, "ingest", "--source", tmp_path / "NEWCO.csv", "--sector", "Energy")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = _run("--config", cfg, "--store", db, "features")
    assert r.returncode == 0 and "EQUAL_WEIGHT: an equal-weight index of the 4 stocks" in r.stdout, r.stdout + r.stderr
    r = _run("--config", cfg, "--store", db, "predict", "--smoke")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    with Store(db, read_only=True) as st: pred = st.read("predictions").set_index("ticker")
    _eq(sorted(pred.index), ["KO", "NEWCO", "USR1", "USR2"])
    _eq(pred.loc["NEWCO", "source"], "fallback")                                 # a twin comes with the next main/retrain
    assert np.isfinite(pred[["exp_return", "hit_prob", "vol"]].to_numpy()).all()
