import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test; runs only when STOCK_TWINS_SLOW=1")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("STOCK_TWINS_SLOW") == "1": return
    skip = pytest.mark.skip(reason="slow test: set STOCK_TWINS_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords: item.add_marker(skip)
