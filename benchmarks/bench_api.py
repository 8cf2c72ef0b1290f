"""HTTP API load benchmark: requests per second and p50/p99 latency of `GET /predictions/{ticker}` and `GET /models/twins`
with 1, 8 and 64 concurrent clients (httpx, asyncio), against a real `stock-twins serve` process (uvicorn, one worker).

Run: python benchmarks/bench_api.py [--seconds 5] [--config PATH] [--on-demand]

Without --config it builds a serving tree in a temporary folder: a store whose `predictions` table holds 50 stocks x 252
days of GENERATED rows in the stored layout (values are not forecasts), a published snapshot, and 50 twins x 4 weekly
checkpoint records. --config serves an existing tree instead (e.g. a main-job store). --on-demand also measures
`GET /predictions/AAPL?date=D` answered on demand (LightGBM fallback on the Feast online store's features), on a tree
built from the bundled sample (ingest, features, fallback, feast apply + materialize: about a minute).
The client runs on the same machine as the server: on a 2-core VM they compete for the CPU, so the figures are
lower bounds of what the server does alone. The target is p99 < 50 ms at 8 clients for stored predictions.
"""
from __future__ import annotations
import argparse
import asyncio
import io
import os
import platform
import random
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _serve_fixtures import api_process  # noqa: E402  (the test suite's uvicorn launcher)

from stock_twins.checkpoint import artifact_stem, json_hash, save_artifact  # noqa: E402
from stock_twins.config import Config, save_config  # noqa: E402
from stock_twins.schema import PROB_COLUMNS, prediction_frame, stored_predictions  # noqa: E402
from stock_twins.store import Store, publish_snapshot  # noqa: E402


def build_tree(d: Path, n_stocks: int = 50, n_days: int = 252) -> Path:
    "A generated serving tree: predictions (stored layout), snapshot, twin records; returns its config file."
    cfg = Config()
    tickers = cfg.universe.pilot[:n_stocks]
    cfg = cfg.replace(data={"store": str(d / "st.duckdb"), "checkpoint_dir": str(d / "ck")}, serve={"snapshot_dir": str(d / "snap")})
    rng = np.random.default_rng(0)
    days = pd.bdate_range(end="2022-12-28", periods=n_days)
    rows = pd.DataFrame([(dd, t) for dd in days for t in tickers], columns=["date", "ticker"])
    n = len(rows)
    p = rng.dirichlet(np.ones(4), n)
    er = rng.normal(0, 0.01, n)
    pf = prediction_frame(rows, "twin", exp_return=er, hit_prob=rng.uniform(0.4, 0.6, n), vol=rng.uniform(0.1, 0.4, n),
                          q10=er - 0.03, q50=er, q90=er + 0.03, regime=p.argmax(1), **dict(zip(PROB_COLUMNS, p.T)))
    pf["source"], pf["priority"] = "twin", pf.exp_return * pf.hit_prob * (1 - pf.vol)
    pf["rank"] = pf.groupby("date")["priority"].rank(ascending=False, method="first").astype(int)
    with Store(cfg.data.store) as st:
        st.upsert("predictions", stored_predictions(pf))
        publish_snapshot(st, cfg.serve.snapshot_dir, ["predictions"])
    w = {"w": np.zeros(1000, dtype=np.float32)}
    for t in tickers:
        for cut in days[-20::5]:
            save_artifact(artifact_stem(cfg.data.checkpoint_dir, "twin", cut, json_hash([t, str(cut)]), t), w, kind="twin", cutoff=cut,
                          config_hash="c" * 64, parent_hash="f" * 64, subject=t, framework="np", meta={"metrics": {"val_loss": 0.9, "val_loss_init": 1.0}})
    save_artifact(artifact_stem(cfg.data.checkpoint_dir, "foundation", days[-1], "a" * 64), w, kind="foundation", cutoff=days[-1],
                  config_hash="c" * 64, framework="np")
    return save_config(cfg, d / "config.yaml")


def build_on_demand_tree(d: Path) -> tuple[Path, str]:
    "The bundled sample's features, a fallback, Feast applied and materialised one day past the stored predictions: (config, date)."
    from stock_twins.cli import main
    from stock_twins.pipeline import ensure_fallback
    os.chdir(d)                                                              # default paths (the fallback's folder, ...) land in d
    cfg = Config().replace(data={"store": str(d / "st.duckdb"), "checkpoint_dir": str(d / "data" / "checkpoints")},
                           main={"fallback_years": 2.0, "fallback_rounds": 20},
                           serve={"snapshot_dir": str(d / "snap"), "feast_dir": str(d / "repo"), "feast": True})
    path = save_config(cfg, d / "config.yaml")
    with redirect_stdout(io.StringIO()):
        main(["--config", str(path), "ingest"]); main(["--config", str(path), "features"])
        with Store(cfg.data.store) as st:
            rows = st.read("features", dates=[pd.Timestamp("2022-12-23")])[["date", "ticker"]]
            pf = prediction_frame(rows, "twin", exp_return=0.0, hit_prob=0.5, vol=0.2, q10=-0.03, q50=0.0, q90=0.03)
            st.upsert("predictions", stored_predictions(pf.assign(source="twin", priority=0.0, rank=range(1, len(pf) + 1))))
            publish_snapshot(st, cfg.serve.snapshot_dir, ["predictions"])
            ensure_fallback(cfg, st, pd.Timestamp("2022-12-23"))
        main(["--config", str(path), "feast", "apply"]); main(["--config", str(path), "feast", "materialize", "--end", "2022-12-27"])
    return path, "2022-12-27"


async def _load(url: str, paths: list[str], clients: int, seconds: float, headers: dict) -> dict:
    lat, errors = [], 0
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=httpx.Limits(max_connections=clients)) as c:
        for p in paths[:20]: await c.get(p)                                   # warm-up
        stop = time.perf_counter() + seconds
        async def worker(i):
            nonlocal errors
            rnd = random.Random(i)
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = await c.get(rnd.choice(paths))
                lat.append(time.perf_counter() - t0)
                errors += r.status_code != 200
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        wall = time.perf_counter() - t0
    a = np.array(lat) * 1e3
    return dict(clients=clients, requests=len(a), errors=errors, rps=len(a) / wall, p50_ms=np.percentile(a, 50), p99_ms=np.percentile(a, 99))


def main_(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="measurement time per setting")
    ap.add_argument("--config", default=None, help="serve this config's tree instead of a generated one")
    ap.add_argument("--on-demand", action="store_true", help="also benchmark on-demand answers from the Feast online store")
    ap.add_argument("--clients", default="1,8,64")
    a = ap.parse_args(argv)
    print(f"machine: {platform.machine()} {platform.system()} {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"load average before: {open('/proc/loadavg').read().split()[:3]}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_api_"))
    path = Path(a.config) if a.config else build_tree(tmp)
    from stock_twins.config import load_config
    cfg = load_config(path)
    with Store(cfg.data.store, read_only=True) as st:
        tickers = st.tickers("predictions")
    rows = []
    with api_process(path) as url:
        for name, paths in (("GET /predictions/{ticker}", [f"/predictions/{t}" for t in tickers]), ("GET /models/twins", ["/models/twins"])):
            for n in (int(x) for x in a.clients.split(",")):
                rows.append(dict(endpoint=name, **asyncio.run(_load(url, paths, n, a.seconds, {}))))
                print({k: round(float(v), 1) if isinstance(v, (float, np.floating)) else v for k, v in rows[-1].items()}, flush=True)
    if a.on_demand:
        od, day = build_on_demand_tree(Path(tempfile.mkdtemp(prefix="bench_api_od_")))
        with api_process(od, timeout=120) as url:
            tick = ["AAPL", "MSFT", "JPM", "KO", "XOM", "LLY", "GE", "PFE"]
            for n in (int(x) for x in a.clients.split(",")):
                rows.append(dict(endpoint="GET /predictions/{ticker}?date= (on demand)",
                                 **asyncio.run(_load(url, [f"/predictions/{t}?date={day}" for t in tick], n, a.seconds, {}))))
                print({k: round(float(v), 1) if isinstance(v, (float, np.floating)) else v for k, v in rows[-1].items()}, flush=True)
    df = pd.DataFrame(rows)
    try: print("\n" + df.to_markdown(index=False, floatfmt=".1f"))
    except ImportError: print("\n" + df.round(1).to_string(index=False))          # to_markdown needs tabulate
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main_()
