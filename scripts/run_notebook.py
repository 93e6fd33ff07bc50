"""Execute notebooks/bertrt.ipynb top to bottom (nbclient, the engine behind `jupyter nbconvert --execute`) and
optionally save its figures as PNG files: `python scripts/run_notebook.py --figures docs/` (`make notebook-figures`).

The stored notebook keeps no outputs (clean diffs); this runs a copy in memory and never rewrites it."""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path

from bertrt.errors import BertrtError
from bertrt.extras import require

try:
    nbformat = require("nbformat", "notebook")
    NotebookClient = require("nbclient", "notebook").NotebookClient
except BertrtError as exc:  # one line naming the extra, as the bertrt commands say it
    sys.exit(f"run_notebook.py: error: {exc}")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "bertrt.ipynb"


def execute(notebook: Path = NOTEBOOK, out_dir: Path | None = None, timeout: int = 600):
    """The executed notebook (raises nbclient's CellExecutionError naming the failing cell). `out_dir` becomes
    BERTRT_OUT, where the notebook writes and reuses artifacts."""
    nb = nbformat.read(notebook, as_version=4)
    env_backup = os.environ.get("BERTRT_OUT")
    if out_dir is not None:
        os.environ["BERTRT_OUT"] = str(out_dir)  # the kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(notebook.parent)}}).execute()
    finally:
        if env_backup is None:
            os.environ.pop("BERTRT_OUT", None)
        else:
            os.environ["BERTRT_OUT"] = env_backup
    return nb


def text_of(nb) -> str:
    """Everything the cells printed or displayed as text/HTML, in order."""
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            data = output.get("data", {})
            parts.append(data.get("text/html", "") or data.get("text/plain", ""))
    return "\n".join(parts)


def figures(nb: nbformat.NotebookNode) -> list[bytes]:
    """The PNG images the notebook displayed, in order."""
    return [base64.b64decode(output["data"]["image/png"]) for cell in nb.cells for output in cell.get("outputs", [])
            if "image/png" in output.get("data", {})]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--figures", type=Path, help="write the notebook's figures as notebook-N.png here")
    parser.add_argument("--out", type=Path, help="artifact folder (default: the notebook's, out/<model>/)")
    args = parser.parse_args()
    nb = execute(out_dir=args.out)
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        for k, png in enumerate(figures(nb), 1):
            (args.figures / f"notebook-{k}.png").write_bytes(png)
            print(f"wrote {args.figures / f'notebook-{k}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
