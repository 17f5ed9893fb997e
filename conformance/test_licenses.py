"""Issuing licenses: CreateLicense, GetLicense, ListLicenses, versions,
DeleteLicense, ListReceivedLicenses, tags, and who may touch what."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from harness import (
    NO_END,
    checkout,
    consumed,
    counted,
    expect_error,
    ids,
    license_arn_re,
    license_request,
    list_all,
    parse_iso,
    provisional,
    tier,
    utcnow,
    version_request,
)


def test_create_and_get_license_round_trip(world):
    now = utcnow()
    req = license_request(
        beneficiary=world.customer.account_id,
        name="Round Trip",
        issuer="Self",
        entitlements=[counted("Seats", 5, overage=False, allow_check_in=True), tier("Premium", "Enabled")],
        consumption=provisional(45),
        begin=now - dt.timedelta(days=1),
        end=now + dt.timedelta(days=10),
        metadata=[{"Name": "plan", "Value": "gold"}],
    )
    resp = world.v.create_license(**req)
    arn = resp["LicenseArn"]
    assert license_arn_re(world.vendor.account_id).match(arn), arn
    assert resp["Status"] == "AVAILABLE"
    assert resp["Version"] == "1"
    assert resp["ResponseMetadata"].get("RequestId"), "no x-amzn-RequestId header"

    lic = world.v.get_license(LicenseArn=arn)["License"]
    assert lic["LicenseArn"] == arn
    assert lic["LicenseName"] == "Round Trip"
    assert lic["ProductName"] == req["ProductName"]
    assert lic["ProductSKU"] == req["ProductSKU"]
    assert lic["HomeRegion"] == "us-east-1"
    assert lic["Status"] == "AVAILABLE"
    assert lic["Version"] == "1"
    assert lic["Beneficiary"] == world.customer.account_id
    assert lic["Issuer"]["Name"] == "Self"
    assert lic["Issuer"]["KeyFingerprint"] == f"aws:{world.vendor.account_id}:Self:issuer-fingerprint"
    assert lic["Validity"] == req["Validity"]
    assert lic["ConsumptionConfiguration"]["ProvisionalConfiguration"] == {"MaxTimeToLiveInMinutes": 45}
    assert lic["ConsumptionConfiguration"].get("RenewType") == "None"
    assert lic["LicenseMetadata"] == [{"Name": "plan", "Value": "gold"}]
    ents = {e["Name"]: e for e in lic["Entitlements"]}
    assert set(ents) == {"Seats", "Premium"}
    assert ents["Seats"]["MaxCount"] == 5 and ents["Seats"]["Unit"] == "Count"
    assert ents["Seats"]["AllowCheckIn"] is True and ents["Seats"].get("Overage") in (False, None)
    assert ents["Premium"]["Unit"] == "None" and ents["Premium"]["Value"] == "Enabled"
    assert "MaxCount" not in ents["Premium"]
    created = parse_iso(lic["CreateTime"])
    assert abs((created - now).total_seconds()) < 120


def test_validity_without_end_and_arn_beneficiary(world):
    arn, req = world.create_license(end=NO_END, beneficiary=world.customer.root_arn)
    lic = world.v.get_license(LicenseArn=arn)["License"]
    assert "End" not in lic["Validity"]
    assert lic["Beneficiary"] == world.customer.root_arn


def test_issuer_name_is_part_of_the_fingerprint(world):
    issuer = f"Issuer{uuid.uuid4().hex[:8]}"
    arn, _ = world.create_license(issuer=issuer)
    lic = world.v.get_license(LicenseArn=arn)["License"]
    assert lic["Issuer"]["Name"] == issuer
    assert lic["Issuer"]["KeyFingerprint"] == f"aws:{world.vendor.account_id}:{issuer}:issuer-fingerprint"


def test_customer_can_read_the_license_it_received(world):
    arn, req = world.create_license()
    lic = world.c.get_license(LicenseArn=arn)["License"]
    assert lic["LicenseArn"] == arn and lic["ProductSKU"] == req["ProductSKU"]


def test_list_licenses_shows_own_licenses_only(world):
    arn, req = world.create_license()
    mine = world.v.list_licenses(LicenseArns=[arn])["Licenses"]
    assert ids(mine) == [arn]
    assert mine[0]["ProductSKU"] == req["ProductSKU"]
    assert mine[0]["Issuer"]["KeyFingerprint"] == world.fingerprint()
    by_sku = world.v.list_licenses(Filters=[{"Name": "ProductSKU", "Values": [req["ProductSKU"]]}])["Licenses"]
    assert ids(by_sku) == [arn]
    theirs = world.s.list_licenses(Filters=[{"Name": "ProductSKU", "Values": [req["ProductSKU"]]}])["Licenses"]
    assert theirs == []


# ---------------------------------------------------------------- versions


def test_create_license_version_and_read_old_versions(world):
    arn, req = world.create_license(name="Version One")
    v2 = world.v.create_license_version(**version_request(arn, req, source_version="1", LicenseName="Version Two",
                                                          Entitlements=[counted("Seats", 8)]))
    assert v2["LicenseArn"] == arn
    assert v2["Version"] == "2"
    assert v2["Status"] == "AVAILABLE"

    cur = world.v.get_license(LicenseArn=arn)["License"]
    assert cur["Version"] == "2" and cur["LicenseName"] == "Version Two"
    assert cur["Entitlements"][0]["MaxCount"] == 8
    old = world.v.get_license(LicenseArn=arn, Version="1")["License"]
    assert old["Version"] == "1" and old["LicenseName"] == "Version One"
    assert old["Entitlements"][0]["MaxCount"] == 5
    # the product and beneficiary carry over from the license
    assert cur["ProductSKU"] == req["ProductSKU"] and cur["Beneficiary"] == req["Beneficiary"]

    versions = world.v.list_license_versions(LicenseArn=arn)["Licenses"]
    assert sorted((v["Version"], v["LicenseName"]) for v in versions) == [("1", "Version One"), ("2", "Version Two")]

    # checkouts follow the new version's MaxCount
    checkout(world.c, req["ProductSKU"], world.fingerprint(), value=8)
    assert consumed(world.v, arn) == "8"


def test_create_license_version_with_stale_source_version_conflicts(world):
    arn, req = world.create_license()
    world.v.create_license_version(**version_request(arn, req, source_version="1"))
    expect_error("ConflictException", world.v.create_license_version,
                 **version_request(arn, req, source_version="1", LicenseName="late"))
    assert world.v.get_license(LicenseArn=arn)["License"]["Version"] == "2"


def test_reset_usage(world):
    arn, req = world.create_license(entitlements=[counted("Seats", 5)])
    fp = world.fingerprint()
    checkout(world.c, req["ProductSKU"], fp, value=2, checkout_type="PERPETUAL")
    assert consumed(world.v, arn) == "2"

    world.v.create_license_version(**version_request(arn, req, source_version="1"))
    assert consumed(world.v, arn) == "2", "a new version without ResetUsage must keep the usage"

    world.v.create_license_version(**version_request(arn, req, source_version="2", reset_usage=True))
    assert consumed(world.v, arn) == "0", "ResetUsage true must reset the usage"
    checkout(world.c, req["ProductSKU"], fp, value=5, checkout_type="PERPETUAL")
    assert consumed(world.v, arn) == "5"


@pytest.mark.parametrize("status", ["SUSPENDED", "DEACTIVATED", "EXPIRED"])
def test_license_not_available_refuses_checkout(world, status):
    arn, req = world.create_license()
    fp = world.fingerprint()
    checkout(world.c, req["ProductSKU"], fp)  # works while AVAILABLE
    out = world.v.create_license_version(**version_request(arn, req, status=status, source_version="1"))
    assert out["Status"] == status
    assert world.v.get_license(LicenseArn=arn)["License"]["Status"] == status
    expect_error("NoEntitlementsAllowedException", checkout, client=world.c, sku=req["ProductSKU"], fp=fp)
    # and back to AVAILABLE
    world.v.create_license_version(**version_request(arn, req, status="AVAILABLE", source_version="2"))
    checkout(world.c, req["ProductSKU"], fp)


# ---------------------------------------------------------------- delete


def test_delete_license(world):
    arn, req = world.create_license()
    fp = world.fingerprint()
    checkout(world.c, req["ProductSKU"], fp)
    before = utcnow()
    out = world.v.delete_license(LicenseArn=arn, SourceVersion="1")
    assert out["Status"] == "DELETED"
    assert abs((parse_iso(out["DeletionDate"]) - before).total_seconds()) < 120
    expect_error("NoEntitlementsAllowedException", checkout, client=world.c, sku=req["ProductSKU"], fp=fp)


# ---------------------------------------------------------------- received licenses


def test_list_received_licenses(world):
    sku = f"recv-{uuid.uuid4()}"
    by_id, _ = world.create_license(sku=sku)
    by_arn, _ = world.create_license(sku=sku, beneficiary=world.customer.root_arn)
    got = world.c.list_received_licenses(Filters=[{"Name": "ProductSKU", "Values": [sku]}])["Licenses"]
    assert sorted(ids(got)) == sorted([by_id, by_arn])
    for g in got:
        assert g["ProductSKU"] == sku
        assert g["Issuer"]["KeyFingerprint"] == world.fingerprint()
        md = g["ReceivedMetadata"]
        assert md["ReceivedStatus"] == "ACTIVE"
        assert isinstance(md["AllowedOperations"], list) and "CheckoutLicense" in md["AllowedOperations"]
    # unfiltered listing includes them too
    assert {by_id, by_arn} <= set(ids(list_all(world.c.list_received_licenses, "Licenses", page_size=100)))
    # the issuer and a stranger did not receive them
    assert world.v.list_received_licenses(Filters=[{"Name": "ProductSKU", "Values": [sku]}])["Licenses"] == []
    assert world.s.list_received_licenses(Filters=[{"Name": "ProductSKU", "Values": [sku]}])["Licenses"] == []
    # LicenseArns narrows the listing
    only = world.c.list_received_licenses(LicenseArns=[by_arn])["Licenses"]
    assert ids(only) == [by_arn]


def test_list_received_licenses_filters(world):
    issuer = f"Filt{uuid.uuid4().hex[:10]}"
    sku = f"recvf-{uuid.uuid4()}"
    a, _ = world.create_license(sku=sku, issuer=issuer)
    b, breq = world.create_license(sku=sku, issuer="Self")
    fp_issuer = f"aws:{world.vendor.account_id}:{issuer}:issuer-fingerprint"

    def listed(*filters):
        f = [{"Name": "ProductSKU", "Values": [sku]}] + [{"Name": n, "Values": [v]} for n, v in filters]
        return sorted(ids(world.c.list_received_licenses(Filters=f)["Licenses"]))

    assert listed() == sorted([a, b])
    assert listed(("IssuerName", issuer)) == [a]
    assert listed(("Fingerprint", fp_issuer)) == [a]
    assert listed(("Fingerprint", world.fingerprint())) == [b]
    assert listed(("Beneficiary", world.customer.account_id)) == sorted([a, b])
    assert listed(("Status", "AVAILABLE")) == sorted([a, b])
    assert listed(("Status", "SUSPENDED")) == []
    world.v.create_license_version(**version_request(b, breq, status="SUSPENDED", source_version="1"))
    assert listed(("Status", "SUSPENDED")) == [b]
    assert listed(("Status", "AVAILABLE")) == [a]


# ---------------------------------------------------------------- tags


def test_tags(world):
    arn, _ = world.create_license(tags=[{"Key": "team", "Value": "billing"}])
    assert world.v.list_tags_for_resource(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "billing"}]
    world.v.tag_resource(ResourceArn=arn, Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "sales"}])
    tags = {t["Key"]: t["Value"] for t in world.v.list_tags_for_resource(ResourceArn=arn)["Tags"]}
    assert tags == {"team": "sales", "env": "prod"}
    world.v.untag_resource(ResourceArn=arn, TagKeys=["team"])
    assert world.v.list_tags_for_resource(ResourceArn=arn)["Tags"] == [{"Key": "env", "Value": "prod"}]
    world.v.untag_resource(ResourceArn=arn, TagKeys=["env", "never-set"])
    assert world.v.list_tags_for_resource(ResourceArn=arn).get("Tags", []) == []


# ---------------------------------------------------------------- who may touch what


def _missing_arn(account_id: str) -> str:
    return f"arn:aws:license-manager::{account_id}:license:l-{uuid.uuid4().hex}"


def test_stranger_is_denied(world):
    arn, req = world.create_license()
    s = world.s
    expect_error("AccessDeniedException", s.get_license, LicenseArn=arn)
    expect_error("AccessDeniedException", s.delete_license, LicenseArn=arn, SourceVersion="1")
    expect_error("AccessDeniedException", s.create_license_version, **version_request(arn, req, source_version="1"))
    expect_error("AccessDeniedException", s.get_license_usage, LicenseArn=arn)
    expect_error("AccessDeniedException", s.tag_resource, ResourceArn=arn, Tags=[{"Key": "k", "Value": "v"}])
    # nothing changed
    lic = world.v.get_license(LicenseArn=arn)["License"]
    assert lic["Version"] == "1" and lic["Status"] == "AVAILABLE"
    assert world.v.list_tags_for_resource(ResourceArn=arn).get("Tags", []) == []


def test_a_missing_license_is_a_bad_parameter_value(world):
    """Only the operations whose model lists ResourceNotFoundException answer it."""
    missing = _missing_arn(world.vendor.account_id)
    v = world.v
    expect_error("InvalidParameterValueException", v.get_license, LicenseArn=missing)
    expect_error("InvalidParameterValueException", v.delete_license, LicenseArn=missing, SourceVersion="1")
    expect_error("InvalidParameterValueException", v.get_license_usage, LicenseArn=missing)
    expect_error("InvalidParameterValueException", v.list_license_versions, LicenseArn=missing)
    expect_error("InvalidParameterValueException", v.tag_resource, ResourceArn=missing, Tags=[{"Key": "k", "Value": "v"}])
    _, req = world.create_license()
    expect_error("ResourceNotFoundException", v.create_license_version,
                 **version_request(missing, req, source_version="1"))


# ---------------------------------------------------------------- idempotency


def test_create_license_is_idempotent_per_client_token(world):
    req = license_request(beneficiary=world.customer.account_id)
    first = world.v.create_license(**req)
    again = world.v.create_license(**req)
    assert again["LicenseArn"] == first["LicenseArn"]
    assert again["Version"] == first["Version"] == "1"
    listed = world.v.list_licenses(Filters=[{"Name": "ProductSKU", "Values": [req["ProductSKU"]]}])["Licenses"]
    assert ids(listed) == [first["LicenseArn"]]

    changed = dict(req, LicenseName="something else")
    expect_error("ValidationException", world.v.create_license, **changed)

    # the token is per account: another account may use the same one
    other = license_request(beneficiary=world.customer.account_id, client_token=req["ClientToken"])
    theirs = world.s.create_license(**other)
    assert theirs["LicenseArn"] != first["LicenseArn"]


def test_create_license_version_is_idempotent_per_client_token(world):
    arn, req = world.create_license()
    vreq = version_request(arn, req, source_version="1", LicenseName="v2")
    first = world.v.create_license_version(**vreq)
    again = world.v.create_license_version(**vreq)
    assert first["Version"] == again["Version"] == "2"
    assert len(world.v.list_license_versions(LicenseArn=arn)["Licenses"]) == 2
    expect_error("ConflictException", world.v.create_license_version, **dict(vreq, LicenseName="v2b"))
