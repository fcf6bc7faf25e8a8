"""Run the notebook's code cells as one Python script, without Jupyter (headless checks, GPU machines).

Cells tagged nbval-skip (the install cell) are left out; `-p name value` overrides a parameter the way
papermill does, by running assignments right after the parameters cell.

    python tools/run_notebook_as_script.py StableDiffusion_Implementation.ipynb -p model '"bundled"'
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "PYTHON_VALUE"))
    args = parser.parse_args()
    cells = json.loads(Path(args.notebook).read_text())["cells"]
    root = Path(args.notebook).resolve().parent
    os.chdir(root)  # the notebook runs from its own folder, as Jupyter runs it
    sys.path.insert(0, str(root))
    namespace: dict = {"__name__": "__main__"}
    for i, cell in enumerate(cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell["cell_type"] != "code" or "nbval-skip" in tags:
            continue
        started = time.perf_counter()
        print(f"--- cell {i} ---", flush=True)
        exec(compile("".join(cell["source"]), f"cell {i}", "exec"), namespace)
        if "parameters" in tags:
            for name, value in args.p:
                exec(f"{name} = {value}", namespace)
        print(f"(cell {i}: {time.perf_counter() - started:.1f} s)", flush=True)
        plt.close("all")


if __name__ == "__main__":
    main()
