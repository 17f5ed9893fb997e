"""Consumption: CheckoutLicense, CheckInLicense, ExtendLicenseConsumption and
GetLicenseUsage, on the shared server (whose clock never moves)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from harness import (
    checkout,
    consumed,
    counted,
    expect_error,
    expect_validation,
    fingerprint,
    parse_iso,
    provisional,
    tier,
    token,
    usage,
    utcnow,
)


def _ttl(resp) -> dt.timedelta:
    return parse_iso(resp["Expiration"]) - parse_iso(resp["IssuedAt"])


def test_provisional_checkout_response(world):
    arn, req = world.create_license(consumption=provisional(45))
    before = utcnow()
    out = checkout(world.c, req["ProductSKU"], world.fingerprint(), value=2, NodeId="10.0.21.57")
    assert out["CheckoutType"] == "PROVISIONAL"
    assert out["LicenseArn"] == arn
    assert out["NodeId"] == "10.0.21.57"
    assert out["EntitlementsAllowed"] == [{"Name": "Seats", "Value": "2", "Unit": "Count"}]
    assert isinstance(out["LicenseConsumptionToken"], str) and out["LicenseConsumptionToken"]
    assert abs((parse_iso(out["IssuedAt"]) - before).total_seconds()) < 60
    assert abs(_ttl(out) - dt.timedelta(minutes=45)) <= dt.timedelta(seconds=1), out
    assert isinstance(out["SignedToken"], str) and out["SignedToken"].count(".") == 2


def test_default_ttl_is_60_minutes(world):
    _, req = world.create_license(consumption=provisional(None))
    out = checkout(world.c, req["ProductSKU"], world.fingerprint())
    assert abs(_ttl(out) - dt.timedelta(minutes=60)) <= dt.timedelta(seconds=1), out


def test_usage_before_any_checkout(world):
    arn, _ = world.create_license(entitlements=[counted("Seats", 5), tier("Gold")])
    u = usage(world.v, arn)
    assert u["Seats"] == {"Name": "Seats", "ConsumedValue": "0", "MaxCount": "5", "Unit": "Count"}


def test_checkout_draws_and_check_in_returns(world):
    arn, req = world.create_license()
    fp = world.fingerprint()
    a = checkout(world.c, req["ProductSKU"], fp, value=2)
    b = checkout(world.c, req["ProductSKU"], fp, value=1)
    assert a["LicenseConsumptionToken"] != b["LicenseConsumptionToken"]
    assert consumed(world.v, arn) == "3"
    world.c.check_in_license(LicenseConsumptionToken=a["LicenseConsumptionToken"])
    assert consumed(world.v, arn) == "1"
    world.c.check_in_license(LicenseConsumptionToken=b["LicenseConsumptionToken"])
    assert consumed(world.v, arn) == "0"


def test_check_in_twice_conflicts(world):
    arn, req = world.create_license()
    out = checkout(world.c, req["ProductSKU"], world.fingerprint())
    world.c.check_in_license(LicenseConsumptionToken=out["LicenseConsumptionToken"])
    expect_error("ConflictException", world.c.check_in_license,
                 LicenseConsumptionToken=out["LicenseConsumptionToken"])
    assert consumed(world.v, arn) == "0"


def test_unknown_consumption_token(world):
    bogus = uuid.uuid4().hex
    expect_error("ResourceNotFoundException", world.c.check_in_license, LicenseConsumptionToken=bogus)
    expect_error("ResourceNotFoundException", world.c.extend_license_consumption, LicenseConsumptionToken=bogus)
    expect_error("ResourceNotFoundException", world.c.extend_license_consumption,
                 LicenseConsumptionToken=bogus, DryRun=True)


def test_consumption_token_of_another_account_is_denied(world):
    arn, req = world.create_license()
    out = checkout(world.c, req["ProductSKU"], world.fingerprint())
    t = out["LicenseConsumptionToken"]
    expect_error("AccessDeniedException", world.s.check_in_license, LicenseConsumptionToken=t)
    expect_error("AccessDeniedException", world.s.extend_license_consumption, LicenseConsumptionToken=t)
    assert consumed(world.v, arn) == "1"
    world.c.check_in_license(LicenseConsumptionToken=t)
    assert consumed(world.v, arn) == "0"


def test_perpetual_is_permanent(world):
    arn, req = world.create_license()
    out = checkout(world.c, req["ProductSKU"], world.fingerprint(), value=2, checkout_type="PERPETUAL")
    assert out["CheckoutType"] == "PERPETUAL"
    assert out["EntitlementsAllowed"] == [{"Name": "Seats", "Value": "2", "Unit": "Count"}]
    expect_error("ValidationException", world.c.check_in_license, LicenseConsumptionToken=out["LicenseConsumptionToken"])
    assert consumed(world.v, arn) == "2"


def test_allow_check_in_false_refuses_check_in(world):
    arn, req = world.create_license(entitlements=[counted("Seats", 5, allow_check_in=False)])
    out = checkout(world.c, req["ProductSKU"], world.fingerprint())
    expect_error("ValidationException", world.c.check_in_license, LicenseConsumptionToken=out["LicenseConsumptionToken"])
    assert consumed(world.v, arn) == "1"


def test_count_is_exhausted(world):
    arn, req = world.create_license(entitlements=[counted("Seats", 5)])
    fp, sku = world.fingerprint(), req["ProductSKU"]
    expect_error("NoEntitlementsAllowedException", checkout, client=world.c, sku=sku, fp=fp, value=6)
    assert consumed(world.v, arn) == "0"
    full = checkout(world.c, sku, fp, value=5)
    expect_error("NoEntitlementsAllowedException", checkout, client=world.c, sku=sku, fp=fp, value=1)
    expect_error("NoEntitlementsAllowedException", checkout, client=world.c, sku=sku, fp=fp, value=1,
                 checkout_type="PERPETUAL")
    assert consumed(world.v, arn) == "5"
    world.c.check_in_license(LicenseConsumptionToken=full["LicenseConsumptionToken"])
    checkout(world.c, sku, fp, value=1)
    assert consumed(world.v, arn) == "1"


def test_overage_true_passes_max_count(world):
    arn, req = world.create_license(entitlements=[counted("Seats", 2, overage=True)])
    fp, sku = world.fingerprint(), req["ProductSKU"]
    checkout(world.c, sku, fp, value=3, checkout_type="PERPETUAL")
    u = usage(world.v, arn)["Seats"]
    assert (u["ConsumedValue"], u["MaxCount"]) == ("3", "2")
    checkout(world.c, sku, fp, value=2)
    assert consumed(world.v, arn) == "5"


def test_overage_false_never_passes_max_count(world):
    arn, req = world.create_license(entitlements=[counted("Seats", 2, overage=False)])
    fp, sku = world.fingerprint(), req["ProductSKU"]
    expect_error("NoEntitlementsAllowedException", checkout, client=world.c, sku=sku, fp=fp, value=3,
                 checkout_type="PERPETUAL")
    checkout(world.c, sku, fp, value=2, checkout_type="PERPETUAL")
    expect_error("NoEntitlementsAllowedException", checkout, client=world.c, sku=sku, fp=fp, value=1)
    u = usage(world.v, arn)["Seats"]
    assert (u["ConsumedValue"], u["MaxCount"]) == ("2", "2")


def test_tiered_checkout_returns_only_the_held_tier(world):
    arn, req = world.create_license(entitlements=[tier("IntermediateTier", "Enabled")])
    fp, sku = world.fingerprint(), req["ProductSKU"]
    asked = [{"Name": n, "Unit": "None"} for n in ("BasicTier", "IntermediateTier", "PremiumTier")]
    out = checkout(world.c, sku, fp, entitlements=asked)
    assert out["EntitlementsAllowed"] == [{"Name": "IntermediateTier", "Value": "Enabled", "Unit": "None"}]
    assert out["LicenseArn"] == arn
    expect_error("NoEntitlementsAllowedException", checkout, client=world.c, sku=sku, fp=fp,
                 entitlements=[{"Name": "PremiumTier", "Unit": "None"}])


def test_counted_and_tier_in_one_checkout(world):
    arn, req = world.create_license(entitlements=[counted("Seats", 5), tier("Gold", "Enabled")])
    out = checkout(world.c, req["ProductSKU"], world.fingerprint(), entitlements=[
        {"Name": "Seats", "Value": "2", "Unit": "Count"}, {"Name": "Gold", "Unit": "None"}])
    got = sorted(out["EntitlementsAllowed"], key=lambda e: e["Name"])
    assert got == [{"Name": "Gold", "Value": "Enabled", "Unit": "None"},
                   {"Name": "Seats", "Value": "2", "Unit": "Count"}]
    assert consumed(world.v, arn) == "2"


def test_nothing_matches_the_caller(world):
    arn, req = world.create_license()
    fp, sku = world.fingerprint(), req["ProductSKU"]
    cases = {
        "wrong SKU": dict(client=world.c, sku=sku + "-other", fp=fp),
        "wrong issuer name": dict(client=world.c, sku=sku, fp=world.fingerprint("Other")),
        "wrong issuer account": dict(client=world.c, sku=sku, fp=fingerprint(world.stranger.account_id)),
        "marketplace fingerprint": dict(client=world.c, sku=sku,
                                        fp="aws:294406891311:AWS/Marketplace:issuer-fingerprint"),
        "stranger": dict(client=world.s, sku=sku, fp=fp),
        "vendor without Beneficiary": dict(client=world.v, sku=sku, fp=fp),
        "unknown entitlement": dict(client=world.c, sku=sku, fp=fp, name="Nope"),
    }
    for what, kw in cases.items():
        try:
            expect_error("NoEntitlementsAllowedException", checkout, **kw)
        except AssertionError as e:
            raise AssertionError(f"{what}: {e}") from None
    assert consumed(world.v, arn) == "0"


def test_license_outside_validity(world):
    now = utcnow()
    _, future = world.create_license(begin=now + dt.timedelta(days=1), end=now + dt.timedelta(days=10))
    _, past = world.create_license(begin=now - dt.timedelta(days=10), end=now - dt.timedelta(days=1))
    fp = world.fingerprint()
    expect_error("NoEntitlementsAllowedException", checkout, client=world.c, sku=future["ProductSKU"], fp=fp)
    expect_error("NoEntitlementsAllowedException", checkout, client=world.c, sku=past["ProductSKU"], fp=fp)


def test_license_to_an_arn_beneficiary(world):
    arn, req = world.create_license(beneficiary=world.customer.root_arn)
    out = checkout(world.c, req["ProductSKU"], world.fingerprint())
    assert out["LicenseArn"] == arn


def test_vendor_checks_out_its_own_license_only_with_beneficiary(world):
    arn, req = world.create_license(beneficiary=world.vendor.account_id)
    fp, sku = world.fingerprint(), req["ProductSKU"]
    expect_error("NoEntitlementsAllowedException", checkout, client=world.v, sku=sku, fp=fp)
    out = checkout(world.v, sku, fp, Beneficiary=world.vendor.account_id)
    assert out["LicenseArn"] == arn
    assert consumed(world.v, arn) == "1"


def test_vendor_checks_out_on_behalf_of_the_customer(world):
    arn, req = world.create_license()
    out = checkout(world.v, req["ProductSKU"], world.fingerprint(), Beneficiary=world.customer.account_id)
    assert out["LicenseArn"] == arn
    assert consumed(world.v, arn) == "1"


def test_checkout_is_idempotent_per_client_token(world):
    arn, req = world.create_license()
    fp, sku = world.fingerprint(), req["ProductSKU"]
    ct = token()
    first = checkout(world.c, sku, fp, value=2, ClientToken=ct, NodeId="n1")
    again = checkout(world.c, sku, fp, value=2, ClientToken=ct, NodeId="n1")
    assert again["LicenseConsumptionToken"] == first["LicenseConsumptionToken"]
    assert again["LicenseArn"] == first["LicenseArn"]
    assert again["EntitlementsAllowed"] == first["EntitlementsAllowed"]
    assert consumed(world.v, arn) == "2", "a replayed ClientToken must not consume again"

    # CheckoutLicense lists no ConflictException in the model.
    expect_error("ValidationException", checkout, client=world.c, sku=sku, fp=fp, value=3, ClientToken=ct, NodeId="n1")
    assert consumed(world.v, arn) == "2"

    # per account: the vendor's use of the same token is a new request of its own
    other = checkout(world.v, sku, fp, value=1, ClientToken=ct, Beneficiary=world.customer.account_id)
    assert other["LicenseConsumptionToken"] != first["LicenseConsumptionToken"]
    assert consumed(world.v, arn) == "3"


def test_extend_license_consumption(world):
    _, req = world.create_license()
    out = checkout(world.c, req["ProductSKU"], world.fingerprint())
    t = out["LicenseConsumptionToken"]
    ext = world.c.extend_license_consumption(LicenseConsumptionToken=t)
    assert ext["LicenseConsumptionToken"] == t
    assert parse_iso(ext["Expiration"]) >= parse_iso(out["Expiration"])
    dry = world.c.extend_license_consumption(LicenseConsumptionToken=t, DryRun=True)
    assert dry.get("LicenseConsumptionToken") in (None, t)


def test_extend_a_checked_in_token_fails(world):
    _, req = world.create_license()
    out = checkout(world.c, req["ProductSKU"], world.fingerprint())
    world.c.check_in_license(LicenseConsumptionToken=out["LicenseConsumptionToken"])
    with pytest.raises(Exception) as ei:
        world.c.extend_license_consumption(LicenseConsumptionToken=out["LicenseConsumptionToken"])
    code = getattr(ei.value, "response", {}).get("Error", {}).get("Code")
    assert code in ("ConflictException", "ResourceNotFoundException", "ValidationException"), ei.value


def test_checkout_validation(world):
    _, req = world.create_license()
    fp, sku = world.fingerprint(), req["ProductSKU"]
    expect_validation(world.c.checkout_license, "CheckoutType", ProductSKU=sku, CheckoutType="FOREVER",
                      KeyFingerprint=fp, Entitlements=[{"Name": "Seats", "Value": "1", "Unit": "Count"}],
                      ClientToken=token())
    expect_validation(world.c.checkout_license, "Unit", ProductSKU=sku, CheckoutType="PROVISIONAL",
                      KeyFingerprint=fp, Entitlements=[{"Name": "Seats", "Value": "1", "Unit": "Apples"}],
                      ClientToken=token())
