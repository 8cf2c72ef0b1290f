"""The weekly retraining schedule (stock_twins.schedule) driven by a fake clock: a Sunday 02:00 firing, a skipped
overlapping firing, a refused deploy; the lock across processes; a failed run resumed; the cron/systemd lines; and
(slow) the real retraining while the API serves."""
import io
import json
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pandas as pd
import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES
from fastapi.testclient import TestClient
from fastcore.test import test_eq as _eq

from _serve_fixtures import api_process, serving_tree
from stock_twins.checkpoint import artifact_stem, json_hash, read_manifest, save_artifact
from stock_twins.cli import main
from stock_twins.config import Config, save_config
from stock_twins.schedule import FakeClock, Schedule, run_lock

NY = ZoneInfo("America/New_York")


def _cfg(tmp_path) -> Config:
    return Config().replace(data={"store": str(tmp_path / "st.duckdb"), "checkpoint_dir": str(tmp_path / "ck")},
                            serve={"schedule_dir": str(tmp_path / "sched"), "schedule_log": str(tmp_path / "logs" / "schedule.log"),
                                   "snapshot_dir": str(tmp_path / "snap")})


def _twin(root, ticker, cutoff, val_loss, val_loss_init=1.0) -> dict:
    "A generated twin checkpoint (3 zeros) and its summary row as the retraining returns it."
    s = artifact_stem(root, "twin", cutoff, json_hash([ticker, cutoff, val_loss]), ticker)
    save_artifact(s, {"w": pd.Series([0.0, 0.0, 0.0]).to_numpy()}, kind="twin", cutoff=cutoff, config_hash="c" * 64, subject=ticker,
                  framework="np", meta={"metrics": {"val_loss": val_loss, "val_loss_init": val_loss_init}})
    return dict(ticker=ticker, status="trained", reason="", val_loss=val_loss, val_loss_init=val_loss_init, path=str(s), cutoff=pd.Timestamp(cutoff))


def test_sunday_firing_skipped_overlap_and_refused_deploy(tmp_path):
    cfg = _cfg(tmp_path)
    clock = FakeClock(datetime(2024, 5, 31, 18, 0, tzinfo=NY))                    # a Friday evening
    weeks = iter([[("AAPL", 0.90), ("MSFT", 0.95)], [("AAPL", 0.99), ("MSFT", 0.94)]])
    started, release, calls = threading.Event(), threading.Event(), []

    def job(cfg, cutoff):                                                        # stands in for retrain_job
        calls.append(clock())
        started.set()
        release.wait(20)
        cut = f"{calls[-1] - pd.Timedelta(days=2):%Y-%m-%d}"                    # the Friday before the firing
        return pd.DataFrame([_twin(cfg.data.checkpoint_dir, t, cut, v) for t, v in next(weeks)])

    skipped, finished = threading.Event(), threading.Event()
    with clock.patch_apscheduler():
        sch = Schedule(cfg, job, clock=clock)
        s = sch.scheduler(background=True)
        s.add_listener(lambda ev: skipped.set(), EVENT_JOB_MAX_INSTANCES)
        s.add_listener(lambda ev: finished.set(), EVENT_JOB_EXECUTED)
        s.start()
        try:
            _eq(s.get_job("retrain").next_run_time, datetime(2024, 6, 2, 2, 0, tzinfo=NY))
            clock.set(datetime(2024, 6, 2, 1, 59, 59, tzinfo=NY)); s.wakeup(); time.sleep(0.3)
            _eq(calls, [])
            clock.set(datetime(2024, 6, 2, 2, 0, tzinfo=NY)); s.wakeup()         # Sunday 02:00 New York
            assert started.wait(10), "no firing on Sunday 02:00"
            _eq(calls, [datetime(2024, 6, 2, 2, 0, tzinfo=NY)])
            clock.set(datetime(2024, 6, 9, 2, 0, 5, tzinfo=NY)); s.wakeup()      # a week later, the first run still working
            assert skipped.wait(10), "the overlapping firing was not skipped"
            _eq(len(calls), 1)
            started.clear(); release.set()
            assert finished.wait(10), "the first run did not finish"
            finished.clear()
            _eq(sch.state()["last"]["status"], "ok")
            clock.set(datetime(2024, 6, 16, 2, 0, tzinfo=NY)); s.wakeup()        # the next Sunday: AAPL's new twin is worse
            assert started.wait(10), "no firing on the third Sunday"
            assert finished.wait(10), "the third Sunday's run did not finish"
            _eq(sch.state()["last"]["scheduled_for"], "2024-06-16T02:00:00-04:00")
        finally:
            release.set(); s.shutdown(wait=True)
    _eq([c.strftime("%a %H:%M %Z") for c in calls], ["Sun 02:00 EDT", "Sun 02:00 EDT"])
    man = read_manifest(cfg.data.checkpoint_dir, "twin")
    _eq((man["entries"]["AAPL"]["cutoff"], man["entries"]["MSFT"]["cutoff"]), ("2024-05-31", "2024-06-14"))   # AAPL: the old twin serves
    refused = [h for h in man["history"] if h["action"] == "refuse"]
    _eq([(h["subject"], round(h["new"], 2), round(h["serving"], 2)) for h in refused], [("AAPL", 0.99, 0.9)])
    log = sch.log_path.read_text()
    for line in ("firing at 2024-06-02T02:00:00-04:00", "firing of 2024-06-09T02:00:00-04:00 skipped: the previous run is still running",
                 "firing at 2024-06-16T02:00:00-04:00", "AAPL: refuse: val_skill 0.9900 is worse than the serving 0.9000 by more than 5%"):
        assert line in log, f"{line!r} not in the log:\n{log}"
    reports = sorted((Path(cfg.serve.schedule_dir) / "reports").glob("*_ok.json"))
    _eq(len(reports), 2)
    last = json.loads(reports[-1].read_text())
    _eq({g["ticker"]: g["action"] for g in last["gate"]}, {"AAPL": "refuse", "MSFT": "deploy"})
    from stock_twins.api import create_app                                      # the API shows which twin serves and why
    d = TestClient(create_app(cfg, token="")).get("/models/twins/AAPL").json()
    _eq((d["serving"]["cutoff"], d["selected_by"], d["decisions"][-1]["action"]), ("2024-05-31", "manifest", "refuse"))


HOLD = "import sys, time; from stock_twins.schedule import run_lock\nwith run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(30)"


def test_a_run_while_another_process_holds_the_lock_is_skipped(tmp_path):
    cfg = _cfg(tmp_path)
    path = save_config(cfg, tmp_path / "c.yaml")
    h = subprocess.Popen([sys.executable, "-c", HOLD, str(Path(cfg.serve.schedule_dir) / "run.lock")], stdout=subprocess.PIPE, text=True)
    try:
        _eq(h.stdout.readline().strip(), "held")
        out = io.StringIO()
        with redirect_stdout(out): _eq(main(["--config", str(path), "schedule", "--run-now"]), 0)
        assert "run skipped: another run holds" in out.getvalue() and f'"pid": {h.pid}' in out.getvalue(), out.getvalue()
    finally:
        h.kill(); h.wait()
    assert "run skipped" in Path(cfg.serve.schedule_log).read_text()
    with run_lock(Path(cfg.serve.schedule_dir) / "run.lock"): pass                # the dead holder's lock is gone with it


def test_a_failed_run_is_reported_and_resumed(tmp_path):
    cfg = _cfg(tmp_path)
    path = save_config(cfg, tmp_path / "c.yaml")
    out = io.StringIO()
    with redirect_stdout(out): _eq(main(["--config", str(path), "schedule", "--run-now", "--cutoff", "2022-12-23"]), 1)   # empty store
    assert "run failed" in out.getvalue() and "no prices in" in out.getvalue(), out.getvalue()
    sch = Schedule(cfg, lambda cfg, cutoff: pd.DataFrame([_twin(cfg.data.checkpoint_dir, "AAPL", cutoff, 0.9)]))
    _eq(sch.state()["running"]["cutoff"], "2022-12-23")
    assert "did not finish (ValueError: no prices in" in sch.catch_up()[1]
    r = sch.run_once()                                                           # resumes with the interrupted cutoff
    _eq((r["status"], str(r["cutoff"])[:10], sch.state()["running"]), ("ok", "2022-12-23", None))


def test_print_cron_and_systemd(tmp_path):
    path = save_config(_cfg(tmp_path), tmp_path / "c.yaml")
    for kind, want in (("cron", "CRON_TZ=America/New_York\n0 2 * * sun cd "), ("systemd", "OnCalendar=Sun *-*-* 02:00:00 America/New_York")):
        out = io.StringIO()
        with redirect_stdout(out): _eq(main(["--config", str(path), "schedule", "--print", kind]), 0)
        assert want in out.getvalue() and "schedule --run-now" in out.getvalue(), out.getvalue()
    bad = save_config(_cfg(tmp_path).replace(serve={"schedule_cron": "*/10 * * * *"}), tmp_path / "b.yaml")
    err = io.StringIO()
    with redirect_stderr(err): _eq(main(["--config", str(bad), "schedule", "--print", "systemd"]), 2)
    assert "stock-twins schedule: error: schedule_cron '*/10 * * * *': only 'M H * * DOW[,DOW]'" in err.getvalue(), err.getvalue()


@pytest.mark.slow
def test_the_real_retraining_while_the_api_serves(tmp_path):
    "`main --smoke`, then `schedule --run-now --smoke` (embeddings, every twin, the gate, a new snapshot) in a process of its own while the API serves."
    cfg = _cfg(tmp_path).replace(data={"checkpoint_dir": str(tmp_path / "data" / "checkpoints")})
    path = save_config(cfg, tmp_path / "c.yaml")
    cli = [sys.executable, "-c", "import sys; from stock_twins.cli import main; sys.exit(main(sys.argv[1:]))", "--config", str(path)]
    run = lambda *a: subprocess.run([*cli, *a], check=True, capture_output=True, timeout=900, cwd=tmp_path)   # default paths land in tmp
    run("main", "--smoke")
    run("publish")
    with api_process(path, cwd=tmp_path) as url, httpx.Client(base_url=url, timeout=10) as c:
        before = c.get("/health").json()["snapshot"]["version"]
        job = subprocess.Popen([*cli, "schedule", "--run-now", "--smoke", "--cutoff", "2022-12-21"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=tmp_path)
        codes = []
        while job.poll() is None:
            codes += [c.get(u).status_code for u in ("/predictions", "/predictions/AAPL", "/health")]
        out, err = job.communicate()
        _eq(job.returncode, 0)
        assert "run ok, cutoff 2022-12-21" in out, out + err[-2000:]
        _eq((len(codes) > 0, set(codes)), (True, {200}))
        _eq(c.get("/health").json()["snapshot"]["version"] != before, True)    # the job published, the API switched
