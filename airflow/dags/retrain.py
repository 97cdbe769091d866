"""Weekly retraining: validate -> snapshot -> train -> evaluate -> gate -> publish -> reload API.

Every Monday 03:00 UTC, for the week that just ended (the run's data interval):

1. **validate** the product database: quarantine rows without a usable label, duplicates,
   rows with neither text nor image, and undecodable images (never deleted); fail, without
   retrying, below MIN_TRAINING_ROWS usable rows.
2. **snapshot** the usable rows to DATA_STORE_URI, keyed by the data interval (a rerun reuses it).
3. **train** a candidate on the snapshot's train split: in this worker (TRAIN_MODE=inprocess),
   in the training image TRAIN_IMAGE through the Docker API (TRAIN_MODE=docker, compose), or in
   a pod of TRAIN_IMAGE with its own CPU and memory (TRAIN_MODE=kubernetes: **train_pod**, a
   KubernetesPodOperator); **where_to_train** picks one, **candidate** reads what it published.
4. **evaluate** the candidate and the production model on the snapshot's held-out split.
5. **gate**: promote only if weighted F1 improves by more than GATE_MIN_IMPROVEMENT with no
   class losing more than GATE_MAX_RECALL_DROP recall (pipelines/gate.py).
6. **publish** the candidate to MODEL_STORE_URI; promote it, or record it as rejected with the
   gate's figures.
7. **reload_api**: ask the API to load the new production model (a warning if unreachable:
   the API polls the production pointer anyway).

Trigger it by hand with conf `{"interval_end": "2025-06-02T03:00:00+00:00"}` to snapshot and
train on the week before that instant instead of the run's data interval (the monitoring DAG
does so). This file only wires tasks: the work lives in pipelines/retrain.py, imported inside
the tasks so that parsing this file imports neither TensorFlow nor the database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import CronDataIntervalTimetable, dag, get_current_context, task
from kubernetes.client import models as k8s

DEFAULT_ARGS = {
    "owner": "mlops",
    "retries": 2,
    "retry_delay": timedelta(minutes=10),
}


# TRAIN_MODE=kubernetes: the training pod's share of a node (CPU-bound; the more cores, the
# shorter the run) and where its settings come from (deploy/k8s: the API's ConfigMap and Secret).
# Memory: the real sample's training peaked at 9.6 GB resident (`/usr/bin/time -v python -m
# models.train --data ../shared/data/rakuten`, 2026-12-04: the decoded photos at 280 px, the
# cached backbone activations the fine-tuning reads, TensorFlow), so the limit leaves room above it.
TRAIN_POD_RESOURCES = k8s.V1ResourceRequirements(
    requests={"cpu": "2", "memory": "10Gi"},
    limits={"cpu": "4", "memory": "14Gi"},
)
TRAIN_POD_ENV_FROM = [
    k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name="rakuten-config")),
    k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name="rakuten-secrets")),
]


def _settings():  # type: ignore[no-untyped-def]
    # Read when a task runs (never at parse time), fresh for each task.
    from config import Settings

    return Settings()


def _interval() -> tuple[datetime, datetime]:
    """The data interval this run snapshots, as plain UTC datetimes."""
    context = get_current_context()
    conf = context["dag_run"].conf or {}
    if conf.get("interval_end"):
        end = datetime.fromisoformat(str(conf["interval_end"]))
        start = end - timedelta(weeks=1)
    elif context.get("data_interval_start") and context.get("data_interval_end"):
        start, end = context["data_interval_start"], context["data_interval_end"]
    else:  # a manual run without a logical date: the week up to when it was asked for
        end = context["dag_run"].run_after
        start = end - timedelta(weeks=1)
    return (
        datetime.fromtimestamp(start.timestamp(), UTC),
        datetime.fromtimestamp(end.timestamp(), UTC),
    )


@dag(
    dag_id="rakuten_retrain",
    schedule=CronDataIntervalTimetable("0 3 * * 1", timezone="UTC"),
    start_date=datetime(2025, 1, 6, 3, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(hours=12),
    tags=["rakuten", "mlops", "retraining"],
    doc_md=__doc__,
)
def rakuten_retrain() -> None:
    @task
    def validate() -> dict[str, Any]:
        """Quarantine bad products; fail for good below MIN_TRAINING_ROWS usable ones."""
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.retrain import validate_step
        from pipelines.validate import InsufficientDataError

        try:
            return validate_step(_settings())
        except InsufficientDataError as exc:
            # Retrying cannot add products: fail now, with the reason in the task log.
            raise AirflowFailException(str(exc)) from exc

    @task
    def snapshot() -> dict[str, Any]:
        """Freeze the usable products in the data store, keyed by the data interval."""
        from pipelines.retrain import snapshot_step

        start, end = _interval()
        return snapshot_step(_settings(), start, end)

    @task.branch
    def where_to_train() -> str:
        """`train_pod` when TRAIN_MODE=kubernetes, else `train` (this worker, or Docker)."""
        settings = _settings()
        if settings.TRAIN_MODE != "kubernetes":
            return "train"
        get_current_context()["ti"].xcom_push(key="image", value=settings.TRAIN_IMAGE)
        return "train_pod"

    @task(execution_timeout=timedelta(hours=8))
    def train(snapshot: dict[str, Any]) -> dict[str, Any]:
        """Train a candidate bundle on the snapshot's train split."""
        from pipelines.retrain import train_step

        return train_step(_settings(), snapshot)

    # The pod runs the same step in the training image (`python -m pipelines.retrain train-step`);
    # it reads the stores' settings from the ConfigMap and Secret, not from this worker.
    train_pod = KubernetesPodOperator(
        task_id="train_pod",
        name="rakuten-train",
        image="{{ ti.xcom_pull(task_ids='where_to_train', key='image') }}",
        cmds=["python", "-m", "pipelines.retrain", "train-step"],
        arguments=["--snapshot-json", "{{ ti.xcom_pull(task_ids='snapshot') | tojson }}"],
        env_from=TRAIN_POD_ENV_FROM,
        container_resources=TRAIN_POD_RESOURCES,
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=10001, run_as_group=10001
        ),
        on_finish_action="delete_pod",
        get_logs=True,
        execution_timeout=timedelta(hours=8),
    )

    @task(trigger_rule="none_failed_min_one_success")
    def candidate(snapshot: dict[str, Any]) -> dict[str, Any]:
        """The candidate the training published (read back from the run folder)."""
        from pipelines.retrain import trained_candidate

        return trained_candidate(_settings(), snapshot)

    @task(execution_timeout=timedelta(hours=2))
    def evaluate(snapshot: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
        """Evaluate candidate and production on the same held-out products."""
        from pipelines.retrain import evaluate_step

        return evaluate_step(_settings(), snapshot, candidate)

    @task
    def gate(evaluation: dict[str, Any]) -> dict[str, Any]:
        """Decide whether the candidate replaces production."""
        from pipelines.retrain import gate_step

        return gate_step(_settings(), evaluation)

    @task
    def publish(candidate: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
        """Publish the candidate; promote it or record it as rejected."""
        from pipelines.retrain import publish_step

        return publish_step(_settings(), candidate, decision)

    @task(retries=0)
    def reload_api(published: dict[str, Any]) -> dict[str, Any]:
        """Ask the API to load the new production model (never fails the run)."""
        from pipelines.retrain import reload_step

        return reload_step(_settings(), published)

    frozen = snapshot()
    validate() >> frozen
    trainers = [train(frozen), train_pod]
    frozen >> where_to_train() >> trainers
    trained = candidate(frozen)
    trainers >> trained
    decision = gate(evaluate(frozen, trained))
    reload_api(publish(trained, decision))


rakuten_retrain()
