"""Two runs logging the same new dataset at once on one tracking server: MLflow looks the dataset up, then
inserts it, so the later insert hits the datasets table's unique key (seen in CI on PostgreSQL:
``UniqueViolation ... dataset_pk``). The run must retry and link the existing row, not fail."""
import mlflow
import pytest
from mlflow.exceptions import RestException

from harness.tracking import RunLogger


class _RacingClient:
    """A real SQLite-backed client whose first ``log_inputs`` loses the race as the server reported it, after
    the other run's insert has landed (done here through the real store)."""

    def __init__(self, client, other_run_id, error):
        self.client, self.other, self.error, self.calls = client, other_run_id, error, 0

    def log_inputs(self, run_id, inputs):
        self.calls += 1
        if self.calls == 1:
            self.client.log_inputs(self.other, inputs)       # the other run wins the insert
            raise self.error
        return self.client.log_inputs(run_id, inputs)


PG = ("BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "
      "\"dataset_pk\" DETAIL: Key (experiment_id, name, digest)=(1, retrieval.roxford:roxford-tiny, f6) already exists.")


def test_a_lost_dataset_insert_race_is_retried_and_links_the_existing_dataset(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("race", artifact_location=str(tmp_path / "art"))
    a, b = (client.create_run(exp).info.run_id for _ in range(2))
    racing = _RacingClient(client, a, RestException({"error_code": "BAD_REQUEST", "message": PG}))
    RunLogger(racing, b).log_input("retrieval.roxford:roxford-tiny", "f60731cfd2f84ce5", "/data/roxford")
    assert racing.calls == 2
    for run in (a, b):
        ds = client.get_run(run).inputs.dataset_inputs
        assert [(d.dataset.name, d.dataset.digest) for d in ds] == [("retrieval.roxford:roxford-tiny",
                                                                    "f60731cfd2f84ce5")]


def test_other_input_errors_are_not_retried(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("race", artifact_location=str(tmp_path / "art"))
    a, b = (client.create_run(exp).info.run_id for _ in range(2))
    racing = _RacingClient(client, a, RestException({"error_code": "PERMISSION_DENIED", "message": "no access"}))
    with pytest.raises(RestException, match="no access"):
        RunLogger(racing, b).log_input("x", "d", "/data")
    assert racing.calls == 1
