"""Floating (PROVISIONAL) checkouts expire TTL minutes after checkout or the
last extension. Each test gets its own server and moves its test clock."""

from __future__ import annotations

import datetime as dt

from harness import (
    World,
    assert_close,
    checkout,
    consumed,
    counted,
    expect_error,
    parse_iso,
    provisional,
)

MIN = 60


def test_units_return_after_ttl(private_world: World):
    w = private_world
    arn, req = w.create_license(entitlements=[counted("Seats", 5)], consumption=provisional(60))
    sku, fp = req["ProductSKU"], w.fingerprint()
    out = checkout(w.c, sku, fp, value=5)
    expect_error("NoEntitlementsAllowedException", checkout, client=w.c, sku=sku, fp=fp)

    w.server.advance_clock(59 * MIN)
    assert consumed(w.v, arn) == "5", "returned before the TTL ran out"
    expect_error("NoEntitlementsAllowedException", checkout, client=w.c, sku=sku, fp=fp)

    now = w.server.advance_clock(2 * MIN)  # 61 minutes after checkout
    assert parse_iso(now["Now"]) > parse_iso(out["Expiration"])
    assert consumed(w.v, arn) == "0", "units not returned after expiry"
    again = checkout(w.c, sku, fp, value=5)
    assert again["EntitlementsAllowed"][0]["Value"] == "5"
    assert_close(parse_iso(again["IssuedAt"]), parse_iso(now["Now"]), 30, "IssuedAt follows the business clock")


def test_perpetual_never_expires(private_world: World):
    w = private_world
    arn, req = w.create_license(entitlements=[counted("Seats", 5)])
    checkout(w.c, req["ProductSKU"], w.fingerprint(), value=2, checkout_type="PERPETUAL")
    w.server.advance_clock(3 * 60 * MIN)
    assert consumed(w.v, arn) == "2"


def test_custom_ttl(private_world: World):
    w = private_world
    arn, req = w.create_license(consumption=provisional(10))
    out = checkout(w.c, req["ProductSKU"], w.fingerprint())
    assert parse_iso(out["Expiration"]) - parse_iso(out["IssuedAt"]) == dt.timedelta(minutes=10)
    w.server.advance_clock(9 * MIN)
    assert consumed(w.v, arn) == "1"
    w.server.advance_clock(2 * MIN)
    assert consumed(w.v, arn) == "0"


def test_extend_moves_expiration(private_world: World):
    w = private_world
    arn, req = w.create_license(consumption=provisional(60))
    out = checkout(w.c, req["ProductSKU"], w.fingerprint())
    t = out["LicenseConsumptionToken"]
    e0 = parse_iso(out["Expiration"])

    now = w.server.advance_clock(30 * MIN)
    ext = w.c.extend_license_consumption(LicenseConsumptionToken=t)
    assert ext["LicenseConsumptionToken"] == t
    e1 = parse_iso(ext["Expiration"])
    assert_close(e1, parse_iso(now["Now"]) + dt.timedelta(minutes=60), 30, "Expiration = now + TTL")
    assert dt.timedelta(minutes=29) < e1 - e0 < dt.timedelta(minutes=31), (e0, e1)

    w.server.advance_clock(31 * MIN)  # 61 minutes after checkout, 31 after the extension
    assert consumed(w.v, arn) == "1", "the extension was not honoured"
    w.server.advance_clock(30 * MIN)  # 61 after the extension
    assert consumed(w.v, arn) == "0"


def test_extend_dry_run_changes_nothing(private_world: World):
    w = private_world
    arn, req = w.create_license(consumption=provisional(60))
    out = checkout(w.c, req["ProductSKU"], w.fingerprint())
    t = out["LicenseConsumptionToken"]
    w.server.advance_clock(30 * MIN)
    w.c.extend_license_consumption(LicenseConsumptionToken=t, DryRun=True)
    w.server.advance_clock(31 * MIN)
    assert consumed(w.v, arn) == "0", "a DryRun extension moved the expiry"


def test_expired_token_cannot_be_extended_back(private_world: World):
    w = private_world
    arn, req = w.create_license(entitlements=[counted("Seats", 1)], consumption=provisional(60))
    out = checkout(w.c, req["ProductSKU"], w.fingerprint())
    w.server.advance_clock(61 * MIN)
    other = checkout(w.c, req["ProductSKU"], w.fingerprint())  # takes the only seat
    try:
        w.c.extend_license_consumption(LicenseConsumptionToken=out["LicenseConsumptionToken"])
    except Exception:  # noqa: BLE001 - refusing is the right answer
        pass
    assert consumed(w.v, arn) == "1", "extending an expired checkout must not draw the seat again"
    assert other["LicenseConsumptionToken"] != out["LicenseConsumptionToken"]


def test_expiry_survives_restart(private_world: World):
    w = private_world
    arn, req = w.create_license(entitlements=[counted("Seats", 3)], consumption=provisional(60))
    sku, fp = req["ProductSKU"], w.fingerprint()
    checkout(w.c, sku, fp, value=3)

    w.server.kill9()
    w.server.start()  # the clock offset is back to zero
    w.refresh_clients()
    assert consumed(w.v, arn) == "3"
    expect_error("NoEntitlementsAllowedException", checkout, client=w.c, sku=sku, fp=fp)

    w.server.advance_clock(61 * MIN)
    assert consumed(w.v, arn) == "0"
    checkout(w.c, sku, fp, value=3)
    assert consumed(w.v, arn) == "3"
