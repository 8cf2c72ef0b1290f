"""Fixtures of the serving tests (API, schedule, feature store): a DuckDB store on disk with predictions in the stored
layout, checkpoints in the `checkpoint` layout, a published snapshot, and a real uvicorn process.
Prediction values are generated, not forecasts."""
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from stock_twins.checkpoint import artifact_stem, json_hash, save_artifact, write_manifest
from stock_twins.config import Config, save_config
from stock_twins.schema import PROB_COLUMNS, prediction_frame, stored_predictions
from stock_twins.store import Store, publish_snapshot

TICKERS = ("AAPL", "MSFT", "JPM", "LLY")
DAYS = ("2022-12-23", "2022-12-27", "2022-12-28")


def predictions(days=DAYS, tickers=TICKERS, seed: int = 0) -> pd.DataFrame:
    "Generated rows in the stored `predictions` layout (schema.stored_predictions), ranked per date."
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame([(pd.Timestamp(d), t) for d in days for t in tickers], columns=["date", "ticker"])
    n = len(rows)
    p = rng.dirichlet(np.ones(4), n)
    er = rng.normal(0, 0.01, n)
    pf = prediction_frame(rows, "twin", exp_return=er, hit_prob=rng.uniform(0.4, 0.6, n), vol=rng.uniform(0.1, 0.4, n),
                          q10=er - 0.03, q50=er, q90=er + 0.03, regime=p.argmax(1), **dict(zip(PROB_COLUMNS, p.T)))
    fb = pf["ticker"].eq("LLY")
    pf["model"], pf["source"] = np.where(fb, "fallback", "twin"), np.where(fb, "fallback", "twin")
    pf["priority"] = pf.exp_return * pf.hit_prob * (1 - pf.vol)
    pf["rank"] = pf.groupby("date")["priority"].rank(ascending=False, method="first").astype(int)
    return stored_predictions(pf)


def checkpoints(root: Path) -> dict:
    "A foundation and twins (AAPL: two cutoffs, the older deployed; MSFT and JPM: one each, no manifest entry) with tiny payloads."
    w = {"w": np.zeros(3, dtype=np.float32)}
    frec = save_artifact(artifact_stem(root, "foundation", "2022-12-28", "a" * 64), w, kind="foundation", cutoff="2022-12-28",
                         config_hash="c" * 64, framework="np")
    out = {}
    for t, d, vl in (("AAPL", "2022-12-21", 0.90), ("AAPL", "2022-12-28", 0.99), ("MSFT", "2022-12-28", 0.95), ("JPM", "2022-12-28", 0.97)):
        s = artifact_stem(root, "twin", d, json_hash([t, d]), t)
        save_artifact(s, w, kind="twin", cutoff=d, config_hash="c" * 64, parent_hash=frec["sha256"], subject=t, framework="np",
                      meta={"metrics": {"val_loss": vl, "val_loss_init": 1.0}})
        out[(t, d)] = s
    write_manifest(root, "twin", {"AAPL": {"path": out[("AAPL", "2022-12-21")], "cutoff": "2022-12-21", "gate": {"val_skill": 0.9}}},
                   [{"subject": "AAPL", "action": "refuse", "reason": "val_skill 0.9900 is worse than the serving 0.9000 by more than 5%"}])
    return out


def serving_tree(tmp_path: Path, **serve) -> tuple[Config, Path]:
    "A store file with predictions, checkpoints, a published snapshot and a config file pointing at them: (config, its path)."
    cfg = Config().replace(data={"store": str(tmp_path / "st.duckdb"), "checkpoint_dir": str(tmp_path / "ck")},
                           serve={"snapshot_dir": str(tmp_path / "snap"), **serve})
    with Store(cfg.data.store) as st:
        st.upsert("predictions", predictions())
        publish_snapshot(st, cfg.serve.snapshot_dir, cfg.serve.snapshot_tables)
    checkpoints(Path(cfg.data.checkpoint_dir))
    return cfg, save_config(cfg, tmp_path / "config.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLI = "import sys; from stock_twins.cli import main; sys.exit(main(sys.argv[1:]))"


@contextmanager
def api_process(config_path: Path, env: dict | None = None, args=("--no-publish",), timeout: float = 60, cwd=None):
    "A real `stock-twins serve` (uvicorn) process on a free loopback port; yields its base URL, stops it after."
    port = free_port()
    e = {**os.environ, **(env or {})}
    p = subprocess.Popen([sys.executable, "-c", CLI, "--config", str(config_path), "serve", "--host", "127.0.0.1", "--port", str(port),
                          "--log-level", "warning", *args], env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        while True:
            if p.poll() is not None: raise RuntimeError(f"the server exited with {p.returncode}:\n{p.stdout.read()}")
            try:
                httpx.get(url + "/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                if time.time() - t0 > timeout: raise TimeoutError(f"the server did not answer within {timeout} s")
                time.sleep(0.1)
        yield url
    finally:
        p.terminate()
        try: p.wait(10)
        except subprocess.TimeoutExpired: p.kill(); p.wait()
