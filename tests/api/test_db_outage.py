"""The API under load while its own Postgres is stopped, restarted and down at SIGTERM.

Runs `benchmarks.db_outage` (a private cluster on a free port, never the shared server) and
checks what the service promises: every answered request is in `prediction_logs` or in the
spill/dead-letter files, no answer is a 500, and nothing blocks `/health`.
"""

from __future__ import annotations

import json
import shutil
import signal

import pytest

from benchmarks.db_outage import postgres_bin, run
from tests.deploy.helpers import missing

pytestmark = pytest.mark.slow


@pytest.fixture
def server_binaries():
    try:
        postgres_bin()
    except FileNotFoundError:
        missing("PostgreSQL server binaries (apt-get install postgresql)")
    if shutil.which("runuser") is None:
        missing("runuser (util-linux)")


def test_no_answered_request_is_lost_through_an_outage_and_a_shutdown(
    server_binaries, quick_bundle, tmp_path
):
    figures = run(quick_bundle, outage=5.0, work_dir=tmp_path)  # long enough to fill the small queue
    print(json.dumps(figures, indent=2))
    assert figures["requests_answered"] > 100
    assert figures["rows_lost"] == 0, figures
    assert figures["rows_spilled"] > 0  # the small queue filled during the outage
    assert "500" not in figures["answered_by_status"], figures
    assert figures["answered_by_status"].get("200", 0) > 100
    assert figures["health_max_seconds"] < 1.0, figures
    assert figures["health_failures"] == 0, figures
    assert figures["api_exit_code"] in (0, -signal.SIGTERM), figures
    assert figures["api_tracebacks"] == 0
