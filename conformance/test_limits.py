"""Quantities that cannot be counted are refused, never granted and never a 500:
entitlement values, MaxCount and every other number a request carries. A
hostile request is answered alone; it never slows or fails the writes of other
clients that share its batch."""

from __future__ import annotations

import base64
import json
import threading

import pytest
from botocore.exceptions import ClientError

from harness import (checkout, consumed, counted, create_license, expect_error, expect_validation,
                     license_request, new_sku, signed_post, token, TARGET_PREFIX, utcnow)

MAX_UNITS = 9007199254740991  # 2^53 - 1: the largest quantity Tessera counts
I64_MAX = 9223372036854775807


@pytest.fixture(scope="module")
def raw(world):
    """Clients without botocore's own parameter validation."""
    return world.server.client(world.vendor, validate=False), world.server.client(world.customer, validate=False)


def _full_license(world, seats: int = 10, overage: bool = False):
    sku = new_sku("limit")
    arn, _ = world.create_license(sku=sku, entitlements=[counted("Seats", seats, overage=overage)])
    for _ in range(seats):
        checkout(world.c, sku, world.fingerprint())
    assert consumed(world.v, arn) == str(seats)
    return sku, arn


def test_a_huge_value_cannot_pass_a_full_license(world):
    sku, arn = _full_license(world)
    for value in (I64_MAX, MAX_UNITS + 1, 2**64, 10**30):
        resp = expect_validation(checkout, "Entitlements[0].Value", client=world.c, sku=sku,
                                 fp=world.fingerprint(), value=value)
        assert str(MAX_UNITS) in resp["Error"]["Message"], resp["Error"]
    assert consumed(world.v, arn) == "10"
    # The license stays full: no wrapped counter lets further seats through.
    for _ in range(10):
        expect_error("NoEntitlementsAllowedException", checkout, client=world.c, sku=sku, fp=world.fingerprint())
    assert consumed(world.v, arn) == "10"


def test_the_largest_countable_value_is_refused_by_the_limit(world):
    sku, arn = _full_license(world, seats=10)
    resp = expect_error("NoEntitlementsAllowedException", checkout, client=world.c, sku=sku,
                        fp=world.fingerprint(), value=MAX_UNITS)
    assert "exhausted" in resp["Error"]["Message"], resp["Error"]
    assert consumed(world.v, arn) == "10"


def test_overage_counts_up_to_the_largest_quantity_and_no_further(world):
    sku = new_sku("overage")
    arn, _ = world.create_license(sku=sku, entitlements=[counted("Seats", 10, overage=True)])
    big = checkout(world.c, sku, world.fingerprint(), value=MAX_UNITS)
    assert big["EntitlementsAllowed"][0]["Value"] == str(MAX_UNITS)
    assert consumed(world.v, arn) == str(MAX_UNITS)
    resp = expect_error("NoEntitlementsAllowedException", checkout, client=world.c, sku=sku, fp=world.fingerprint())
    assert str(MAX_UNITS) in resp["Error"]["Message"] and "cannot count more" in resp["Error"]["Message"], resp
    assert consumed(world.v, arn) == str(MAX_UNITS)
    world.c.check_in_license(LicenseConsumptionToken=big["LicenseConsumptionToken"])
    assert consumed(world.v, arn) == "0"


def _payload(jws: str) -> dict:
    part = jws.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


@pytest.mark.parametrize("given", ["+1", "01", "001", " 1 "])
def test_values_are_normalised_in_the_answer_and_the_signed_token(world, given):
    sku = new_sku("norm")
    arn, _ = world.create_license(sku=sku)
    out = checkout(world.c, sku, world.fingerprint(), entitlements=[{"Name": "Seats", "Value": given, "Unit": "Count"}])
    assert out["EntitlementsAllowed"] == [{"Name": "Seats", "Value": "1", "Unit": "Count"}]
    claims = _payload(out["SignedToken"])
    assert claims["entitlementsAllowed"] == [{"name": "Seats", "unit": "Count", "value": "1"}], claims
    assert consumed(world.v, arn) == "1"


@pytest.mark.parametrize("value", ["0", "000", "-1", "1.5", "1e3", "0x10", "", "one"])
def test_values_that_are_not_a_positive_count_are_refused(world, value):
    sku = new_sku("bad-value")
    arn, _ = world.create_license(sku=sku)
    expect_validation(checkout, "Entitlements[0].Value", client=world.c, sku=sku, fp=world.fingerprint(),
                      entitlements=[{"Name": "Seats", "Value": value, "Unit": "Count"}])
    assert consumed(world.v, arn) == "0"


@pytest.mark.parametrize("max_count", [MAX_UNITS + 1, I64_MAX, 2**64, 10**30, -1])
def test_max_count_beyond_what_can_be_counted_is_refused(world, raw, max_count):
    vraw, _ = raw
    resp = expect_validation(vraw.create_license, "Entitlements[0].MaxCount",
                             **license_request(beneficiary=world.customer.account_id,
                                               entitlements=[counted("Seats", max_count)]))
    assert str(MAX_UNITS) in resp["Error"]["Message"], resp["Error"]


def test_the_largest_max_count_is_accepted(world):
    sku = new_sku("max")
    arn, _ = world.create_license(sku=sku, entitlements=[counted("Seats", MAX_UNITS)])
    checkout(world.c, sku, world.fingerprint(), value=MAX_UNITS)
    assert consumed(world.v, arn) == str(MAX_UNITS)


@pytest.mark.parametrize("value", [2**63, 2**64, 10**30, 1.5])
def test_other_numbers_out_of_range_name_their_field(world, raw, value):
    vraw, craw = raw
    expect_validation(vraw.list_licenses, "MaxResults", MaxResults=value)
    expect_validation(vraw.create_license, "MaxTimeToLiveInMinutes",
                      **license_request(beneficiary=world.customer.account_id,
                                        consumption={"RenewType": "None",
                                                     "ProvisionalConfiguration": {"MaxTimeToLiveInMinutes": value}}))
    arn, _ = world.create_license()
    expect_validation(craw.create_token, "ExpirationInDays", LicenseArn=arn, ExpirationInDays=value,
                      ClientToken=token())


def test_nul_characters_are_refused_before_they_reach_the_store(world, raw):
    _, craw = raw
    sku = new_sku("nul")
    arn, _ = world.create_license(sku=sku)
    for field, kw in [("ClientToken", {"ClientToken": "a\x00b"}), ("NodeId", {"NodeId": "n\x00"}),
                      ("Beneficiary", {"Beneficiary": "x\x00"})]:
        expect_validation(checkout, field, client=craw, sku=sku, fp=world.fingerprint(), **kw)
    expect_validation(checkout, "ProductSKU", client=craw, sku=sku + "\x00", fp=world.fingerprint())
    assert consumed(world.v, arn) == "0"


def test_hostile_requests_never_disturb_the_writes_they_share_a_batch_with(private_world):
    """Many clients check out and in while others send values that cannot be
    counted, NUL characters and nonsense: every honest write succeeds, every
    hostile one gets a 400, and no write batch fails."""
    w = private_world
    server = w.server
    sku = new_sku("shared")
    arn, _ = w.create_license(sku=sku, entitlements=[counted("Seats", 1000, overage=False)])
    fp = w.fingerprint()
    errors: list = []
    honest_ok = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def honest():
        c = server.client(w.customer)
        try:
            for _ in range(15):
                out = checkout(c, sku, fp)
                c.check_in_license(LicenseConsumptionToken=out["LicenseConsumptionToken"])
                with lock:
                    honest_ok[0] += 1
        except Exception as e:  # noqa: BLE001 - every failure is reported
            errors.append(f"honest: {e!r}")

    bodies = [
        {"Entitlements": [{"Name": "Seats", "Value": str(I64_MAX), "Unit": "Count"}]},
        {"Entitlements": [{"Name": "Seats", "Value": str(MAX_UNITS + 1), "Unit": "Count"}]},
        {"Entitlements": [{"Name": "Seats", "Value": "1", "Unit": "Count"}], "NodeId": "a\u0000b"},
        {"Entitlements": [{"Name": "Seats", "Value": "1", "Unit": "Count"}], "ClientToken": "t\u0000"},
        {"Entitlements": [{"Name": "Seats", "Value": "1\u0000", "Unit": "Count"}]},
    ]

    def hostile(i: int):
        n = 0
        while not stop.is_set():
            body = {"ProductSKU": sku, "CheckoutType": "PROVISIONAL", "KeyFingerprint": fp, "ClientToken": token()}
            body.update(bodies[(i + n) % len(bodies)])
            n += 1
            r = signed_post(server.url, TARGET_PREFIX + "CheckoutLicense", json.dumps(body).encode(),
                            access_key_id=w.customer.access_key_id, secret=w.customer.secret_access_key)
            if r.status_code != 400:
                errors.append(f"hostile {body}: HTTP {r.status_code} {r.text[:200]}")

    honest_threads = [threading.Thread(target=honest) for _ in range(16)]
    hostile_threads = [threading.Thread(target=hostile, args=(i,)) for i in range(4)]
    for t in hostile_threads + honest_threads:
        t.start()
    for t in honest_threads:
        t.join(120)
    stop.set()
    for t in hostile_threads:
        t.join(30)
    assert not errors, errors[:5]
    assert honest_ok[0] == 16 * 15
    assert consumed(w.v, arn) == "0"
    log = server.log_path.read_text(errors="replace")
    for sign in ("a write batch failed", "a database write panicked", "panicked"):
        assert sign not in log, f"the server log shows {sign!r}:\n{server.log_tail(20)}"


def test_validity_has_a_minute_of_leeway_for_clocks(world):
    """The seller guide's script writes Begin with fractional seconds equal to
    the seconds field (up to a second ahead); a checkout right after must work.
    Clocks may disagree by up to 60 s either way; beyond that, the window holds."""
    import datetime as dt

    from harness import utcnow

    def license_from(begin, end):
        sku = new_sku("leeway")
        world.create_license(sku=sku, begin=begin, end=end)
        return sku

    now = utcnow()
    # The script's own form: 2026-11-22T01:02:59.59Z is 590 ms ahead of 01:02:59.
    seed_style = (now + dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%SZ")
    checkout(world.c, license_from(seed_style, now + dt.timedelta(days=10)), world.fingerprint())
    checkout(world.c, license_from(now + dt.timedelta(seconds=40), now + dt.timedelta(days=1)), world.fingerprint())
    checkout(world.c, license_from(now - dt.timedelta(days=1), now - dt.timedelta(seconds=20)), world.fingerprint())
    resp = expect_error("NoEntitlementsAllowedException", checkout, client=world.c,
                        sku=license_from(now + dt.timedelta(minutes=5), now + dt.timedelta(days=1)),
                        fp=world.fingerprint())
    assert "not valid until" in resp["Error"]["Message"], resp["Error"]
    resp = expect_error("NoEntitlementsAllowedException", checkout, client=world.c,
                        sku=license_from(now - dt.timedelta(days=1), now - dt.timedelta(minutes=5)),
                        fp=world.fingerprint())
    assert "expired" in resp["Error"]["Message"], resp["Error"]


def test_a_license_valid_to_the_end_of_the_calendar_is_usable(world):
    """A common way to write "never expires"; the validity leeway must not overflow past it."""
    sku = new_sku("forever")
    arn, _ = world.create_license(sku=sku, end="9999-12-31T23:59:59Z")
    out = checkout(world.c, sku, world.fingerprint())
    world.c.check_in_license(LicenseConsumptionToken=out["LicenseConsumptionToken"])
    assert consumed(world.v, arn) == "0"
