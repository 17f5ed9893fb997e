"""The seed story, end to end with the AWS CLI v1: the vendor runs the seller
guide's test-license script, the customer runs its checkout-license command.

Both accounts get their AWS CLI profiles from `tessera account create
--aws-profile`, written into private AWS config and credentials files, so the
`aws` commands carry no --endpoint-url and no keys of their own."""

from __future__ import annotations

import configparser
import datetime as dt
import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from harness import REGION, clean_env, license_arn_re, parse_iso

SEED_DIR = Path(__file__).resolve().parent / "seed"


def _shim(bin_dir: Path, name: str, body: str) -> None:
    p = bin_dir / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


class Cli:
    def __init__(self, server, tmp: Path):
        self.server = server
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        py = sys.executable
        # `aws` is the AWS CLI v1 of this interpreter's environment; uuidgen is
        # not on every machine, the seed script calls it.
        _shim(bin_dir, "aws", f'exec "{py}" -m awscli "$@"')
        _shim(bin_dir, "uuidgen", f'exec "{py}" -c "import uuid; print(uuid.uuid4())"')
        self.config = tmp / "aws-config"
        self.credentials = tmp / "aws-credentials"
        self.env = clean_env({
            "AWS_CONFIG_FILE": str(self.config),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.credentials),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "TZ": "UTC",
            "PYTHONWARNINGS": "ignore",
        })

    def run(self, args: list, *, profile: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        env = dict(self.env, AWS_PROFILE=profile, **(extra_env or {}))
        return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120,
                              stdin=subprocess.DEVNULL)

    def aws(self, *args: str, profile: str) -> dict:
        cp = self.run(["aws", "--profile", profile, "--output", "json", *args], profile=profile)
        assert cp.returncode == 0, f"aws {' '.join(args)} exited {cp.returncode}\n{cp.stderr}"
        return json.loads(cp.stdout) if cp.stdout.strip() else {}

    def aws_fails(self, *args: str, profile: str) -> subprocess.CompletedProcess:
        cp = self.run(["aws", "--profile", profile, "--output", "json", *args], profile=profile)
        assert cp.returncode != 0, f"aws {' '.join(args)} should have failed:\n{cp.stdout}"
        return cp

    def script(self, name: str, *, profile: str, **env) -> dict:
        cp = self.run(["bash", str(SEED_DIR / name)], profile=profile, extra_env=env)
        assert cp.returncode == 0, f"{name} exited {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}"
        return json.loads(cp.stdout)


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
    created = cli.script("create-test-license.sh", profile="seed-vendor",
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
    out = cli.script("checkout-license.sh", profile="seed-customer",
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
