"Paper trading across processes: the ledger on disk, idempotence, days out of order, and crash recovery (a real process killed between the fill and order writes, and inside the order transaction)."
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from fastcore.test import test_close as _close, test_eq as _eq

from stock_twins.cli import main
from stock_twins.config import Config
from stock_twins.data import ingest_prices, load_sample, load_sample_index
from stock_twins.paper import LEDGER_TABLES, ledger_days, store_forecasts
from stock_twins.schema import prediction_frame
from stock_twins.store import Store

DAYS = pd.to_datetime(["2022-12-12", "2022-12-13", "2022-12-14", "2022-12-15", "2022-12-16"])   # one real week of the sample


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    "A store with the bundled sample and forecasts (random, labelled 'demo') for one week; its config file."
    d = tmp_path_factory.mktemp("paper_base")
    cfg = Config().replace(data={"store": str(d / "st.duckdb"), "checkpoint_dir": str(d / "ck")}, portfolio={"paper_dir": str(d / "paper"),
                                                                                                   "rebalance_days": 1})   # orders every day
    with Store(cfg.data.store) as st:
        ingest_prices(st, load_sample(cfg), "bundled sample", cfg=cfg)
        ingest_prices(st, load_sample_index(cfg), "bundled index", table="index_prices")
        rows = pd.DataFrame([(dd, t) for dd in DAYS for t in st.tickers("prices")], columns=["date", "ticker"])
        rng = np.random.default_rng(1)
        fc = prediction_frame(rows, "demo", exp_return=rng.normal(0.002, 0.01, len(rows)), hit_prob=rng.uniform(0.4, 0.6, len(rows)),
                              vol=rng.uniform(0.15, 0.5, len(rows)))
        store_forecasts(st, fc, "demo")
    return d, cfg


@pytest.fixture
def env(base, tmp_path):
    "A private copy of the base store and a config file pointing at it."
    d, cfg = base
    shutil.copy(cfg.data.store, tmp_path / "st.duckdb")
    c = cfg.replace(data={"store": str(tmp_path / "st.duckdb")}, portfolio={"paper_dir": str(tmp_path / "paper")})
    f = tmp_path / "config.yaml"
    f.write_text(yaml.safe_dump(c.model_dump()))
    return c, str(f)


def _ledger(path):
    with Store(path, read_only=True) as st:
        return {t: st.read(t).drop(columns=["at", "created"], errors="ignore") for t in LEDGER_TABLES if st.has(t)}


def _run(cfgfile, day, pause=None, capsys=None):
    "`stock-twins paper run` (in this process; with `pause`, in a subprocess killed with SIGKILL once it reaches that point)."
    if pause is None:
        _eq(main(["--config", cfgfile, "paper", "run", "--date", f"{day:%Y-%m-%d}", "--rule", "priority"]), 0)
        return capsys.readouterr().out if capsys else ""
    e = dict(os.environ)
    if pause: e["STOCK_TWINS_PAPER_PAUSE"] = pause
    p = subprocess.Popen([sys.executable, "-c", "import sys; from stock_twins.cli import main; sys.exit(main(sys.argv[1:]))",
                          "--config", cfgfile, "paper", "run", "--date", f"{day:%Y-%m-%d}", "--rule", "priority"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
    t0 = time.time()
    line = p.stdout.readline()
    while line and f"paused at {pause}" not in line and time.time() - t0 < 120: line = p.stdout.readline()
    assert f"paused at {pause}" in line, p.stderr.read()
    p.kill(); p.wait(timeout=30)
    assert p.returncode == -9


def test_a_week_idempotent_and_in_order(env, capsys):
    cfg, f = env
    for d in DAYS[:3]: _eq(main(["--config", f, "paper", "run", "--date", f"{d:%Y-%m-%d}", "--rule", "priority"]), 0)
    before = _ledger(cfg.data.store)
    _eq(main(["--config", f, "paper", "run", "--date", f"{DAYS[1]:%Y-%m-%d}"]), 0)             # rerun a done day
    assert "already done: nothing changed" in capsys.readouterr().out
    after = _ledger(cfg.data.store)
    for t in before: _eq(after[t], before[t])
    _eq(main(["--config", f, "paper", "run", "--date", "2022-12-09"]), 2)                        # before the ledger's last day
    _eq(main(["--config", f, "paper", "run", "--date", f"{DAYS[4]:%Y-%m-%d}"]), 2)               # skips 2022-12-15
    err = capsys.readouterr().err.strip().splitlines()
    _eq(len(err), 2)
    assert "before the ledger's last day 2022-12-14" in err[0] and "skips 2022-12-15" in err[1] and err[1].startswith("stock-twins paper: error:")
    for t in before: _eq(_ledger(cfg.data.store)[t], before[t])
    acc = after["paper_account"]
    _close((acc.cash + acc.invested).to_numpy(), acc.nav.to_numpy(), eps=1e-6)
    fills = after["paper_fills"]
    _close(fills.cost.sum(), fills.notional.abs().sum() * cfg.portfolio.cost_bps / 1e4, eps=1e-6)
    _eq(main(["--config", f, "paper", "report"]), 0)
    rep = os.path.join(cfg.portfolio.paper_dir, "report_2022-12-14.md")
    assert os.path.exists(rep) and "## Orders for the next session" in open(rep).read()


@pytest.mark.parametrize("point", ["after_fills", "in_orders"])
def test_crash_between_fills_and_orders_is_completed_by_the_next_run(env, tmp_path, point, capsys):
    cfg, f = env
    for d in DAYS[:2]: _run(f, d)
    ref = tmp_path / "ref.duckdb"; shutil.copy(cfg.data.store, ref)
    refcfg = tmp_path / "ref.yaml"; refcfg.write_text(open(f).read().replace(cfg.data.store, str(ref)))
    _run(str(refcfg), DAYS[2])                                                                   # the uninterrupted day
    _run(f, DAYS[2], pause=point)                                                                # killed part-way
    led = _ledger(cfg.data.store)
    with Store(cfg.data.store, read_only=True) as st: _eq(ledger_days(st).set_index("date").loc[DAYS[2], "status"], "filled")
    _eq(int((led["paper_orders"].date == DAYS[2]).sum()), 0)                                    # no half-written orders
    _eq(int((led["paper_fills"].date == DAYS[2]).sum()) > 0, True)                              # the committed fills are there
    capsys.readouterr()
    out = _run(f, DAYS[2], capsys=capsys)                                                        # the next run completes the day
    assert "resumed: orders written" in out
    got, want = _ledger(cfg.data.store), _ledger(str(ref))
    for t in want: _eq(got[t], want[t])
    _run(f, DAYS[3])                                                                             # and the ledger goes on


def test_buys_never_overdraw_the_cash_of_an_unlevered_book(env):
    "Orders are sized at one close and filled at the next: an unlevered long-only book cuts its buys to the cash at hand (sells first)."
    c, f = env
    for day in DAYS: _run(f, day)
    with Store(c.data.store, read_only=True) as st: acct = st.read("paper_account")
    assert (acct["cash"] >= -1e-6).all(), acct[["date", "cash"]]
    assert (acct.sort_values("date")["fills"].iloc[1:] > 0).all()                 # it traded every day (rebalance_days 1)
