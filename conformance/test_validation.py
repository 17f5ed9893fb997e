"""Server-side validation: what botocore does not check on the client
(max lengths, enums, patterns, ranges) must come back as ValidationException
naming the offending field."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from harness import counted, expect_error, expect_validation, license_request, utcnow


@pytest.fixture(scope="module")
def vraw(world):
    """A client without botocore's own parameter validation, so that
    out-of-range values reach the server."""
    return world.server.client(world.vendor, validate=False)


def _req(world, **kw):
    return license_request(beneficiary=world.customer.account_id, **kw)


def test_validity_end_before_begin(world):
    now = utcnow()
    expect_validation(world.v.create_license, "Validity.End",
                      **_req(world, begin=now, end=now - dt.timedelta(days=1)))


def test_date_without_zone(world):
    expect_validation(world.v.create_license, "Validity.Begin", **_req(world, begin="2026-01-01T00:47:35"))


def test_max_count_with_unit_none(world):
    expect_validation(world.v.create_license, "MaxCount",
                      **_req(world, entitlements=[{"Name": "Tier", "Unit": "None", "MaxCount": 3}]))


def test_bad_unit(world):
    expect_validation(world.v.create_license, "Unit",
                      **_req(world, entitlements=[{"Name": "Seats", "Unit": "Apples", "MaxCount": 3}]))


def test_name_over_255_chars(world):
    expect_validation(world.v.create_license, "LicenseName", **_req(world, name="x" * 256))
    # 255 is fine
    world.v.create_license(**_req(world, name="y" * 255))


def test_bad_renew_type(world):
    expect_validation(world.v.create_license, "RenewType",
                      **_req(world, consumption={"RenewType": "Daily"}))


def test_nothing_was_created_by_invalid_requests(world):
    sku = f"invalid-{uuid.uuid4()}"
    now = utcnow()
    expect_error("ValidationException", world.v.create_license,
                 **_req(world, sku=sku, begin=now, end=now - dt.timedelta(hours=1)))
    assert world.v.list_licenses(Filters=[{"Name": "ProductSKU", "Values": [sku]}])["Licenses"] == []


@pytest.mark.parametrize("value", [0, 101, -1])
@pytest.mark.parametrize("op", ["list_licenses", "list_received_licenses", "list_license_versions"])
def test_max_results_out_of_range(world, vraw, op, value):
    kw = {"MaxResults": value}
    if op == "list_license_versions":
        arn, _ = world.create_license()
        kw["LicenseArn"] = arn
    code = "InvalidParameterValueException" if op == "list_license_versions" else "ValidationException"
    expect_validation(getattr(vraw, op), "MaxResults", code=code, **kw)


@pytest.mark.parametrize("value", [1, 100])
def test_max_results_bounds_are_accepted(world, value):
    world.v.list_licenses(MaxResults=value)
    world.c.list_received_licenses(MaxResults=value)


@pytest.mark.parametrize("bad", [
    "not-an-arn",
    "arn:aws:license-manager::123:license:l-abc",
])
def test_bad_license_arn(world, bad):
    expect_validation(world.v.get_license, "LicenseArn", LicenseArn=bad)


def test_bad_license_arn_in_other_ops(world):
    expect_validation(world.v.get_license_usage, "LicenseArn", LicenseArn="nope")
    expect_validation(world.v.list_license_versions, "LicenseArn", code="InvalidParameterValueException",
                      LicenseArn="nope")
    expect_validation(world.v.delete_license, "LicenseArn", LicenseArn="nope", SourceVersion="1")


@pytest.mark.parametrize("op", ["list_licenses", "list_received_licenses"])
def test_unknown_filter_name(world, op):
    client = world.v if op == "list_licenses" else world.c
    expect_error("ValidationException", getattr(client, op), Filters=[{"Name": "Colour", "Values": ["blue"]}])


def test_list_licenses_does_not_take_received_only_filters(world):
    expect_error("ValidationException", world.v.list_licenses, Filters=[{"Name": "IssuerName", "Values": ["Self"]}])


def test_empty_required_string(world):
    expect_validation(world.v.create_license, "ProductSKU", **_req(world, sku=""))


def test_negative_max_count(world):
    expect_validation(world.v.create_license, "MaxCount", **_req(world, entitlements=[counted("Seats", -1)]))
