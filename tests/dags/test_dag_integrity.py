"""Every DAG file loads without error, and the DAGs are scheduled and guarded as documented."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest

pytest.importorskip("airflow.sdk", reason="needs the Airflow virtualenv: make test-airflow")

from tests.dags.conftest import DAGS_FOLDER, ROOT

pytestmark = pytest.mark.airflow


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=DAGS_FOLDER)


def test_every_dag_file_imports_without_error(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"rakuten_retrain", "rakuten_monitor"}


@pytest.mark.parametrize(
    ("dag_id", "cron"),
    [("rakuten_retrain", "0 3 * * 1"), ("rakuten_monitor", "0 2 * * *")],
)
def test_dags_are_scheduled_with_a_data_interval_and_guarded(dagbag, dag_id, cron):
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.dags[dag_id]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == cron
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert {"rakuten", "mlops"} <= set(dag.tags)
    assert dag.doc_md
    for task in dag.tasks:
        if task.task_id not in {"reload_api", "trigger_retrain"}:  # best-effort calls are not retried
            assert task.retries >= 1, task.task_id
            assert task.retry_delay >= timedelta(minutes=1), task.task_id


def test_the_retraining_dag_runs_its_steps_in_order(dagbag):
    dag = dagbag.dags["rakuten_retrain"]
    downstream = {task.task_id: set(task.downstream_task_ids) for task in dag.tasks}

    assert downstream == {
        "validate": {"snapshot"},
        "snapshot": {"where_to_train", "train", "candidate", "evaluate"},
        "where_to_train": {"train", "train_pod"},
        "train": {"candidate"},
        "train_pod": {"candidate"},
        "candidate": {"evaluate", "publish"},
        "evaluate": {"gate"},
        "gate": {"publish"},
        "publish": {"reload_api"},
        "reload_api": set(),
    }
    # Whichever trainer ran (the other is skipped by the branch), the candidate is read back.
    assert dag.get_task("candidate").trigger_rule == "none_failed_min_one_success"


def test_on_kubernetes_the_training_runs_in_a_pod_of_its_own_with_requests_and_limits(dagbag):
    pod = dagbag.dags["rakuten_retrain"].get_task("train_pod")
    resources = pod.container_resources
    assert resources.requests == {"cpu": "2", "memory": "10Gi"}
    assert resources.limits == {"cpu": "4", "memory": "14Gi"}
    assert pod.cmds == ["python", "-m", "pipelines.retrain", "train-step"]
    assert "where_to_train" in pod.image and pod.on_finish_action.value == "delete_pod"
    sources = {(e.config_map_ref or e.secret_ref).name for e in pod.env_from}
    assert sources == {"rakuten-config", "rakuten-secrets"}  # deploy/k8s: the API's settings


def test_the_monitoring_dag_triggers_a_retraining_only_behind_its_short_circuit(dagbag):
    dag = dagbag.dags["rakuten_monitor"]
    downstream = {task.task_id: set(task.downstream_task_ids) for task in dag.tasks}

    assert downstream == {
        "report": {"retrain_needed"},
        "retrain_needed": {"trigger_retrain"},
        "trigger_retrain": set(),
    }
    assert dag.get_task("trigger_retrain").trigger_dag_id == "rakuten_retrain"


def test_parsing_the_dag_files_imports_no_heavy_module():
    """Parse in a fresh interpreter: no TensorFlow, database, project code or numpy at parse time."""
    script = (
        "import sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS_FOLDER)!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "heavy = ['tensorflow', 'keras', 'numpy', 'PIL', 'boto3', 'psycopg2', 'config', 'db', 'models',"
        " 'pipelines', 'store']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_import_airflow_finds_the_package_not_the_repository_folder():
    result = subprocess.run(
        [sys.executable, "-c", "import airflow, airflow.sdk; print(airflow.__file__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert "site-packages" in result.stdout
    assert not (ROOT / "airflow" / "__init__.py").exists()
