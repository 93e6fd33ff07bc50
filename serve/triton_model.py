"""Triton Python-backend model `bertrt_qa` (copied as <repository>/bertrt_qa/1/model.py by `bertrt triton-repo`).

The work is bertrt's own code (bertrt.serve.python_model); this file only makes it importable. The stub's embedded
interpreter ignores PYTHONPATH, so `bertrt serve` passes the site directories of its environment in
BERTRT_STUB_PATH, and they go ahead of the base interpreter's own. Under a Triton whose Python has bertrt
installed, the variable is unset and nothing changes.
"""

import os
import site
import sys


def _use_launcher_site() -> None:
    before = list(sys.path)
    for entry in os.environ.get("BERTRT_STUB_PATH", "").split(os.pathsep):
        if entry:
            site.addsitedir(entry)  # also runs the directory's .pth files (editable installs)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before


_use_launcher_site()

from bertrt.serve.python_model import TritonPythonModel  # noqa: E402,F401
