"""One `GraphStore` suite run against every backend.

- `duckdb`: always (a DuckDB file on disk).
- `neo4j`: a real server, only when `NEO4J_URI` is set (with `NEO4J_USER`, `NEO4J_PASSWORD`, optional
  `NEO4J_DATABASE`); it touches only test stocks (tickers starting `ZZT`, dates in 1901) and deletes them after.
- `neo4j-fake`: `Neo4jGraphStore` against an in-process stand-in for the driver that understands exactly the
  module's Cypher statements. It cannot check Cypher itself (only a server can); it checks the Python side:
  parameter types (Neo4j `Date`, not `DateTime`), record conversion, batching, one transaction per write.
"""
import datetime as dt
import os

import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_eq as _eq, test_fail as _fail

import stock_twins.graph as G
from stock_twins.graph import DuckDBGraphStore, Neo4jGraphStore, correlation_graph, graph_store, to_pyg
from stock_twins.store import Store

NO_NEO4J = "NEO4J_URI not set: no Neo4j server to test against"
TICKERS = [f"ZZT{c}" for c in "ABCDEFGH"]
SECTORS = {t: ("Tech" if i < 3 else "Energy" if i < 6 else "Utilities") for i, t in enumerate(TICKERS)}


def _prices() -> pd.DataFrame:
    "Two-factor synthetic prices for the test stocks (1901, so they never meet a real graph)."
    rng = np.random.default_rng(0)
    days = pd.bdate_range("1901-01-01", periods=120)
    f = rng.normal(0, 0.01, (len(days), 2))
    load = rng.uniform(-1, 1, (len(TICKERS), 2))
    r = f @ load.T + rng.normal(0, 0.01, (len(days), len(TICKERS)))
    px = 50 * np.exp(np.cumsum(r, 0))
    return pd.DataFrame(px, index=days, columns=TICKERS).rename_axis("date").reset_index() \
             .melt(id_vars="date", var_name="ticker", value_name="adj_close")


@pytest.fixture(scope="module")
def edges() -> pd.DataFrame:
    e = correlation_graph(_prices(), window=20, k=2, sector_edges=True, sectors=SECTORS, every=10)
    assert e.date.nunique() >= 8 and (e.kind == "sector").any()
    return e


# ---- the neo4j stand-in ------------------------------------------------------------------------------------
Q = {n: getattr(G, n) for n in dir(G) if n.startswith("_CYPHER_")}  # the statements as shipped (a test patches one)

class _Rec:
    def __init__(self, records): self.records = records
    def consume(self): return None


class _FakeNeo4j:
    "Just enough of `neo4j.Driver` for `Neo4jGraphStore`: the module's statements over an in-memory graph."
    def __init__(self):
        import neo4j
        self.neo4j, self.nodes, self.rels, self.schema, self.batches = neo4j, {}, {}, [], []

    def verify_connectivity(self): return None
    def close(self): return None
    def session(self, database=None): return self
    def __enter__(self): return self
    def __exit__(self, *exc): return None

    def execute_write(self, fn):  # all or nothing, like a managed transaction
        saved = (dict(self.nodes), dict(self.rels))
        try: return fn(self)
        except BaseException:
            self.nodes, self.rels = saved; raise

    def run(self, query, **params): return _Rec(self._exec(query, params))
    def execute_query(self, query, parameters=None, routing_=None, database_=None):
        return _Rec(self._exec(query, parameters or {}))

    def _date(self, d):
        assert type(d) is dt.date, f"dates must be sent as datetime.date (a Neo4j Date), not {type(d).__name__}"
        return self.neo4j.time.Date.from_native(d)

    def _recs(self, rows): return [self.neo4j.Record(r.items()) for r in rows]

    def _exec(self, q, p):
        if q in Q["_CYPHER_SCHEMA"]: self.schema.append(q); return []
        if q == Q["_CYPHER_NODES"]:
            self.batches.append(len(p["rows"]))
            for r in p["rows"]: self.nodes[r["ticker"]] = r["sector"] if r["sector"] is not None else self.nodes.get(r["ticker"])
            return []
        if q == Q["_CYPHER_DELETE"]:
            ds = {self._date(d) for d in p["dates"]}
            self.rels = {k: v for k, v in self.rels.items() if k[0] not in ds}
            return []
        if q == Q["_CYPHER_EDGES"]:
            self.batches.append(len(p["rows"]))
            for r in p["rows"]:
                if r["src"] in self.nodes and r["dst"] in self.nodes:  # MATCH: nodes must exist
                    assert isinstance(r["weight"], float)
                    self.rels[(self._date(r["date"]), r["src"], r["dst"], r["kind"])] = r["weight"]
            return []
        if q == Q["_CYPHER_DATES"]: return self._recs({"date": d} for d in sorted({k[0] for k in self.rels}))
        if q == Q["_CYPHER_HAS_DATE"]:
            d = self._date(p["date"]); return self._recs([{"ok": 1}] if any(k[0] == d for k in self.rels) else [])
        if q == Q["_CYPHER_HAS_TICKER"]: return self._recs([{"ok": 1}] if p["ticker"] in self.nodes else [])
        if q == Q["_CYPHER_READ"]:
            d = self._date(p["date"])
            return self._recs({"date": k[0], "src": k[1], "dst": k[2], "weight": w, "kind": k[3]}
                              for k, w in sorted(self.rels.items()) if k[0] == d)
        if q == Q["_CYPHER_PEERS"]:
            d = self._date(p["date"])
            rows = [{"peer": k[2], "weight": w, "sector": self.nodes.get(k[2])} for k, w in self.rels.items()
                    if k[0] == d and k[1] == p["ticker"] and k[3] == "corr"]
            return self._recs(sorted(rows, key=lambda r: (-r["weight"], r["peer"]))[: p["n"]])
        raise AssertionError(f"unexpected Cypher: {q}")


# ---- the backends ------------------------------------------------------------------------------------------
def _wipe(gs: Neo4jGraphStore):
    gs.driver.execute_query("MATCH (s:Stock) WHERE s.ticker STARTS WITH 'ZZT' DETACH DELETE s", database_=gs.database)


@pytest.fixture(params=["duckdb", "neo4j", "neo4j-fake"])
def backend(request, tmp_path, monkeypatch):
    if request.param == "duckdb":
        gs = DuckDBGraphStore(Store(tmp_path / "graph.duckdb"), own=True)
        yield gs
        gs.close()
    elif request.param == "neo4j-fake":
        import neo4j
        fake = _FakeNeo4j()
        monkeypatch.setattr(neo4j.GraphDatabase, "driver", lambda uri, auth=None, **kw: fake)
        gs = Neo4jGraphStore("bolt://fake:7687", "neo4j", "x", batch_size=7)
        yield gs
        gs.close()
    else:
        if not os.environ.get("NEO4J_URI"):
            print(NO_NEO4J)
            pytest.skip(NO_NEO4J)
        gs = Neo4jGraphStore(os.environ["NEO4J_URI"], os.environ.get("NEO4J_USER", "neo4j"), os.environ.get("NEO4J_PASSWORD"),
                             os.environ.get("NEO4J_DATABASE") or None)
        _wipe(gs)
        yield gs
        _wipe(gs)
        gs.close()


def _ours(gs) -> list[pd.Timestamp]:
    "Stored dates of the test graphs (a real Neo4j database may hold others)."
    return [d for d in gs.dates() if d.year == 1901]


# ---- the shared suite --------------------------------------------------------------------------------------
def test_round_trip(backend, edges):
    _eq(backend.write(edges, SECTORS), len(edges))
    _eq(_ours(backend), sorted(edges.date.unique()))
    for d in _ours(backend):
        _eq(backend.read(d), edges[edges.date == d].reset_index(drop=True))


def test_idempotent_rewrite(backend, edges):
    backend.write(edges, SECTORS)
    backend.write(edges, SECTORS)
    back = pd.concat([backend.read(d) for d in _ours(backend)], ignore_index=True)
    _eq(back, edges)
    d0 = sorted(edges.date.unique())[3]                      # a recomputed date replaces its old edges
    sparse = correlation_graph(_prices(), dates=[d0], window=20, k=1)
    backend.write(sparse)
    _eq(backend.read(d0), sparse)
    _eq(len(backend.read(d0)) < (edges.date == d0).sum(), True)
    # sectors written earlier are kept when a later write brings none
    p = backend.peers("ZZTB", d0, n=10)
    _eq(len(p) > 0, True)
    _eq(p.sector.tolist(), [SECTORS[x] for x in p.peer])


def test_peers_ordering(backend, edges):
    backend.write(edges, SECTORS)
    d = sorted(edges.date.unique())[-1]
    for t in TICKERS[:4]:
        p = backend.peers(t, d, n=3)
        mine = edges[(edges.date == d) & (edges.src == t) & (edges.kind == "corr")]
        want = mine.sort_values(["weight", "dst"], ascending=[False, True]).head(3)
        _eq(p.peer.tolist(), want.dst.tolist())
        np.testing.assert_allclose(p.weight.to_numpy(), want.weight.to_numpy(), rtol=0, atol=1e-12)
        _eq(p.sector.tolist(), [SECTORS[x] for x in p.peer])
        _eq(p.weight.is_monotonic_decreasing, True)
    _fail(lambda: backend.peers("ZZTNOPE", d), exc=KeyError, contains="ZZTNOPE")


def test_edge_index_equal_across_backends(backend, edges, tmp_path):
    backend.write(edges, SECTORS)
    ref = DuckDBGraphStore(Store())
    ref.write(edges, SECTORS)
    nodes = list(reversed(TICKERS))
    for d in _ours(backend)[::3]:
        ei, ea = backend.edge_index(d, nodes)
        rei, rea = ref.edge_index(d, nodes)
        _eq(ei, rei)
        _eq(ea, rea)
        _eq(ei, to_pyg(edges, nodes, d)[0])
        _eq((ei.dtype, ea.dtype, ea.shape[1]), (rei.dtype, rea.dtype, 1))


def test_unknown_date(backend, edges):
    backend.write(edges, SECTORS)
    ds = _ours(backend)
    gap = ds[2] + pd.Timedelta(days=1)
    _fail(lambda: backend.read(gap), exc=KeyError, contains=f"{ds[2]:%Y-%m-%d}")  # names the nearest stored dates
    _fail(lambda: backend.read(gap), exc=KeyError, contains=f"{ds[3]:%Y-%m-%d}")
    _fail(lambda: backend.peers("ZZTA", gap), exc=KeyError, contains="no graph stored")
    _eq(backend.read(gap, asof=True), backend.read(ds[2]))


def test_write_without_sectors(backend, edges):
    backend.write(edges)                                     # stocks are created, with no sector
    d = _ours(backend)[-1]
    p = backend.peers("ZZTC", d, n=2)
    _eq((len(p), p.sector.tolist()), (2, [None, None]))
    backend.write(edges[edges.date == d], {"ZZTA": "Tech"})  # a later write can add one
    nb = edges[(edges.date == d) & (edges.dst == "ZZTA") & (edges.kind == "corr")].src.iloc[0]
    _eq(backend.peers(nb, d, n=8).set_index("peer").sector.to_dict(),
        {x: ("Tech" if x == "ZZTA" else None) for x in backend.peers(nb, d, n=8).peer})


def test_bad_edges_write_nothing(backend, edges):
    _fail(lambda: backend.write(edges.drop(columns="weight")), exc=ValueError, contains="['weight']")
    _fail(lambda: backend.write(edges.assign(kind="friend")), exc=ValueError, contains="friend")
    _fail(lambda: backend.write(pd.concat([edges, edges.head(1)])), exc=ValueError, contains="duplicated")
    _eq(_ours(backend), [])


# ---- backend-specific --------------------------------------------------------------------------------------
def test_duckdb_persists_on_disk(tmp_path, edges):
    path = tmp_path / "g.duckdb"
    with DuckDBGraphStore(Store(path), own=True) as gs: gs.write(edges, SECTORS)
    with DuckDBGraphStore(Store(path, read_only=True), own=True) as gs:
        _eq(pd.concat([gs.read(d) for d in gs.dates()], ignore_index=True), edges)


def test_fake_neo4j_plumbing(monkeypatch, edges):
    import neo4j
    fake = _FakeNeo4j()
    monkeypatch.setattr(neo4j.GraphDatabase, "driver", lambda uri, auth=None, **kw: fake)
    gs = Neo4jGraphStore("bolt://fake:7687", "neo4j", "x", batch_size=50)
    _eq(fake.schema, list(Q["_CYPHER_SCHEMA"]))                 # constraint and index created on open
    gs.write(edges, SECTORS)
    _eq(max(fake.batches) <= 50 and sum(fake.batches) == len(edges) + len(TICKERS), True)
    _eq(len(fake.rels), len(edges))
    monkeypatch.setattr(G, "_CYPHER_EDGES", "broken")          # a write failing half-way leaves the graph as it was
    _fail(lambda: gs.write(edges.assign(weight=0.5)), exc=AssertionError, contains="unexpected Cypher")
    monkeypatch.setattr(G, "_CYPHER_EDGES", Q["_CYPHER_EDGES"])
    _eq(pd.concat([gs.read(d) for d in gs.dates()], ignore_index=True), edges)


def test_graph_store_choice(monkeypatch, tmp_path):
    monkeypatch.delenv("NEO4J_URI", raising=False)
    _eq(type(graph_store(store=Store())).__name__, "DuckDBGraphStore")
    monkeypatch.setenv("NEO4J_URI", "bolt://fake:7687")
    monkeypatch.delenv("NEO4J_PASSWORD", raising=False)
    _fail(lambda: graph_store(store=Store()), exc=ValueError, contains="NEO4J_PASSWORD")
    import neo4j
    monkeypatch.setattr(neo4j.GraphDatabase, "driver", lambda uri, auth=None, **kw: _FakeNeo4j())
    monkeypatch.setenv("NEO4J_PASSWORD", "x")
    _eq(type(graph_store()).__name__, "Neo4jGraphStore")
