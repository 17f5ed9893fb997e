"""The seed story, end to end with the AWS CLI v1: the vendor runs the seller
guide's test-license script, the customer runs its checkout-license command.

Both accounts get their AWS CLI profiles from `tessera account create
--aws-profile`, written into private AWS config and credentials files, so the
`aws` commands carry no --endpoint-url and no keys of their own."""

from __future__ import annotations

import configparser
import datetime as dt
import uuid
from pathlib import Path

import pytest

from harness import REGION, Cli, license_arn_re, parse_iso

SEED_DIR = Path(__file__).resolve().parent / "seed"


@pytest.fixture(scope="module")
def cli(server, tmp_path_factory):
    return Cli(server, tmp_path_factory.mktemp("aws-cli"))


def test_account_create_writes_working_aws_profiles(server, cli):
    tag = uuid.uuid4().hex[:8]
    acct = server.create_account(f"profile-{tag}", aws_profile=f"p-{tag}", env=cli.env)

    creds = configparser.RawConfigParser()
    creds.read(cli.credentials)
    assert creds.get(f"p-{tag}", "aws_access_key_id") == acct.access_key_id
    assert creds.get(f"p-{tag}", "aws_secret_access_key") == acct.secret_access_key
    config = configparser.RawConfigParser()
    config.read(cli.config)
    section = f"profile p-{tag}"
    assert config.get(section, "endpoint_url").rstrip("/") == server.url
    assert config.get(section, "region") == REGION

    # The profile alone is enough: no --endpoint-url, no keys in the environment.
    out = cli.aws("license-manager", "list-licenses", profile=f"p-{tag}")
    assert out.get("Licenses") == []


def test_seed_script_end_to_end(server, cli):
    vendor = server.create_account("seed-vendor", aws_profile="seed-vendor", env=cli.env)
    customer = server.create_account("seed-customer", aws_profile="seed-customer", env=cli.env)
    product_id = str(uuid.uuid4())

    # --- the vendor runs the seller guide's script, unchanged
    created = cli.script(SEED_DIR / "create-test-license.sh", profile="seed-vendor",
                         PRODUCT_ID=product_id, BENEFICIARY_ACCOUNT_ID=customer.account_id)
    arn = created["LicenseArn"]
    assert license_arn_re(vendor.account_id).match(arn), created
    assert created["Status"] == "AVAILABLE"
    assert created["Version"] == "1"

    lic = cli.aws("license-manager", "get-license", "--license-arn", arn, profile="seed-vendor")["License"]
    fp = f"aws:{vendor.account_id}:Self:issuer-fingerprint"
    assert lic["Issuer"]["Name"] == "Self"
    assert lic["Issuer"]["KeyFingerprint"] == fp
    assert lic["ProductSKU"] == product_id
    assert lic["ProductName"] == "Test Product"
    assert lic["LicenseName"] == "AWSMP Test License"
    assert lic["Beneficiary"] == customer.account_id
    assert lic["HomeRegion"] == "us-east-1"
    assert lic["Status"] == "AVAILABLE"
    ent = lic["Entitlements"]
    assert len(ent) == 1 and ent[0]["Name"] == "ReadOnly" and ent[0]["MaxCount"] == 5
    assert ent[0]["Unit"] == "Count" and ent[0]["AllowCheckIn"] is True and ent[0].get("Overage") in (False, None)
    assert lic["ConsumptionConfiguration"]["ProvisionalConfiguration"]["MaxTimeToLiveInMinutes"] == 60
    # The script's dates look like 2026-11-22T01:02:03.03Z ("%S.%S"): kept as the same instants.
    begin, end = parse_iso(lic["Validity"]["Begin"]), parse_iso(lic["Validity"]["End"])
    assert dt.timedelta(days=10) - dt.timedelta(seconds=2) < end - begin < dt.timedelta(days=10, seconds=2)
    parse_iso(lic["CreateTime"])

    # --- the customer runs the checkout command from the guide
    out = cli.script(SEED_DIR / "checkout-license.sh", profile="seed-customer",
                     PRODUCT_ID=product_id, VENDOR_ACCOUNT_ID=vendor.account_id)
    assert out["CheckoutType"] == "PROVISIONAL"
    assert out["LicenseArn"] == arn
    assert out["EntitlementsAllowed"] == [{"Name": "ReadOnly", "Value": "1", "Unit": "Count"}]
    tok = out["LicenseConsumptionToken"]
    assert isinstance(tok, str) and tok
    issued, expires = parse_iso(out["IssuedAt"]), parse_iso(out["Expiration"])
    assert abs((expires - issued) - dt.timedelta(minutes=60)) <= dt.timedelta(seconds=2), out
    assert out.get("SignedToken"), "CheckoutLicense returned no SignedToken"

    use = cli.aws("license-manager", "get-license-usage", "--license-arn", arn, profile="seed-vendor")
    assert use["LicenseUsage"]["EntitlementUsages"] == [
        {"Name": "ReadOnly", "ConsumedValue": "1", "MaxCount": "5", "Unit": "Count"}]

    # --- check-in returns the unit
    cli.aws("license-manager", "check-in-license", "--license-consumption-token", tok, profile="seed-customer")
    use = cli.aws("license-manager", "get-license-usage", "--license-arn", arn, profile="seed-vendor")
    assert use["LicenseUsage"]["EntitlementUsages"][0]["ConsumedValue"] == "0"

    # --- the customer sees the license it received
    got = cli.aws("license-manager", "list-received-licenses", "--filters",
                  f"Name=ProductSKU,Values={product_id}", profile="seed-customer")["Licenses"]
    assert [g["LicenseArn"] for g in got] == [arn]
    assert got[0]["ReceivedMetadata"]["ReceivedStatus"] == "ACTIVE"
    assert "CheckoutLicense" in got[0]["ReceivedMetadata"]["AllowedOperations"]
    assert got[0]["Issuer"]["KeyFingerprint"] == fp
    everything = cli.aws("license-manager", "list-received-licenses", profile="seed-customer")["Licenses"]
    assert arn in [g["LicenseArn"] for g in everything]

    # --- five units in one go, then the pool is empty: the CLI shows the service error
    full = cli.aws("license-manager", "checkout-license", "--product-sku", product_id,
                   "--checkout-type", "PROVISIONAL", "--key-fingerprint", fp,
                   "--entitlements", "Name=ReadOnly,Value=5,Unit=Count",
                   "--client-token", str(uuid.uuid4()), profile="seed-customer")
    assert full["EntitlementsAllowed"][0]["Value"] == "5"
    cp = cli.aws_fails("license-manager", "checkout-license", "--product-sku", product_id,
                       "--checkout-type", "PROVISIONAL", "--key-fingerprint", fp,
                       "--entitlements", "Name=ReadOnly,Value=1,Unit=Count",
                       "--client-token", str(uuid.uuid4()), profile="seed-customer")
    assert cp.returncode == 255, cp
    assert "NoEntitlementsAllowedException" in cp.stderr and "CheckoutLicense" in cp.stderr, cp.stderr

    # --- the wrong fingerprint (a Marketplace one) finds nothing
    cp = cli.aws_fails("license-manager", "checkout-license", "--product-sku", product_id,
                       "--checkout-type", "PROVISIONAL",
                       "--key-fingerprint", "aws:294406891311:AWS/Marketplace:issuer-fingerprint",
                       "--entitlements", "Name=ReadOnly,Value=1,Unit=Count",
                       "--client-token", str(uuid.uuid4()), profile="seed-customer")
    assert "NoEntitlementsAllowedException" in cp.stderr, cp.stderr
