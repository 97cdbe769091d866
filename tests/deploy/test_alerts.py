"""The Prometheus alerting rules: valid (`promtool check rules`) and doing what they say (`promtool test rules`)."""

from __future__ import annotations

import subprocess

import yaml

from tests.deploy.helpers import ROOT, find_binary

ALERTS = ROOT / "deploy" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "alerts.test.yml"
EXPECTED = {
    "MonitoringReportFlagged",
    "MonitoringWentQuiet",
    "CandidateRejected",
    "PredictionLogQueueGrowing",
    "High5xxRate",
}


def test_every_promised_alert_exists_and_prometheus_loads_the_file():
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]

    assert {rule["alert"] for rule in rules} == EXPECTED
    assert (
        "/etc/prometheus/alerts.yml"
        in yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())["rule_files"]
    )
    assert "./deploy/alerts.yml:/etc/prometheus/alerts.yml:ro" in (ROOT / "docker-compose.yml").read_text()


def test_the_rules_pass_promtool_check():
    result = subprocess.run(
        [find_binary("promtool"), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED)} rules found" in result.stdout


def test_every_alert_is_unit_tested_and_the_tests_pass():
    tested = {
        case["alertname"]
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    result = subprocess.run(
        [find_binary("promtool"), "test", "rules", str(ALERT_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ALERT_TESTS.parent,
    )

    assert tested == EXPECTED
    assert result.returncode == 0, result.stdout + result.stderr
