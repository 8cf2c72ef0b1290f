"""Beyond one process: foundation pretraining with Lightning DDP (2 CPU processes, gloo) and twin fine-tuning fanned out
with Ray when it is installed. The Neo4j graph store has its own tests in test_graph.py, which run when NEO4J_URI is set."""
import math
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_eq as _eq

from stock_twins.config import Config

DDP = textwrap.dedent("""
    import os, sys, time
    import torch
    torch.set_num_threads(1)
    from stock_twins.config import Config
    from stock_twins.data import load_sample, load_sample_index
    from stock_twins.pretrain import pretrain
    if __name__ == "__main__":                       # strategy 'ddp' starts rank 1 by running this script again
        cfg = Config()
        p = load_sample(cfg)
        p = p[p.ticker.isin(["AAPL", "MSFT", "JPM", "KO", "XOM", "PG"]) & (p.date >= "2020-06-01")]
        ix = load_sample_index(cfg)
        ix = ix[ix.date >= "2020-06-01"]
        m, _ = pretrain(p, ix, cfg, train_end="2021-09-30", epochs=1, progress=False, tiny=True, accelerator="cpu", devices=2,
                        strategy="ddp", checkpoint_dir=False, date_stride=5)
        w = sum(float(v.double().abs().sum()) for v in m.state_dict().values())
        print(f"rank={os.environ.get('LOCAL_RANK', '0')} steps={m.meta['steps']} "
              f"train_dates={m.meta['train_dates']} weights={w:.9f}", flush=True)
""")


@pytest.mark.slow
def test_pretrain_with_ddp_on_two_cpu_processes(tmp_path):
    "Two DDP ranks (gloo on CPU) split the training dates and end with the same weights (about 7 s of CPU, 22-33 s on the busy 2-core VM)."
    script = tmp_path / "ddp_pretrain.py"
    script.write_text(DDP)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = {m[0]: m[1:] for m in re.findall(r"rank=(\d) steps=(\d+) train_dates=(\d+) weights=([\d.]+)", r.stdout)}
    _eq(sorted(ranks), ["0", "1"])
    _eq(ranks["0"], ranks["1"])                          # same steps, identical weights after the gradient all-reduce
    steps, dates = int(ranks["0"][0]), int(ranks["0"][1])
    _eq(steps, math.ceil(math.ceil(dates / 2) / Config().foundation.dates_per_batch))   # each rank saw half of the dates


@pytest.mark.slow
def test_twins_fan_out_with_ray(tmp_path):
    "With twins.ray_address set, retrain_all runs each twin as a Ray task; the twins equal those of local processes."
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]'); this test runs where it is")
    from stock_twins.data import ingest_prices
    from stock_twins.simulate import simulate_market
    from stock_twins.store import Store
    from stock_twins.testing import synthetic_embeddings
    from stock_twins.twin_train import retrain_all
    fh = "c0ffee" * 10 + "abcd"                          # the embeddings are SYNTHETIC
    market = simulate_market(4, 400, n_sectors=2, seed=11)
    small = dict(max_epochs=10, lora_rank=2, stock_dim=4, regime_dim=4, hidden=8)
    cfg = market.config(Config(), n_pilot=3).replace(foundation={"embed_dim": 8},
                                                     data={"store": str(tmp_path / "st.duckdb"), "checkpoint_dir": str(tmp_path / "local")}, twins=small)
    cut = pd.Timestamp(market.prices.date.unique()[380])
    with Store(cfg.data.store) as st:
        ingest_prices(st, market.prices, "sim", cfg=cfg)
        ingest_prices(st, market.index, "sim", table="index_prices")
        st.upsert("embeddings", synthetic_embeddings(market.prices, market.index, dim=8))
        local = retrain_all(cfg, st, cut, n_jobs=1, foundation_hash=fh, progress=False)
        ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
        try:
            viaray = retrain_all(cfg.replace(data={"checkpoint_dir": str(tmp_path / "ray")}, twins={"ray_address": "auto"}), st, cut,
                                 foundation_hash=fh, progress=False)
        finally:
            ray.shutdown()
    _eq(viaray.status.tolist(), ["trained"] * 3)
    np.testing.assert_allclose(viaray.val_loss.to_numpy(float), local.val_loss.to_numpy(float), rtol=1e-4)
