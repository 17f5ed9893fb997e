"""No secret reaches a log: not a database password, not an access key's
secret, not an agent's credentials for the server, even at debug level."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from harness import TesseraServer, World, checkout, clean_env, create_database, new_sku, on_postgres
from test_byoc_journey import Agent

PASSWORD = "pw-never-logged-7f3a9c"


def _with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    user_host = rest.split("@", 1)
    if len(user_host) == 1:
        return url
    user = user_host[0].split(":", 1)[0]
    return f"{scheme}://{user}:{PASSWORD}@{user_host[1]}"


@pytest.fixture
def debug_logs(monkeypatch):
    monkeypatch.setenv("TESSERA_CONFORMANCE_SERVER_LOG", "debug")


def test_no_secret_is_logged_even_at_debug_level(tmp_path, debug_logs):
    database_url = None
    if on_postgres():
        # Trust authentication ignores the password, so any will do for the test.
        database_url = _with_password(create_database())
        assert PASSWORD in database_url
    server = TesseraServer(tmp_path / "data", tmp_path / "server.log", database_url=database_url).start()
    try:
        w = World(server, tag="secrets")
        sku = new_sku("secrets")
        w.create_license(sku=sku)
        out = checkout(w.c, sku, w.fingerprint())
        w.c.check_in_license(LicenseConsumptionToken=out["LicenseConsumptionToken"])
        # A request signed with a wrong secret.
        with pytest.raises(ClientError):
            server.client(w.customer, secret="wrong-" + w.customer.secret_access_key).list_received_licenses()
        agent = Agent(tmp_path, "env-secrets", tmp_path / "ops", server)
        agent.start("--server-url", server.url, "--access-key-id", w.customer.access_key_id,
                    "--secret-access-key", w.customer.secret_access_key, "--server-poll-seconds", "1")
        agent.settings()
        agent.kill9()
        cli = server.cli("account", "list", "--data-dir", str(server.data_dir), env=clean_env({"TESSERA_LOG": "debug"}))
    finally:
        server.stop()
    secrets = [w.vendor.secret_access_key, w.customer.secret_access_key, w.stranger.secret_access_key]
    if database_url:
        secrets.append(PASSWORD)
    logs = {"server": server.log_path.read_text(errors="replace"),
            "agent": agent.log.read_text(errors="replace"),
            "cli": cli.stdout + cli.stderr}
    assert len(logs["server"]) > 2000, "the debug log is not on"
    for name, text in logs.items():
        for s in secrets:
            assert s not in text, f"a secret appears in the {name} log"
