"""The wire: awsJson1_1 over POST /, SigV4 verification, and the error bodies,
checked with hand-built requests (botocore's SigV4Auth signs them) and with
boto3 where a client can make the same mistake."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
import requests

from harness import (
    JSON_CT,
    assert_wire_error,
    checkout,
    consumed,
    expect_error,
    signed_post,
    unsigned_post,
    utcnow,
)

LIST = "AWSLicenseManager.ListLicenses"


def _post(world, target=LIST, body=b"{}", **kw):
    acct = world.customer
    kw.setdefault("access_key_id", acct.access_key_id)
    kw.setdefault("secret", acct.secret_access_key)
    return signed_post(world.server.url, target, body, **kw)


def test_healthz(server):
    r = requests.get(server.url + "/healthz", timeout=5)
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_signed_request_succeeds_with_json_1_1(world):
    r = _post(world)
    assert r.status_code == 200, r.text
    assert r.headers.get("Content-Type", "").split(";")[0].strip() == JSON_CT
    assert r.headers.get("x-amzn-RequestId"), "missing x-amzn-RequestId"
    assert isinstance(r.json().get("Licenses"), list)


def test_empty_output_is_json(world):
    _, req = world.create_license()
    out = checkout(world.c, req["ProductSKU"], world.fingerprint())
    body = json.dumps({"LicenseConsumptionToken": out["LicenseConsumptionToken"]}).encode()
    r = _post(world, "AWSLicenseManager.CheckInLicense", body)
    assert r.status_code == 200, r.text
    assert r.text.strip() in ("", "{}")


def test_wrong_secret(world):
    r = _post(world, secret="not-the-secret")
    assert_wire_error(r, "InvalidSignatureException")
    bad = world.server.client(world.customer, secret="not-the-secret")
    expect_error("InvalidSignatureException", bad.list_licenses)


def test_signature_over_a_different_body(world):
    r = _post(world, body=b'{"MaxResults": 5}', send_body=b'{"MaxResults": 6}')
    assert_wire_error(r, "InvalidSignatureException")


def test_unknown_access_key(world):
    r = _post(world, access_key_id="AKIA" + uuid.uuid4().hex[:16].upper())
    assert_wire_error(r, "UnrecognizedClientException")
    bad = world.server.client(world.customer, access_key_id="AKIANOSUCHKEY0000000")
    expect_error("UnrecognizedClientException", bad.list_licenses)


def test_revoked_access_key(world):
    key = world.server.create_key(world.customer.account_id)
    client = world.server.client(key)
    client.list_received_licenses()  # the new key works
    world.server.revoke_key(key.access_key_id)
    expect_error("UnrecognizedClientException", client.list_received_licenses)
    # the account's other key still works
    world.c.list_received_licenses()


def test_key_revoked_between_checkout_and_check_in(world):
    """The server keeps what it learned of a key (its account and secret);
    whether the key is still active is settled by each write itself, so a
    revocation by another process is honoured by the very next checkout,
    check-in or extension."""
    arn, req = world.create_license()
    key = world.server.create_key(world.customer.account_id)
    client = world.server.client(key)
    sku, fp = req["ProductSKU"], world.fingerprint()
    first = checkout(client, sku, fp)
    client.extend_license_consumption(LicenseConsumptionToken=first["LicenseConsumptionToken"])
    world.server.revoke_key(key.access_key_id)
    expect_error("UnrecognizedClientException", lambda: checkout(client, sku, fp))
    expect_error("UnrecognizedClientException", client.check_in_license,
                 LicenseConsumptionToken=first["LicenseConsumptionToken"])
    expect_error("UnrecognizedClientException", client.extend_license_consumption,
                 LicenseConsumptionToken=first["LicenseConsumptionToken"])
    assert consumed(world.v, arn) == "1", "a refused write takes and returns nothing"
    world.c.check_in_license(LicenseConsumptionToken=first["LicenseConsumptionToken"])
    assert consumed(world.v, arn) == "0"


def test_missing_authorization(world):
    r = unsigned_post(world.server.url, LIST, b"{}")
    assert_wire_error(r, "MissingAuthenticationTokenException")


@pytest.mark.parametrize("auth", [
    "AWS4-HMAC-SHA256 garbage",
    "AWS4-HMAC-SHA256 Credential={akid}/{day}/us-east-1/license-manager/aws4_request",
    "AWS4-HMAC-SHA256 Credential={akid}/{day}/us-east-1/license-manager/aws4_request, SignedHeaders=host;x-amz-date",
])
def test_malformed_authorization(world, auth):
    now = utcnow()
    header = auth.format(akid=world.customer.access_key_id, day=now.strftime("%Y%m%d"))
    r = unsigned_post(world.server.url, LIST, b"{}", headers={
        "Authorization": header, "X-Amz-Date": now.strftime("%Y%m%dT%H%M%SZ")})
    assert_wire_error(r, "IncompleteSignatureException")


@pytest.mark.parametrize("minutes", [-20, 20])
def test_request_time_too_far_off(world, minutes):
    r = _post(world, when=utcnow() + dt.timedelta(minutes=minutes))
    assert_wire_error(r, "InvalidSignatureException")


@pytest.mark.parametrize("minutes", [-10, 10])
def test_request_time_within_fifteen_minutes(world, minutes):
    r = _post(world, when=utcnow() + dt.timedelta(minutes=minutes))
    assert r.status_code == 200, r.text


def test_signed_for_another_service(world):
    r = _post(world, service="s3")
    assert_wire_error(r, "InvalidSignatureException")


def test_unknown_operation(world):
    r = _post(world, target="AWSLicenseManager.MakeLicensesFree")
    assert_wire_error(r, "UnknownOperationException")


def test_malformed_json(world):
    r = _post(world, body=b'{"MaxResults": ')
    assert_wire_error(r, "SerializationException")


def test_error_body_is_json_with_type_and_message(world):
    body = json.dumps({"LicenseArn": "not-an-arn"}).encode()
    r = _post(world, "AWSLicenseManager.GetLicense", body)
    parsed = assert_wire_error(r, "ValidationException")
    assert parsed["Message"]
    assert r.headers.get("Content-Type", "").split(";")[0].strip() == JSON_CT
