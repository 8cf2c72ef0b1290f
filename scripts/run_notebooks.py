"""Execute notebooks and save their outputs, honouring nbdev's directives (`#| eval: false` and the `tst_flags`
cells are skipped, exactly as `nbdev_test` skips them), then clean them with `nbdev_clean`.

    python scripts/run_notebooks.py nbs/10_foundation.ipynb nbs/20_twin.ipynb   # some notebooks
    python scripts/run_notebooks.py                                             # every notebook in nbs/

`jupyter nbconvert --execute` would also run the `eval: false` cells (full-size training runs): use this instead.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from fastcore.basics import str2bool
from nbdev.config import get_config
from nbdev.process import NBProcessor
from nbdev.processors import FrontmatterProc


def run(fn: Path, flags: set) -> float:
    "Run `fn` in place; returns seconds. Raises on the first failing cell."
    nb = NBProcessor(fn, procs=FrontmatterProc, process=True).nb   # parses the directives into cell.directives_
    def skip(cell):
        if cell.cell_type != "code": return True
        if "nbdev_export" + "(" in cell.source: return True
        direc = getattr(cell, "directives_", {}) or {}
        if direc.get("eval:", [""])[0].lower() == "false": return True
        return bool(flags & direc.keys())
    t0, shell = time.time(), CaptureShell(fn)
    cwd = os.getcwd()
    os.chdir(fn.parent)
    try: shell.run_all(nb, exc_stop=True, preproc=skip)
    finally: os.chdir(cwd)
    raw = read_nb(fn)                                               # keep the file's own cells; copy the outputs in
    for c, r in zip(nb.cells, raw.cells):
        if r.cell_type == "code": r.outputs, r.execution_count = c.get("outputs", []), c.get("execution_count")
    write_nb(raw, fn)
    return time.time() - t0


if __name__ == "__main__":
    cfg = get_config()
    flags = set(str(cfg.get("tst_flags", "")).split())
    files = [Path(a) for a in sys.argv[1:]] or sorted(Path(cfg.nbs_path).glob("*.ipynb"))
    for f in files:
        print(f"{f}: {run(f.resolve(), flags):.0f} s", flush=True)
    subprocess.run(["nbdev_clean"], check=True)
