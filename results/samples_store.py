"""Per-sample artifacts of runs (``per_sample/<metric>.npz``), downloaded once per run per report build.

A report asks for many (run, metric) pairs (each Δ row and reference row of each table, the signal
check); the store lists and downloads a run's ``per_sample/`` folder on first use into its own temporary
folder and answers later requests from there. A run without the folder is not an error (older runs,
suites without per-sample output): the answer says why no samples are available, and the report shows the
difference without a CI and with that reason.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from harness.samples import PerSample, SamplesError
from results.runs import quiet_downloads


class PerSampleStore:
    def __init__(self, tracking_uri: str):
        import mlflow
        quiet_downloads()
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        self._tmp = tempfile.TemporaryDirectory(prefix="spatialboost-report-")
        self._dirs: dict[str, Path | str] = {}          # run id -> local folder, or why there is none
        self._loaded: dict[tuple[str, str], PerSample | str] = {}
        self.downloads = 0                               # folder downloads (one per run at most)
        self._cis: dict = {}                             # the same Δ appears in several tables

    def cached(self, key, compute):
        """``compute()`` once per key for the whole build (a CI shown in the summary and Table 1)."""
        if key not in self._cis:
            self._cis[key] = compute()
        return self._cis[key]

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> "PerSampleStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _folder(self, run_id: str) -> Path | str:
        if run_id not in self._dirs:
            try:
                listed = self.client.list_artifacts(run_id, "per_sample")
                if not listed:
                    self._dirs[run_id] = f"run {run_id} has no per_sample/ artifacts"
                else:
                    dest = Path(self._tmp.name) / run_id
                    dest.mkdir()
                    self.downloads += 1
                    self._dirs[run_id] = Path(self.client.download_artifacts(run_id, "per_sample", str(dest)))
            except Exception as e:  # noqa: BLE001 - mlflow raises many types; kept as the stated reason
                self._dirs[run_id] = f"cannot download per_sample/ of run {run_id} ({type(e).__name__}: {e})"
        return self._dirs[run_id]

    def details(self, run_id: str) -> dict:
        """The ``details`` of the run's result.json (floor descriptions live there); {} if unreadable,
        which only costs the floor row its description."""
        key = (run_id, "result.json")
        if key not in self._loaded:
            import json
            try:
                dest = Path(self._tmp.name) / f"{run_id}-result"
                dest.mkdir(exist_ok=True)
                path = self.client.download_artifacts(run_id, "result.json", str(dest))
                self._loaded[key] = json.loads(Path(path).read_text()).get("details") or {}
            except Exception:  # noqa: BLE001 - a missing description is not worth failing a report for
                self._loaded[key] = {}
        return self._loaded[key]

    def get(self, run_id: str, metric: str) -> PerSample | str:
        """The run's per-sample record of ``metric``, or a sentence saying why there is none."""
        key = (run_id, metric)
        if key not in self._loaded:
            folder = self._folder(run_id)
            if isinstance(folder, str):
                self._loaded[key] = folder
            elif not (folder / f"{metric}.npz").is_file():
                self._loaded[key] = f"run {run_id} has no per_sample/{metric}.npz"
            else:
                try:
                    self._loaded[key] = PerSample.load(folder / f"{metric}.npz")
                except SamplesError as e:
                    self._loaded[key] = f"run {run_id}: {e}"
        return self._loaded[key]
