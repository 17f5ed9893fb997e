"""The isolation matrix: every operation that touches one license, its
consumption, its grants or its tokens, called by someone who may not.

Each cell gets a fresh license L (vendor → customer, 10 Seats, provisional and
borrow configurations, one tag), the customer's own checkout and refresh token
on L, and a PENDING_ACCEPT grant of L to a bystander ("the target grant").
The callers:

  stranger   an account with nothing to do with L
  lacking    a grantee whose ACTIVE grant lacks the operation (for operations
             no AllowedOperation covers, a grant with all seven)
  disabled   a grantee whose grant, with all seven operations, was ACTIVE (and
             used for a checkout) and is now DISABLED
  rejected   the same, then REJECTED by the grantee
  deleted    the same, then DELETED by the vendor
  bearer     the customer (L's beneficiary) with an access token for another
             of its licenses, sent as `Authorization: Bearer`

Check-in and extension act on the caller's own consumption when it has one
(grantees), else on the customer's. Grant operations act on the target grant,
DeleteToken on the customer's token. Every cell is refused, with
NoEntitlementsAllowedException for CheckoutLicense and AccessDeniedException
for everything else, except reads (GetLicense, GetLicenseUsage,
ListLicenseVersions) by an ACTIVE grantee, which any ACTIVE grant allows.
After each call the license, its usage, versions, tags, grants and tokens are
exactly as before.
"""

from __future__ import annotations

import pytest
from botocore import xform_name
from botocore.exceptions import ClientError

from harness import (
    ALL_OPERATIONS,
    REGION,
    World,
    accept_and_activate,
    bearer_post,
    borrowable,
    checkout,
    counted,
    create_grant,
    error_type,
    get_grant,
    principal,
    set_grant_status,
    token,
    usage,
    version_request,
)

@pytest.fixture(scope="module")
def world(server) -> World:
    """The matrix's own vendor, customer and stranger on the shared server, so
    that its hundred-odd licenses do not crowd the shared accounts' lists."""
    return World(server, tag="isolation")


CALLERS = ["stranger", "lacking", "disabled", "rejected", "deleted", "bearer"]

# The AllowedOperation each operation needs from a grant.
NEEDS = {
    "CheckoutLicense": "CheckoutLicense",
    "CheckInLicense": "CheckInLicense",
    "ExtendLicenseConsumption": "ExtendConsumptionLicense",
    "CheckoutBorrowLicense": "CheckoutBorrowLicense",
    "CreateToken": "CreateToken",
    "CreateGrant": "CreateGrant",
}
READS = {"GetLicense", "GetLicenseUsage", "ListLicenseVersions"}
ON_CONSUMPTION = {"CheckInLicense", "ExtendLicenseConsumption"}


def _params(op: str, cx: dict) -> dict:
    arn, req = cx["arn"], cx["req"]
    return {
        "GetLicense": lambda: {"LicenseArn": arn},
        "GetLicenseUsage": lambda: {"LicenseArn": arn},
        "ListLicenseVersions": lambda: {"LicenseArn": arn},
        "CreateLicenseVersion": lambda: version_request(arn, req, source_version=cx["version"],
                                                        LicenseName="Hijacked"),
        "DeleteLicense": lambda: {"LicenseArn": arn, "SourceVersion": cx["version"]},
        "TagResource": lambda: {"ResourceArn": arn, "Tags": [{"Key": "owner", "Value": "intruder"}]},
        "ListTagsForResource": lambda: {"ResourceArn": arn},
        "CheckoutLicense": lambda: {"ProductSKU": req["ProductSKU"], "CheckoutType": "PROVISIONAL",
                                    "KeyFingerprint": cx["fp"], "ClientToken": token(),
                                    "Entitlements": [{"Name": "Seats", "Value": "1", "Unit": "Count"}]},
        "CheckInLicense": lambda: {"LicenseConsumptionToken": cx["consumption"]},
        "ExtendLicenseConsumption": lambda: {"LicenseConsumptionToken": cx["consumption"]},
        "CheckoutBorrowLicense": lambda: {"LicenseArn": arn, "DigitalSignatureMethod": "JWT_PS384",
                                          "ClientToken": token(),
                                          "Entitlements": [{"Name": "Seats", "Value": "1", "Unit": "Count"}]},
        "CreateToken": lambda: {"LicenseArn": arn, "ClientToken": token()},
        "CreateGrant": lambda: {"ClientToken": token(), "GrantName": "intruder", "LicenseArn": arn,
                                "Principals": [cx["holder"].root_arn], "HomeRegion": REGION,
                                "AllowedOperations": ["CheckoutLicense"]},
        "AcceptGrant": lambda: {"GrantArn": cx["target"]},
        "RejectGrant": lambda: {"GrantArn": cx["target"]},
        "CreateGrantVersion": lambda: {"ClientToken": token(), "GrantArn": cx["target"], "Status": "ACTIVE",
                                       "StatusReason": "intruder"},
        "DeleteGrant": lambda: {"GrantArn": cx["target"], "Version": "1"},
        "GetGrant": lambda: {"GrantArn": cx["target"]},
        "DeleteToken": lambda: {"TokenId": cx["token_id"]},
    }[op]()


OPERATIONS = [
    "GetLicense", "GetLicenseUsage", "ListLicenseVersions", "CreateLicenseVersion", "DeleteLicense",
    "TagResource", "ListTagsForResource", "CheckoutLicense", "CheckInLicense", "ExtendLicenseConsumption",
    "CheckoutBorrowLicense", "CreateToken", "CreateGrant", "AcceptGrant", "RejectGrant",
    "CreateGrantVersion", "DeleteGrant", "GetGrant", "DeleteToken",
]


def expected(op: str, caller: str):
    """The error code the cell must answer, or None where the call is allowed."""
    if op in READS and caller == "lacking":
        return None
    if op == "CheckoutLicense":
        return "NoEntitlementsAllowedException"
    return "AccessDeniedException"


@pytest.fixture(scope="module")
def cast(world):
    server = world.server
    grantee = server.create_account("iso-grantee")
    holder = server.create_account("iso-holder")
    # The customer's access token for another license it holds.
    other_arn, _ = world.create_license()
    refresh = world.c.create_token(LicenseArn=other_arn, ClientToken=token())["Token"]
    access = world.c.get_access_token(Token=refresh)["AccessToken"]
    return {"grantee": grantee, "g": server.client(grantee), "holder": holder, "h": server.client(holder),
            "access": access, "other_arn": other_arn}


def _setup(world, cast, op: str, caller: str) -> dict:
    v, c, g = world.v, world.c, cast["g"]
    arn, req = world.create_license(entitlements=[counted("Seats", 10)],
                                    consumption=borrowable(provisional_ttl=60),
                                    tags=[{"Key": "team", "Value": "blue"}])
    fp = world.fingerprint()
    cx = {"arn": arn, "req": req, "fp": fp, "holder": cast["holder"], "own_grant": None}
    cx["customer_consumption"] = checkout(c, req["ProductSKU"], fp, value=2)["LicenseConsumptionToken"]
    cx["consumption"] = cx["customer_consumption"]
    cx["target"] = create_grant(v, arn, cast["holder"], ["CheckoutLicense"])["GrantArn"]
    cx["token_id"] = c.create_token(LicenseArn=arn, ClientToken=token())["TokenId"]

    if caller == "stranger":
        cx["client"] = world.s
    elif caller == "bearer":
        cx["client"] = None
    else:
        cx["client"] = g
        ops = list(ALL_OPERATIONS)
        if caller == "lacking" and op in NEEDS:
            ops.remove(NEEDS[op])
        own = create_grant(v, arn, cast["grantee"], ops)["GrantArn"]
        accept_and_activate(g, own)
        cx["own_grant"] = own
        if op in ON_CONSUMPTION:
            cx["consumption"] = checkout(g, req["ProductSKU"], fp)["LicenseConsumptionToken"]
        if caller == "disabled":
            assert set_grant_status(g, own, "DISABLED")["Status"] == "DISABLED"
        elif caller == "rejected":
            assert g.reject_grant(GrantArn=own)["Status"] == "REJECTED"
        elif caller == "deleted":
            assert v.delete_grant(GrantArn=own, Version=get_grant(v, own)["Version"])["Status"] == "DELETED"

    if op == "ExtendLicenseConsumption":
        # A new TTL, so that an extension that went through would move the Expiration.
        cur = v.get_license(LicenseArn=arn)["License"]["Version"]
        v.create_license_version(**version_request(arn, req, source_version=cur,
                                                   ConsumptionConfiguration=borrowable(provisional_ttl=120)))
    cx["version"] = v.get_license(LicenseArn=arn)["License"]["Version"]
    return cx


def _grant_state(v_or_party, arn):
    g = get_grant(v_or_party, arn)
    return (g["Version"], g["GrantStatus"], g["GrantName"], tuple(sorted(g["GrantedOperations"])))


def _snapshot(world, cast, cx) -> dict:
    v, arn = world.v, cx["arn"]
    lic = v.get_license(LicenseArn=arn)["License"]
    lic.pop("CreateTime", None)
    arn_filter = [{"Name": "LicenseArns", "Values": [arn]}]
    snap = {
        "license": lic,
        "versions": [x["Version"] for x in v.list_license_versions(LicenseArn=arn)["Licenses"]],
        "usage": {n: u["ConsumedValue"] for n, u in usage(v, arn).items()},
        "tags": sorted((t["Key"], t["Value"]) for t in v.list_tags_for_resource(ResourceArn=arn)["Tags"]),
        "target_grant": _grant_state(v, cx["target"]),
        "own_grant": _grant_state(v, cx["own_grant"]) if cx["own_grant"] else None,
        "grants_of_L": sorted((x["GrantArn"], x["Version"], x["GrantStatus"]) for x in v.list_distributed_grants(
            Filters=[{"Name": "LicenseArn", "Values": [arn]}])["Grants"]),
        "held_by_holder": sorted((x["GrantArn"], x["Version"]) for x in cast["h"].list_received_grants(
            Filters=[{"Name": "LicenseArn", "Values": [arn]}])["Grants"]),
        "tokens": {who: sorted((t["TokenId"], t["Status"]) for t in cl.list_tokens(Filters=arn_filter)["Tokens"])
                   for who, cl in (("customer", world.c), ("grantee", cast["g"]), ("stranger", world.s))},
        # DryRun reports the current Expiration without moving it.
        "customer_consumption": world.c.extend_license_consumption(
            LicenseConsumptionToken=cx["customer_consumption"], DryRun=True)["Expiration"],
    }
    return snap


def _call(world, cast, cx, op: str):
    """(error code or None, response body)"""
    params = _params(op, cx)
    if cx["client"] is None:
        r = bearer_post(world.server.url, op, params, cast["access"])
        if r.status_code == 200:
            return None, r.json()
        assert r.status_code == 400, f"{op} by bearer: HTTP {r.status_code} {r.text[:300]}"
        return error_type(r), r.json()
    try:
        return None, getattr(cx["client"], xform_name(op))(**params)
    except ClientError as e:
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        assert status == 400, f"{op}: HTTP {status} {e.response}"
        return e.response["Error"]["Code"], e.response


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("op", OPERATIONS)
def test_isolation(world, cast, op, caller):
    cx = _setup(world, cast, op, caller)
    before = _snapshot(world, cast, cx)
    code, body = _call(world, cast, cx, op)
    want = expected(op, caller)
    if want is None:
        assert code is None, f"{op} by {caller}: expected success, got {code}: {body}"
        if op == "GetLicense":
            assert body["License"]["LicenseArn"] == cx["arn"]
        elif op == "GetLicenseUsage":
            got = {u["Name"]: u["ConsumedValue"] for u in body["LicenseUsage"]["EntitlementUsages"]}
            assert got == before["usage"]
        else:
            assert [x["Version"] for x in body["Licenses"]] == before["versions"]
    else:
        assert code == want, f"{op} by {caller}: expected {want}, got {code or 'success'}: {body}"
    after = _snapshot(world, cast, cx)
    assert after == before, f"{op} by {caller} changed something"


def test_the_matrix_setup_is_meaningful(world, cast):
    """The same calls by the rightful parties succeed, so the refusals above
    are about who calls, not about the requests."""
    cx = _setup(world, cast, "CheckoutLicense", "lacking")
    v, c, h = world.v, world.c, cast["h"]
    # The grantee's grant lacks only CheckoutLicense: it can still borrow.
    borrowed = cast["g"].checkout_borrow_license(**_params("CheckoutBorrowLicense", cx))
    assert borrowed["LicenseArn"] == cx["arn"]
    assert c.checkout_license(**_params("CheckoutLicense", cx))["LicenseArn"] == cx["arn"]
    assert c.checkout_borrow_license(**_params("CheckoutBorrowLicense", cx))["LicenseArn"] == cx["arn"]
    c.extend_license_consumption(**_params("ExtendLicenseConsumption", cx))
    c.check_in_license(**_params("CheckInLicense", cx))
    assert c.create_token(**_params("CreateToken", cx))["TokenType"] == "REFRESH_TOKEN"
    assert get_grant(h, cx["target"])["GrantArn"] == cx["target"]
    assert h.accept_grant(**_params("AcceptGrant", cx))["Status"] == "DISABLED"
    assert h.create_grant_version(**_params("CreateGrantVersion", cx))["Status"] == "ACTIVE"
    assert v.create_grant(**dict(_params("CreateGrant", cx), Principals=[principal(world.stranger)]))["Status"] \
        == "PENDING_ACCEPT"
    v.tag_resource(**_params("TagResource", cx))
    assert v.create_license_version(**_params("CreateLicenseVersion", cx))["Version"] == str(int(cx["version"]) + 1)
    c.delete_token(**_params("DeleteToken", cx))
    assert v.delete_grant(GrantArn=cx["target"], Version=get_grant(v, cx["target"])["Version"])["Status"] == "DELETED"
    lic = v.get_license(LicenseArn=cx["arn"])["License"]
    assert v.delete_license(LicenseArn=cx["arn"], SourceVersion=lic["Version"])["Status"] in ("DELETED", "PENDING_DELETE")

