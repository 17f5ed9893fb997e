"""The `tessera` command line and the server's own endpoints: configuration
from the environment, the test clock switch, accounts and keys."""

from __future__ import annotations

import json

import requests

from harness import ACCOUNT_RE, parse_iso


def test_config_from_environment_and_test_clock(make_server):
    s = make_server(config_from_env=True, test_clock=True)
    if s.database_url is None:
        # With a database URL there is nothing to keep in the data directory.
        assert (s.data_dir).is_dir(), "serve must create its data directory"
    first = s.advance_clock(60)
    assert first["OffsetSeconds"] == 60
    second = s.advance_clock(90)
    assert second["OffsetSeconds"] == 150, "advances are cumulative"
    gap = (parse_iso(second["Now"]) - parse_iso(first["Now"])).total_seconds()
    assert 89 <= gap <= 120, gap


def test_test_clock_is_off_without_the_flag(make_server):
    s = make_server(test_clock=False)
    r = requests.post(s.url + "/_tessera/test/clock", json={"AdvanceSeconds": 60}, timeout=5)
    assert r.status_code == 404


def test_test_clock_resets_at_restart(make_server):
    s = make_server()
    assert s.advance_clock(3600)["OffsetSeconds"] == 3600
    s.restart(hard=False)
    assert s.advance_clock(1)["OffsetSeconds"] == 1


def test_account_list(world):
    cp = world.server.cli("account", "list", "--data-dir", str(world.server.data_dir), "--output", "json")
    accounts = json.loads(cp.stdout)
    assert isinstance(accounts, list)
    by_id = {a["AccountId"]: a for a in accounts}
    for acct in (world.vendor, world.customer, world.stranger):
        assert acct.account_id in by_id, f"{acct.name} missing from account list"
        assert by_id[acct.account_id]["Name"] == acct.name
        parse_iso(by_id[acct.account_id]["CreatedAt"])
    assert all(ACCOUNT_RE.match(a) for a in by_id)
    assert len({world.vendor.account_id, world.customer.account_id, world.stranger.account_id}) == 3


def test_jwks_is_public(world):
    r = requests.get(world.server.url + "/.well-known/jwks.json", timeout=5)
    assert r.status_code == 200
    keys = r.json()["keys"]
    assert keys and all(k.get("kid") for k in keys)
    assert any(k.get("kty") == "OKP" and k.get("crv") == "Ed25519" for k in keys), keys
