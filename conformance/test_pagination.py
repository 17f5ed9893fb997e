"""NextToken / MaxResults on every List operation, and the documented filters."""

from __future__ import annotations

import uuid

import pytest

from harness import create_license, expect_error, ids, list_all, version_request


@pytest.fixture(scope="module")
def seven(server):
    """Fresh accounts on the shared server: an issuer with exactly seven
    licenses, all issued to one receiver."""
    tag = uuid.uuid4().hex[:6]
    issuer = server.create_account(f"pager-issuer-{tag}")
    receiver = server.create_account(f"pager-receiver-{tag}")
    vi, vr = server.client(issuer), server.client(receiver)
    sku = f"page-{uuid.uuid4()}"
    arns = [create_license(vi, beneficiary=receiver.account_id, sku=sku, name=f"Page {i}")[0] for i in range(7)]
    assert len(set(arns)) == 7
    return {"issuer": issuer, "receiver": receiver, "vi": vi, "vr": vr, "sku": sku, "arns": arns}


def _pages(fn, key, size, **kw):
    sizes, items, next_token = [], [], None
    for _ in range(10):
        args = dict(kw, MaxResults=size)
        if next_token:
            args["NextToken"] = next_token
        resp = fn(**args)
        page = resp.get(key, [])
        sizes.append(len(page))
        items.extend(page)
        next_token = resp.get("NextToken")
        if not next_token:
            return sizes, items
    pytest.fail("pagination did not end within 10 pages")


def test_list_licenses_pages_3_3_1(seven):
    sizes, items = _pages(seven["vi"].list_licenses, "Licenses", 3)
    assert sizes == [3, 3, 1]
    assert sorted(ids(items)) == sorted(seven["arns"])


def test_list_licenses_pages_with_a_filter(seven):
    f = [{"Name": "ProductSKU", "Values": [seven["sku"]]}]
    sizes, items = _pages(seven["vi"].list_licenses, "Licenses", 3, Filters=f)
    assert sizes == [3, 3, 1]
    assert sorted(ids(items)) == sorted(seven["arns"])


def test_list_received_licenses_pages_3_3_1(seven):
    sizes, items = _pages(seven["vr"].list_received_licenses, "Licenses", 3)
    assert sizes == [3, 3, 1]
    assert sorted(ids(items)) == sorted(seven["arns"])
    assert all(i["ReceivedMetadata"]["ReceivedStatus"] == "ACTIVE" for i in items)


def test_exact_page_size_and_one_big_page(seven):
    sizes, items = _pages(seven["vi"].list_licenses, "Licenses", 7)
    assert sizes == [7] and len(set(ids(items))) == 7
    resp = seven["vi"].list_licenses(MaxResults=100)
    assert len(resp["Licenses"]) == 7 and not resp.get("NextToken")
    resp = seven["vi"].list_licenses()
    assert len(resp["Licenses"]) == 7 and not resp.get("NextToken")


def test_list_license_versions_pages(world):
    arn, req = world.create_license(name="v1")
    for n in range(2, 6):
        world.v.create_license_version(**version_request(arn, req, source_version=str(n - 1), LicenseName=f"v{n}"))
    sizes, items = _pages(world.v.list_license_versions, "Licenses", 3, LicenseArn=arn)
    assert sizes == [3, 2]
    assert sorted(int(i["Version"]) for i in items) == [1, 2, 3, 4, 5]
    assert {i["LicenseName"] for i in items} == {f"v{n}" for n in range(1, 6)}


def test_bad_next_token(seven):
    with pytest.raises(Exception) as ei:
        seven["vi"].list_licenses(NextToken="this-is-not-a-token", MaxResults=3)
    code = getattr(ei.value, "response", {}).get("Error", {}).get("Code")
    assert code in ("ValidationException", "InvalidParameterValueException"), ei.value


def test_list_licenses_filters(world):
    tag = uuid.uuid4().hex[:8]
    sku_a, sku_b = f"filt-a-{tag}", f"filt-b-{tag}"
    issuer = f"FiltIssuer{tag}"
    a, areq = world.create_license(sku=sku_a)
    b, _ = world.create_license(sku=sku_b, issuer=issuer, beneficiary=world.stranger.account_id)
    c, _ = world.create_license(sku=sku_b, beneficiary=world.stranger.account_id)
    mine = {a, b, c}

    def listed(name, value):
        got = list_all(world.v.list_licenses, "Licenses", page_size=100,
                       Filters=[{"Name": name, "Values": [value]}])
        return set(ids(got)) & mine

    assert listed("ProductSKU", sku_a) == {a}
    assert listed("ProductSKU", sku_b) == {b, c}
    assert listed("Beneficiary", world.customer.account_id) == {a}
    assert listed("Beneficiary", world.stranger.account_id) == {b, c}
    assert listed("Fingerprint", f"aws:{world.vendor.account_id}:{issuer}:issuer-fingerprint") == {b}
    assert listed("Fingerprint", world.fingerprint()) == {a, c}
    assert listed("Status", "AVAILABLE") == mine
    world.v.create_license_version(**version_request(a, areq, status="SUSPENDED", source_version="1"))
    assert listed("Status", "SUSPENDED") == {a}
    assert listed("Status", "AVAILABLE") == {b, c}
    # filters combine
    got = world.v.list_licenses(Filters=[{"Name": "ProductSKU", "Values": [sku_b]},
                                         {"Name": "Fingerprint", "Values": [world.fingerprint()]}])["Licenses"]
    assert ids(got) == [c]


def test_unknown_filter_name_is_refused(world):
    expect_error("ValidationException", world.v.list_licenses, Filters=[{"Name": "Nope", "Values": ["x"]}])
    expect_error("ValidationException", world.c.list_received_licenses, Filters=[{"Name": "Nope", "Values": ["x"]}])
