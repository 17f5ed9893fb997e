"""A customer who deletes the agent's data directory does not get a new
trial where the agent can see its earlier install: through the vendor's
server (which keeps each environment's first install and trial start) or
through the ops bucket (the install record, the vendor's product key)."""

from __future__ import annotations

import json
import shutil

from harness import TesseraServer
from test_byoc_journey import DAY, Agent


def _with_server(agent: Agent, customer) -> tuple[str, ...]:
    return ("--server-url", agent.server.url, "--access-key-id", customer.access_key_id,
            "--secret-access-key", customer.secret_access_key, "--server-poll-seconds", "1")


def test_a_wiped_agent_with_a_server_continues_its_install_and_trial(tmp_path):
    server = TesseraServer(tmp_path / "vendor", tmp_path / "vendor.log").start()
    try:
        customer = server.create_account("customer")
        agent = Agent(tmp_path, "env-wipe", tmp_path / "ops", server)
        agent.start(*_with_server(agent, customer))
        first = agent.settings()
        assert first["licenseState"] == "TRIAL", first
        assert "no new trial starts" not in agent.log.read_text(), "a first install is not a continued one"
        agent.advance(15 * DAY)
        assert agent.settings()["licenseState"] == "EXPIRED"
        agent.kill9()
        # Everything the customer controls is wiped: the data directory and the ops bucket.
        shutil.rmtree(agent.dir)
        shutil.rmtree(tmp_path / "ops")
        agent.start(*_with_server(agent, customer))
        again = agent.settings()
        assert again["installId"] == first["installId"], (first, again)
        assert again["expiresAt"] == first["expiresAt"], "the trial is the first one, not a new one"
        agent.advance(15 * DAY)
        assert agent.settings()["licenseState"] == "EXPIRED"
        r = agent.reserve("after-wipe", 1)
        assert r.status_code == 403 and r.json()["code"] == "Instance.NoAvailableSubscription", r.text
        log = agent.log.read_text()
        assert "no new trial starts" in log and "the server" in log
        # Another environment of the same customer is a new install with its own trial.
        other = Agent(tmp_path, "env-other", tmp_path / "ops-other", server)
        other.start(*_with_server(other, customer))
        assert other.settings()["licenseState"] == "TRIAL"
        assert other.settings()["installId"] != first["installId"]
        other.kill9()
    finally:
        agent.kill9()
        server.stop()


def test_a_wiped_agent_with_an_ops_bucket_continues_its_trial(tmp_path):
    server = TesseraServer(tmp_path / "vendor", tmp_path / "vendor.log").start()
    agent = Agent(tmp_path, "env-bucket", tmp_path / "ops", server)
    try:
        agent.start()
        first = agent.settings()
        record = json.loads((tmp_path / "ops" / "tessera" / "installs" / "env-bucket.json").read_text())
        assert record["installId"] == first["installId"], record
        agent.kill9()
        (agent.dir / "state.json").unlink()
        agent.start()
        assert agent.settings()["installId"] == first["installId"]
        assert agent.settings()["expiresAt"] == first["expiresAt"]
    finally:
        agent.kill9()
        server.stop()
