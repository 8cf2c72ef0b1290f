"The example config in the repository is the defaults, and loads."
from pathlib import Path

from fastcore.test import test_eq as _eq

from stock_twins.config import Config, example_config_text, load_config

ROOT = Path(__file__).resolve().parents[1]

def test_example_config_is_generated_from_defaults():
    assert (ROOT / "config/config.example.yaml").read_text() == example_config_text(), \
        "config/config.example.yaml is stale: python -c 'from stock_twins.config import write_example_config; write_example_config()'"

def test_example_config_loads_to_defaults():
    _eq(load_config(ROOT / "config/config.example.yaml"), Config())
