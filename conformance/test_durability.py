"""Acknowledged writes survive kill -9: usage, tokens, licenses and keys."""

from __future__ import annotations

from harness import World, checkout, consumed, counted, expect_error, parse_iso, version_request


def test_checkouts_survive_kill_9(private_world: World):
    w = private_world
    arn, req = w.create_license(entitlements=[counted("Seats", 10)])
    sku, fp = req["ProductSKU"], w.fingerprint()
    floating = [checkout(w.c, sku, fp, value=1) for _ in range(3)]
    perpetual = [checkout(w.c, sku, fp, value=1, checkout_type="PERPETUAL") for _ in range(2)]
    assert consumed(w.v, arn) == "5"
    expirations = {o["LicenseConsumptionToken"]: o["Expiration"] for o in floating}

    w.server.kill9()
    w.server.start()
    w.refresh_clients()

    assert w.v.get_license(LicenseArn=arn)["License"]["ProductSKU"] == sku
    assert consumed(w.v, arn) == "5"
    # the floating tokens are still live and can be extended and checked in
    t0 = floating[0]["LicenseConsumptionToken"]
    ext = w.c.extend_license_consumption(LicenseConsumptionToken=t0)
    assert parse_iso(ext["Expiration"]) >= parse_iso(expirations[t0])
    for o in floating:
        w.c.check_in_license(LicenseConsumptionToken=o["LicenseConsumptionToken"])
    assert consumed(w.v, arn) == "2"
    expect_error("ConflictException", w.c.check_in_license, LicenseConsumptionToken=t0)
    # perpetual stays drawn
    for o in perpetual:
        expect_error("ValidationException", w.c.check_in_license, LicenseConsumptionToken=o["LicenseConsumptionToken"])
    assert consumed(w.v, arn) == "2"


def test_idempotency_survives_kill_9(private_world: World):
    w = private_world
    arn, req = w.create_license(entitlements=[counted("Seats", 10)])
    first = checkout(w.c, req["ProductSKU"], w.fingerprint(), value=2, ClientToken="replay-after-crash")
    w.server.kill9()
    w.server.start()
    w.refresh_clients()
    again = checkout(w.c, req["ProductSKU"], w.fingerprint(), value=2, ClientToken="replay-after-crash")
    assert again["LicenseConsumptionToken"] == first["LicenseConsumptionToken"]
    assert consumed(w.v, arn) == "2"
    # a license created before the crash is replayed by its ClientToken too
    assert w.v.create_license(**req)["LicenseArn"] == arn


def test_accounts_and_versions_survive_restart(private_world: World):
    w = private_world
    arn, req = w.create_license(name="before")
    w.v.create_license_version(**version_request(arn, req, source_version="1", LicenseName="after"))
    w.server.kill9()
    w.server.start()
    w.refresh_clients()
    assert w.v.get_license(LicenseArn=arn)["License"]["LicenseName"] == "after"
    assert w.v.get_license(LicenseArn=arn, Version="1")["License"]["LicenseName"] == "before"
    got = w.c.list_received_licenses()["Licenses"]
    assert arn in [g["LicenseArn"] for g in got]
