"""The Dask worker plugin that holds a run's job (model, background, explainer settings) in
each worker: imported only where a Dask run starts, and in the workers that unpickle it."""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


class JobPlugin(WorkerPlugin):
    """Holds ``job`` in a worker from ``setup`` until ``teardown`` (the run's end)."""

    def __init__(self, job: Any):
        self.job = job

    def teardown(self, worker: Any) -> None:
        self.job = None
