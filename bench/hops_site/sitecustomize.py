"""Hop tracing for `python -m bench.hops` (never imported unless this folder is on PYTHONPATH).

With ``BENCH_HOPS_DIR`` set, every Python process of a benchmark (server, worker) wraps a few functions
of the add→start path and appends ``<event> <job id or queue> <wall ns>`` lines to
``$BENCH_HOPS_DIR/<pid>.hops``. The production code is not changed: the wrappers are installed here, when
the interpreter starts, and only in processes that import the wrapped modules.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if os.environ.get("BENCH_HOPS_DIR"):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))  # the repo root: `bench`
    from bench.hops_trace import install

    install(os.environ["BENCH_HOPS_DIR"])
