"README.md is generated from nbs/index.ipynb and must not drift from it."
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_readme_matches_index(tmp_path):
    subprocess.run([sys.executable, "-m", "nbconvert", "--to", "markdown", str(ROOT / "nbs/index.ipynb"),
                    "--output-dir", str(tmp_path), "--output", "README", "--log-level", "ERROR"], check=True)
    assert (tmp_path / "README.md").read_text() == (ROOT / "README.md").read_text(), "README.md is stale: run scripts/readme.sh"

def test_readme_commands_are_the_ci_commands():
    "The README's test command is exactly what .ci/run calls."
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci/run").read_text()
    cmd = "bash scripts/setup.sh && bash scripts/test.sh"
    assert cmd in readme and cmd in ci
    assert "bash scripts/setup.sh && .venv/bin/stock-twins main" in readme
