"""Grants with the AWS CLI v1, each account using the profile that `tessera
account create --aws-profile` wrote for it: the vendor grants, the grantee
accepts and activates, sees the license, and checks out."""

from __future__ import annotations

import json
import uuid

import pytest

from harness import Cli, consumed, counted, create_license, fingerprint, grant_arn_re


@pytest.fixture(scope="module")
def cli(server, tmp_path_factory):
    return Cli(server, tmp_path_factory.mktemp("aws-cli-grants"))


def test_grant_accept_activate_and_use_with_the_cli(world, cli):
    tag = uuid.uuid4().hex[:8]
    vendor_p, grantee_p = f"gv-{tag}", f"gg-{tag}"
    vendor = cli.account(f"cli-vendor-{tag}", vendor_p)
    grantee = cli.account(f"cli-grantee-{tag}", grantee_p)
    beneficiary = cli.account(f"cli-beneficiary-{tag}", f"gb-{tag}")
    v = world.server.client(vendor)
    sku = f"cli-sku-{tag}"
    arn, _ = create_license(v, beneficiary=beneficiary.account_id, sku=sku,
                                                  entitlements=[counted("Seats", 2)])

    created = cli.aws("license-manager", "create-grant", "--grant-name", "cli grant", "--license-arn", arn,
                      "--principals", grantee.root_arn, "--home-region", "us-east-1",
                      "--allowed-operations", "CheckoutLicense", "CheckInLicense", "ExtendConsumptionLicense",
                      "--client-token", str(uuid.uuid4()), profile=vendor_p)
    garn = created["GrantArn"]
    assert grant_arn_re(vendor.account_id).match(garn), created
    assert (created["Status"], created["Version"]) == ("PENDING_ACCEPT", "1")

    # The grantor may not accept its own grant: the CLI shows the service error.
    cp = cli.aws_fails("license-manager", "accept-grant", "--grant-arn", garn, profile=vendor_p)
    assert cp.returncode == 255 and "AccessDeniedException" in cp.stderr and "AcceptGrant" in cp.stderr, cp.stderr

    accepted = cli.aws("license-manager", "accept-grant", "--grant-arn", garn, profile=grantee_p)
    assert (accepted["GrantArn"], accepted["Status"], accepted["Version"]) == (garn, "DISABLED", "2")

    active = cli.aws("license-manager", "create-grant-version", "--grant-arn", garn, "--status", "ACTIVE",
                     "--status-reason", "activated from the CLI", "--source-version", "2",
                     "--client-token", str(uuid.uuid4()), profile=grantee_p)
    assert (active["Status"], active["Version"]) == ("ACTIVE", "3")

    got = cli.aws("license-manager", "list-received-licenses", "--license-arns", arn, profile=grantee_p)["Licenses"]
    assert [x["LicenseArn"] for x in got] == [arn]
    meta = got[0]["ReceivedMetadata"]
    assert meta["ReceivedStatus"] == "ACTIVE"
    assert sorted(meta["AllowedOperations"]) == ["CheckInLicense", "CheckoutLicense", "ExtendConsumptionLicense"]
    assert got[0]["ProductSKU"] == sku and got[0]["Beneficiary"] == beneficiary.account_id

    grant = cli.aws("license-manager", "get-grant", "--grant-arn", garn, "--grant-version", "1",
                    profile=grantee_p)["Grant"]
    assert (grant["GrantStatus"], grant["Version"], grant["GrantName"]) == ("PENDING_ACCEPT", "1", "cli grant")
    listed = cli.aws("license-manager", "list-distributed-grants", "--filters",
                     f"Name=LicenseArn,Values={arn}", profile=vendor_p)["Grants"]
    assert [(x["GrantArn"], x["GrantStatus"], x["StatusReason"]) for x in listed] == \
        [(garn, "ACTIVE", "activated from the CLI")]

    out = cli.aws("license-manager", "checkout-license", "--product-sku", sku, "--checkout-type", "PROVISIONAL",
                  "--key-fingerprint", fingerprint(vendor.account_id), "--entitlements",
                  "Name=Seats,Value=1,Unit=Count", "--client-token", str(uuid.uuid4()), profile=grantee_p)
    assert out["LicenseArn"] == arn
    assert consumed(v, arn) == "1"

    # In CLI v1, delete-grant's --version is taken by the global --version flag;
    # the request goes in as JSON instead.
    deleted = cli.aws("license-manager", "delete-grant", "--cli-input-json",
                      json.dumps({"GrantArn": garn, "Version": "3", "StatusReason": "ended"}), profile=vendor_p)
    assert (deleted["Status"], deleted["Version"]) == ("DELETED", "4")
    cp = cli.aws_fails("license-manager", "checkout-license", "--product-sku", sku, "--checkout-type", "PROVISIONAL",
                       "--key-fingerprint", fingerprint(vendor.account_id), "--entitlements",
                       "Name=Seats,Value=1,Unit=Count", "--client-token", str(uuid.uuid4()), profile=grantee_p)
    assert "NoEntitlementsAllowedException" in cp.stderr, cp.stderr
