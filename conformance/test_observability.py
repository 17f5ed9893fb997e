"""What operators see: the access line of every request (text and JSON), the
cause of a failure under the request's ID, /metrics parsed by a real
Prometheus parser on the server and the agent, and readiness."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from harness import TesseraServer, World, checkout, counted, new_sku
from test_byoc_journey import Agent

ANSI = re.compile(r"\x1b\[")


def scrape(url: str) -> dict:
    """The families of `url`/metrics, by name; every one must carry HELP."""
    r = requests.get(url + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name, f in families.items():
        assert f.documentation, f"{name} has no # HELP"
        assert name.startswith("tessera_"), name
    return families


def sample(families: dict, family: str, suffix: str = "", **labels) -> float:
    """The value of the one sample of `family` with these labels (0 if none)."""
    total = 0.0
    for s in families[family].samples if family in families else []:
        if s.name == family + suffix and all(s.labels.get(k) == v for k, v in labels.items()):
            total += s.value
    return total


def access_lines(path) -> list[dict]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("target") == "tessera::access":
                lines.append(event)
    return lines


@pytest.fixture
def json_server(tmp_path):
    server = TesseraServer(tmp_path / "data", tmp_path / "server.log",
                           extra_args=["--log-format", "json"]).start()
    yield server
    server.stop()


def test_every_request_has_one_access_line_with_the_id_the_client_got(json_server):
    w = World(json_server, tag="access")
    sku = new_sku("access")
    w.create_license(sku=sku, entitlements=[counted(max_count=1)])
    out = w.c.checkout_license(ProductSKU=sku, CheckoutType="PROVISIONAL",
                               KeyFingerprint=w.fingerprint(), ClientToken="access-1",
                               Entitlements=[{"Name": "Seats", "Value": "1", "Unit": "Count"}])
    granted_id = out["ResponseMetadata"]["RequestId"]
    with pytest.raises(ClientError) as refused:
        w.c.checkout_license(ProductSKU=sku, CheckoutType="PROVISIONAL",
                             KeyFingerprint=w.fingerprint(), ClientToken="access-2",
                             Entitlements=[{"Name": "Seats", "Value": "1", "Unit": "Count"}])
    refused_id = refused.value.response["ResponseMetadata"]["RequestId"]
    refused_kind = refused.value.response["Error"]["Code"]
    lines = access_lines(json_server.log_path)
    by_id = {l["request_id"]: l for l in lines}
    assert len(by_id) == len(lines), "a request ID appears on two access lines"
    ok = by_id[granted_id]
    assert ok["level"] == "INFO"
    assert ok["operation"] == "CheckoutLicense"
    assert ok["status"] == 200 and ok["outcome"] == "ok"
    assert ok["account_id"] == w.customer.account_id
    assert ok["access_key_id"] == w.customer.access_key_id
    assert isinstance(ok["latency_ms"], (int, float)) and ok["latency_ms"] >= 0
    bad = by_id[refused_id]
    assert bad["status"] == 400 and bad["outcome"] == refused_kind
    for line in lines:
        assert set(line) >= {"timestamp", "level", "target", "message", "request_id", "operation",
                             "status", "outcome", "latency_ms", "account_id", "access_key_id"}
    text = json_server.log_path.read_text()
    for account in (w.vendor, w.customer, w.stranger):
        assert account.secret_access_key not in text
    assert not ANSI.search(text), "colour codes in a log file"


def test_text_logs_to_a_file_carry_no_colour(tmp_path):
    server = TesseraServer(tmp_path / "data", tmp_path / "server.log").start()
    try:
        World(server, tag="text").c.list_licenses()
    finally:
        server.stop()
    text = server.log_path.read_text()
    assert "tessera::access" in text and "operation=\"ListLicenses\"" in text
    assert not ANSI.search(text), "colour codes in a log file"


def test_server_metrics_count_requests_checkouts_and_the_store(json_server):
    w = World(json_server, tag="metrics")
    sku = new_sku("metrics")
    w.create_license(sku=sku, entitlements=[counted(max_count=2)])
    before = scrape(json_server.url)
    for i in range(2):
        checkout(w.c, sku, w.fingerprint())
    with pytest.raises(ClientError):
        checkout(w.c, sku, w.fingerprint())
    m = scrape(json_server.url)
    granted = sample(m, "tessera_checkouts", "_total", result="granted", reason="none") \
        - sample(before, "tessera_checkouts", "_total", result="granted", reason="none")
    refused = sample(m, "tessera_checkouts", "_total", result="refused")
    assert granted == 2 and refused == 1
    ok = sample(m, "tessera_requests", "_total", operation="CheckoutLicense", outcome="ok")
    assert ok >= 2
    assert sample(m, "tessera_request_duration_seconds", "_count", operation="CheckoutLicense") >= 3
    assert sample(m, "tessera_store_commit_batch_size", "_count") >= 1
    assert sample(m, "tessera_store_commit_duration_seconds", "_count", phase="commit") >= 1
    assert sample(m, "tessera_build_info", version=m["tessera_build_info"].samples[0].labels["version"]) == 1
    assert sample(m, "tessera_issuer_keys") >= 1
    assert "tessera_consumptions_live" in m and "tessera_store_pool_connections_in_use" in m
    # Labels stay bounded: no account IDs, ARNs or access keys.
    text = requests.get(json_server.url + "/metrics", timeout=10).text
    for secretish in (w.customer.account_id, w.vendor.account_id, "arn:aws", w.customer.access_key_id):
        assert secretish not in text


def test_readiness_names_its_checks(json_server):
    r = requests.get(json_server.url + "/readyz", timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert body["checks"]["store"] == "ok" and body["checks"]["reaper"] == "ok"
    assert body["checks"]["startupCheck"]


def test_agent_metrics_readiness_and_logged_refusals(tmp_path, json_server):
    agent = Agent(tmp_path, "env-observe", tmp_path / "ops", json_server)
    agent.start("--log-format", "json")
    assert agent.reserve("i-1", 10).status_code in (200, 201)
    refused = agent.reserve("i-2", 10)
    assert refused.status_code == 403
    assert agent.activate("not-a-key").status_code == 400
    ready = requests.get(agent.url + "/readyz", timeout=10)
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True and body["stateWritable"] is True
    assert body["license"]["state"] == "TRIAL" and body["license"]["valid"] is True
    m = scrape(agent.url)
    assert sample(m, "tessera_agent_aku_allowed") == 14
    assert sample(m, "tessera_agent_aku_reserved") == 10
    assert sample(m, "tessera_agent_aku_available") == 4
    assert sample(m, "tessera_agent_trial") == 1
    assert sample(m, "tessera_agent_license_state", state="TRIAL") == 1
    assert sample(m, "tessera_agent_license_state", state="ACTIVE") == 0
    assert 13 * 86400 < sample(m, "tessera_agent_license_expiry_seconds") <= 14 * 86400
    assert sample(m, "tessera_agent_reservations_refused", "_total") == 1
    assert sample(m, "tessera_agent_polls", "_total", source="bucket", outcome="ok") >= 1
    assert sample(m, "tessera_agent_last_poll_success_timestamp_seconds", source="bucket") > 1.7e9
    assert sample(m, "tessera_requests", "_total", operation="POST /v1/instances", outcome="ok") == 1
    assert sample(m, "tessera_requests", "_total", operation="POST /v1/instances",
                  outcome="Instance.NoAvailableSubscription") == 1
    agent.kill9()
    events = [json.loads(l) for l in agent.log.read_text().splitlines() if l.startswith("{")]
    refusals = [e for e in events if "refused an AKU reservation" in e.get("message", "")]
    assert len(refusals) == 1
    assert (refusals[0]["requested"], refusals[0]["reserved"], refusals[0]["allowed"]) == (10, 10, 14)
    keys = [e for e in events if "refused a product key" in e.get("message", "")]
    assert len(keys) == 1 and keys[0]["reason"] == "MALFORMED"
    assert len([e for e in events if e.get("target") == "tessera::access" and e["level"] == "INFO"]) >= 4


def test_a_failed_server_call_names_its_cause(tmp_path, json_server):
    agent = Agent(tmp_path, "env-unreachable", tmp_path / "ops", json_server)
    # A port nobody listens on.
    agent.start("--server-url", "http://127.0.0.1:9", "--access-key-id", "AKIAUNREACHABLE",
                "--secret-access-key", "never-used-secret", "--server-poll-seconds", "1",
                "--log-format", "json")
    try:
        deadline = time.time() + 15
        while time.time() < deadline and "onnection refused" not in agent.log.read_text():
            time.sleep(0.2)
    finally:
        agent.kill9()
    assert "onnection refused" in agent.log.read_text(), agent.log.read_text()[-2000:]


PROM = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"


def test_the_shipped_alert_rules_check_and_pass_their_unit_tests():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (.ci/run installs it)")
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"],
                 ["test", "rules", "alerts_test.yml"]):
        cp = subprocess.run([promtool, *args], cwd=PROM, capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0, cp.stdout + cp.stderr


def test_every_metric_the_alerts_use_is_exported(tmp_path, json_server):
    agent = Agent(tmp_path, "env-alerts", tmp_path / "ops", json_server)
    agent.start()
    try:
        w = World(json_server, tag="alerts")
        sku = new_sku("alerts")
        w.create_license(sku=sku, entitlements=[counted(max_count=1)])
        checkout(w.c, sku, w.fingerprint())
        requests.get(json_server.url + "/readyz", timeout=10)
        time.sleep(1.5)  # one bucket poll
        exported = set(scrape(json_server.url)) | set(scrape(agent.url))
    finally:
        agent.kill9()
    rules = (PROM / "alerts.yml").read_text()
    used = set(re.findall(r"\b(tessera_[a-z_]+)", rules))
    assert used, "the rules name no Tessera metric"
    # The parser names counters without _total.
    missing = {m for m in used if m not in exported and m.removesuffix("_total") not in exported}
    assert not missing, f"alerts use metrics nobody exports: {missing}"
