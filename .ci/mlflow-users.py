"""Create the study's experiment and its two users on a basic-auth MLflow server, through MLflow's own client.

    MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=... python mlflow-users.py URI EXPERIMENT AUTH_DIR

AUTH_DIR holds ``asym-writer.password`` and ``asym-reader.password`` (mode 600). The writer gets EDIT on the
experiment, the reader READ. Idempotent: an existing user or experiment is kept. Prints no secret.
"""
import sys
from pathlib import Path

from mlflow.exceptions import RestException
from mlflow.server import get_app_client
from mlflow.tracking import MlflowClient

USERS = {"asym-writer": "EDIT", "asym-reader": "READ"}


def main(uri: str, experiment: str, auth_dir: str) -> None:
    tracking = MlflowClient(tracking_uri=uri)
    exp = tracking.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else tracking.create_experiment(experiment)
    auth = get_app_client("basic-auth", tracking_uri=uri)
    for user, permission in USERS.items():
        try:
            auth.create_user(user, (Path(auth_dir) / f"{user}.password").read_text().strip())
        except RestException as e:
            if "already exists" not in str(e):
                raise
        auth.grant_user_permission(user, "experiment", exp_id, permission)
        print(f"mlflow-users: {user} has {permission} on experiment {experiment!r} ({exp_id})")


if __name__ == "__main__":
    main(*sys.argv[1:4])
