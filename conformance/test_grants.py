"""Grants: CreateGrant, AcceptGrant, CreateGrantVersion, RejectGrant,
DeleteGrant, GetGrant, ListDistributedGrants, ListReceivedGrants, the
ReceivedMetadata of ListReceivedLicenses, and licenses used through grants
(re-granted, deactivated, deleted)."""

from __future__ import annotations

import uuid

import pytest

from harness import (
    ALL_OPERATIONS,
    REGION,
    accept_and_activate,
    active_grant,
    borrow,
    borrowable,
    checkout,
    consumed,
    counted,
    create_grant,
    expect_error,
    expect_validation,
    fingerprint,
    get_grant,
    grant_arn_re,
    ids,
    list_all,
    principal,
    received,
    set_grant_status,
    token,
)


@pytest.fixture(scope="module")
def people(world):
    """Two more accounts on the shared server: a customer that receives grants
    from the vendor, and that customer's sub-account."""
    server = world.server
    acme = server.create_account("grants-acme")
    sub = server.create_account("grants-acme-sub")
    return {
        "acme": acme, "a": server.client(acme),
        "sub": sub, "b": server.client(sub),
        "raw": server.client(sub, validate=False),
    }


FIVE = ["CreateGrant", "CheckoutLicense", "CheckInLicense", "ExtendConsumptionLicense", "CreateToken"]


def _statuses(client, grant_arn: str) -> list:
    """[(Version, GrantStatus)] of every version of a grant, via GetGrant Version."""
    current = int(get_grant(client, grant_arn)["Version"])
    out = []
    for v in range(1, current + 1):
        g = get_grant(client, grant_arn, str(v))
        assert g["Version"] == str(v), g
        out.append((g["Version"], g["GrantStatus"]))
    return out


def test_three_level_grant_lifecycle(world, people):
    v, acme, a, sub, b = world.v, people["acme"], people["a"], people["sub"], people["b"]
    arn, req = world.create_license(entitlements=[counted("Seats", 3)])
    sku, fp = req["ProductSKU"], world.fingerprint()

    # --- vendor → acme
    g1 = create_grant(v, arn, acme, FIVE, name="to-acme")
    g1_arn = g1["GrantArn"]
    assert grant_arn_re(world.vendor.account_id).match(g1_arn), g1
    assert (g1["Status"], g1["Version"]) == ("PENDING_ACCEPT", "1")
    got = get_grant(v, g1_arn)
    assert got["GrantName"] == "to-acme"
    assert got["LicenseArn"] == arn and got["ParentArn"] == arn
    assert got["GranteePrincipalArn"] == acme.root_arn
    assert got["HomeRegion"] == REGION
    assert got["GrantStatus"] == "PENDING_ACCEPT"
    assert sorted(got["GrantedOperations"]) == sorted(FIVE)
    assert get_grant(a, g1_arn) == got, "the grantee sees the same grant as the grantor"

    # Pending: acme sees the offer but cannot use the license yet.
    meta = received(a, arn)
    assert meta is not None, "a PENDING_ACCEPT grant is listed in ListReceivedLicenses"
    assert meta["ReceivedMetadata"]["ReceivedStatus"] == "PENDING_ACCEPT"
    assert sorted(meta["ReceivedMetadata"]["AllowedOperations"]) == sorted(FIVE)
    expect_error("AccessDeniedException", a.get_license, LicenseArn=arn)
    expect_error("NoEntitlementsAllowedException", checkout, client=a, sku=sku, fp=fp)
    expect_error("ValidationException", set_grant_status, client=a, grant_arn=g1_arn, status="ACTIVE")
    expect_error("AccessDeniedException", v.accept_grant, GrantArn=g1_arn)

    # Accepted is DISABLED until activated: still no use, no re-grant.
    acc = a.accept_grant(GrantArn=g1_arn)
    assert (acc["GrantArn"], acc["Status"], acc["Version"]) == (g1_arn, "DISABLED", "2")
    expect_error("ValidationException", a.accept_grant, GrantArn=g1_arn)
    assert received(a, arn)["ReceivedMetadata"]["ReceivedStatus"] == "DISABLED"
    expect_error("NoEntitlementsAllowedException", checkout, client=a, sku=sku, fp=fp)
    expect_error("AccessDeniedException", create_grant, client=a, license_arn=arn, grantee=sub,
                 ops=["CheckoutLicense"])

    act = set_grant_status(a, g1_arn, "ACTIVE", StatusReason="go live", SourceVersion="2")
    assert (act["Status"], act["Version"]) == ("ACTIVE", "3")
    expect_error("ValidationException", set_grant_status, client=a, grant_arn=g1_arn, status="DISABLED",
                 SourceVersion="2")
    assert get_grant(a, g1_arn)["StatusReason"] == "go live"
    meta = received(a, arn)["ReceivedMetadata"]
    assert meta["ReceivedStatus"] == "ACTIVE" and sorted(meta["AllowedOperations"]) == sorted(FIVE)
    assert a.get_license(LicenseArn=arn)["License"]["LicenseArn"] == arn

    # --- acme → its sub-account, only with operations acme holds
    expect_error("AccessDeniedException", create_grant, client=a, license_arn=arn, grantee=sub,
                 ops=["CheckoutLicense", "CheckoutBorrowLicense"])
    expect_error("ValidationException", create_grant, client=a, license_arn=arn, grantee=acme,
                 ops=["CheckoutLicense"])
    g2 = create_grant(a, arn, sub, ["CheckoutLicense", "CheckInLicense"], name="to-sub")
    g2_arn = g2["GrantArn"]
    assert grant_arn_re(acme.account_id).match(g2_arn), g2
    assert g2["Status"] == "PENDING_ACCEPT"
    g2_full = get_grant(b, g2_arn)
    assert g2_full["LicenseArn"] == arn
    assert g2_full["ParentArn"] == g1_arn, "a re-grant's parent is the grant it was made from"
    assert g2_full["GranteePrincipalArn"] == sub.root_arn
    expect_error("AccessDeniedException", v.get_grant, GrantArn=g2_arn)  # the vendor is no party to it
    assert ids(a.list_distributed_grants(Filters=[{"Name": "LicenseArn", "Values": [arn]}])["Grants"],
               "GrantArn") == [g2_arn]
    assert ids(v.list_distributed_grants(Filters=[{"Name": "LicenseArn", "Values": [arn]}])["Grants"],
               "GrantArn") == [g1_arn]

    accept_and_activate(b, g2_arn)
    sub_meta = received(b, arn)["ReceivedMetadata"]
    assert sub_meta["ReceivedStatus"] == "ACTIVE"
    assert sorted(sub_meta["AllowedOperations"]) == ["CheckInLicense", "CheckoutLicense"]

    # The sub-account checks out with the vendor's fingerprint, from the one pool.
    c1 = checkout(b, sku, fp, NodeId="sub-node")
    assert c1["LicenseArn"] == arn
    assert c1["EntitlementsAllowed"] == [{"Name": "Seats", "Value": "1", "Unit": "Count"}]
    assert consumed(v, arn) == "1"
    b.check_in_license(LicenseConsumptionToken=c1["LicenseConsumptionToken"])
    assert consumed(v, arn) == "0"
    c2 = checkout(b, sku, fp)
    assert consumed(v, arn) == "1"
    assert b.get_license(LicenseArn=arn)["License"]["LicenseArn"] == arn
    assert consumed(b, arn) == "1", "an ACTIVE grantee reads the usage"
    # ExtendConsumptionLicense and CreateToken were not handed on.
    expect_error("AccessDeniedException", b.extend_license_consumption,
                 LicenseConsumptionToken=c2["LicenseConsumptionToken"])
    expect_error("AccessDeniedException", b.create_token, LicenseArn=arn, ClientToken=token())

    # --- deactivating the middle grant stops the sub-account at once
    off = set_grant_status(a, g1_arn, "DISABLED", StatusReason="paused")
    assert (off["Status"], off["Version"]) == ("DISABLED", "4")
    assert get_grant(b, g2_arn)["GrantStatus"] == "ACTIVE", "the sub-grant itself is unchanged"
    expect_error("NoEntitlementsAllowedException", checkout, client=b, sku=sku, fp=fp)
    expect_error("NoEntitlementsAllowedException", checkout, client=a, sku=sku, fp=fp)
    expect_error("AccessDeniedException", b.get_license, LicenseArn=arn)
    assert consumed(v, arn) == "1", "consumption already out stays counted"
    expect_error("AccessDeniedException", b.check_in_license, LicenseConsumptionToken=c2["LicenseConsumptionToken"])
    assert consumed(v, arn) == "1"
    expect_error("AccessDeniedException", create_grant, client=a, license_arn=arn, grantee=sub,
                 ops=["CheckoutLicense"])

    on = set_grant_status(a, g1_arn, "ACTIVE")
    assert (on["Status"], on["Version"]) == ("ACTIVE", "5")
    b.check_in_license(LicenseConsumptionToken=c2["LicenseConsumptionToken"])
    assert consumed(v, arn) == "0"
    c3 = checkout(b, sku, fp)
    assert consumed(v, arn) == "1"

    # --- the grantor revises name and operations; the status is the grantee's
    rev = v.create_grant_version(ClientToken=token(), GrantArn=g1_arn, GrantName="to-acme-2",
                                 AllowedOperations=["CreateGrant", "CheckoutLicense", "CheckInLicense"],
                                 SourceVersion="5")
    assert (rev["Status"], rev["Version"]) == ("ACTIVE", "6")
    g1_now = get_grant(a, g1_arn)
    assert g1_now["GrantName"] == "to-acme-2"
    assert sorted(g1_now["GrantedOperations"]) == ["CheckInLicense", "CheckoutLicense", "CreateGrant"]
    assert sorted(received(a, arn)["ReceivedMetadata"]["AllowedOperations"]) == sorted(g1_now["GrantedOperations"])
    expect_error("AccessDeniedException", v.create_grant_version, ClientToken=token(), GrantArn=g1_arn,
                 Status="DISABLED")
    expect_error("AccessDeniedException", a.create_grant_version, ClientToken=token(), GrantArn=g1_arn,
                 GrantName="mine now")
    expect_error("AccessDeniedException", a.create_grant_version, ClientToken=token(), GrantArn=g1_arn,
                 AllowedOperations=ALL_OPERATIONS)
    expect_error("AccessDeniedException", b.create_grant_version, ClientToken=token(), GrantArn=g1_arn,
                 Status="DISABLED")
    assert get_grant(a, g1_arn)["Version"] == "6", "refused revisions made no version"
    expect_error("AccessDeniedException", a.create_token, LicenseArn=arn, ClientToken=token())

    # --- only the grantor deletes, at the current version
    expect_error("AccessDeniedException", a.delete_grant, GrantArn=g1_arn, Version="6")
    expect_error("ValidationException", v.delete_grant, GrantArn=g1_arn, Version="5")
    gone = v.delete_grant(GrantArn=g1_arn, Version="6", StatusReason="contract ended")
    assert (gone["GrantArn"], gone["Status"], gone["Version"]) == (g1_arn, "DELETED", "7")
    g1_now = get_grant(a, g1_arn)
    assert (g1_now["GrantStatus"], g1_now["StatusReason"]) == ("DELETED", "contract ended")
    expect_error("NoEntitlementsAllowedException", checkout, client=b, sku=sku, fp=fp)
    expect_error("NoEntitlementsAllowedException", checkout, client=a, sku=sku, fp=fp)
    assert received(a, arn) is None, "a DELETED grant no longer shows the license"
    expect_error("ValidationException", set_grant_status, client=a, grant_arn=g1_arn, status="ACTIVE")
    expect_error("ValidationException", v.delete_grant, GrantArn=g1_arn, Version="7")
    assert consumed(v, arn) == "1", "the sub-account's checkout is still out"
    expect_error("AccessDeniedException", b.check_in_license, LicenseConsumptionToken=c3["LicenseConsumptionToken"])

    # --- the version history
    assert _statuses(v, g1_arn) == [("1", "PENDING_ACCEPT"), ("2", "DISABLED"), ("3", "ACTIVE"),
                                    ("4", "DISABLED"), ("5", "ACTIVE"), ("6", "ACTIVE"), ("7", "DELETED")]
    assert get_grant(a, g1_arn, "1")["GrantName"] == "to-acme"
    assert sorted(get_grant(a, g1_arn, "5")["GrantedOperations"]) == sorted(FIVE)
    assert get_grant(a, g1_arn, "6")["GrantName"] == "to-acme-2"
    assert _statuses(b, g2_arn) == [("1", "PENDING_ACCEPT"), ("2", "DISABLED"), ("3", "ACTIVE")]


def test_reject_is_for_good(world, people):
    v, sub, b = world.v, people["sub"], people["b"]
    arn, req = world.create_license()
    g = create_grant(v, arn, sub, ["CheckoutLicense"])["GrantArn"]
    expect_error("AccessDeniedException", v.reject_grant, GrantArn=g)
    expect_error("AccessDeniedException", world.s.reject_grant, GrantArn=g)
    rej = b.reject_grant(GrantArn=g)
    assert (rej["GrantArn"], rej["Status"], rej["Version"]) == (g, "REJECTED", "2")
    assert received(b, arn) is None, "a REJECTED grant no longer shows the license"
    expect_error("ValidationException", b.accept_grant, GrantArn=g)
    expect_error("ValidationException", set_grant_status, client=b, grant_arn=g, status="ACTIVE")
    expect_error("NoEntitlementsAllowedException", checkout, client=b, sku=req["ProductSKU"], fp=world.fingerprint())
    assert get_grant(v, g)["GrantStatus"] == "REJECTED"
    assert _statuses(b, g) == [("1", "PENDING_ACCEPT"), ("2", "REJECTED")]


def test_reject_an_active_grant_stops_its_use(world, people):
    v, sub, b = world.v, people["sub"], people["b"]
    arn, req = world.create_license()
    g = active_grant(v, b, arn, sub, ["CheckoutLicense", "CheckInLicense"])
    out = checkout(b, req["ProductSKU"], world.fingerprint())
    assert b.reject_grant(GrantArn=g)["Status"] == "REJECTED"
    expect_error("NoEntitlementsAllowedException", checkout, client=b, sku=req["ProductSKU"], fp=world.fingerprint())
    expect_error("AccessDeniedException", b.check_in_license, LicenseConsumptionToken=out["LicenseConsumptionToken"])
    assert consumed(v, arn) == "1"
    expect_error("ValidationException", set_grant_status, client=b, grant_arn=g, status="ACTIVE")
    assert _statuses(v, g) == [("1", "PENDING_ACCEPT"), ("2", "DISABLED"), ("3", "ACTIVE"), ("4", "REJECTED")]


def test_deleting_a_pending_grant(world, people):
    v, sub, b = world.v, people["sub"], people["b"]
    arn, _ = world.create_license()
    g = create_grant(v, arn, sub, ["CheckoutLicense"])["GrantArn"]
    expect_error("AccessDeniedException", b.delete_grant, GrantArn=g, Version="1")
    expect_error("AccessDeniedException", world.s.delete_grant, GrantArn=g, Version="1")
    out = v.delete_grant(GrantArn=g, Version="1")
    assert (out["Status"], out["Version"]) == ("DELETED", "2")
    expect_error("ValidationException", b.accept_grant, GrantArn=g)
    assert received(b, arn) is None


def test_get_grant_is_for_the_two_parties(world, people):
    v, sub, b = world.v, people["sub"], people["b"]
    arn, _ = world.create_license()
    g = create_grant(v, arn, sub, ["CheckoutLicense"])["GrantArn"]
    assert get_grant(v, g)["GrantArn"] == g
    assert get_grant(b, g)["GrantArn"] == g
    expect_error("AccessDeniedException", world.s.get_grant, GrantArn=g)
    expect_error("AccessDeniedException", world.s.get_grant, GrantArn=g, Version="1")
    expect_error("AccessDeniedException", world.c.get_grant, GrantArn=g)  # the beneficiary is no party
    missing = f"arn:aws:license-manager::{world.vendor.account_id}:grant:g-{uuid.uuid4().hex}"
    expect_error("InvalidParameterValueException", v.get_grant, GrantArn=missing)


def test_create_grant_is_idempotent_per_client_token(world, people):
    v, sub = world.v, people["sub"]
    arn, _ = world.create_license()
    ct = token()
    first = create_grant(v, arn, sub, ["CheckoutLicense"], name="idem", ClientToken=ct)
    again = create_grant(v, arn, sub, ["CheckoutLicense"], name="idem", ClientToken=ct)
    assert again["GrantArn"] == first["GrantArn"]
    assert (again["Status"], again["Version"]) == ("PENDING_ACCEPT", "1")
    expect_error("ValidationException", create_grant, client=v, license_arn=arn, grantee=sub,
                 ops=["CheckoutLicense", "CheckInLicense"], name="idem", ClientToken=ct)
    listed = v.list_distributed_grants(Filters=[{"Name": "LicenseArn", "Values": [arn]}])["Grants"]
    assert ids(listed, "GrantArn") == [first["GrantArn"]], "a retry made no second grant"


def test_create_grant_refusals(world, people):
    v, s, sub = world.v, world.s, people["sub"]
    arn, _ = world.create_license()
    missing = f"arn:aws:license-manager::{world.vendor.account_id}:license:l-{uuid.uuid4().hex}"
    expect_error("InvalidParameterValueException", create_grant, client=v, license_arn=missing, grantee=sub,
                 ops=["CheckoutLicense"])
    expect_validation(create_grant, "HomeRegion", client=v, license_arn=arn, grantee=sub,
                      ops=["CheckoutLicense"], HomeRegion="eu-west-1")
    expect_validation(create_grant, "Principals", client=v, license_arn=arn, grantee=world.vendor,
                      ops=["CheckoutLicense"])
    expect_error("AccessDeniedException", create_grant, client=s, license_arn=arn, grantee=sub,
                 ops=["CheckoutLicense"])
    raw = people["raw"]  # sends what botocore would refuse to
    base = dict(GrantName="g", LicenseArn=arn, HomeRegion=REGION)
    expect_validation(raw.create_grant, "Principals", ClientToken=token(), **base,
                      Principals=[principal(sub), principal(world.customer)], AllowedOperations=["CheckoutLicense"])
    expect_validation(raw.create_grant, "AllowedOperations", ClientToken=token(), **base,
                      Principals=[principal(world.customer)], AllowedOperations=["CheckoutLicense", "Teleport"])
    expect_validation(raw.create_grant, "AllowedOperations", ClientToken=token(), **base,
                      Principals=[principal(world.customer)], AllowedOperations=[])
    assert v.list_distributed_grants(Filters=[{"Name": "LicenseArn", "Values": [arn]}])["Grants"] == []


def test_create_grant_version_needs_a_known_status(world, people):
    v, sub, b = world.v, people["sub"], people["b"]
    arn, _ = world.create_license()
    g = create_grant(v, arn, sub, ["CheckoutLicense"])["GrantArn"]
    b.accept_grant(GrantArn=g)
    expect_validation(b.create_grant_version, "Status", ClientToken=token(), GrantArn=g, Status="ACTIVATED")
    expect_error("ValidationException", b.create_grant_version, ClientToken=token(), GrantArn=g, Status="DELETED")
    assert get_grant(v, g)["Version"] == "2"


def test_create_grant_version_is_idempotent_per_client_token(world, people):
    v, sub, b = world.v, people["sub"], people["b"]
    arn, _ = world.create_license()
    g = create_grant(v, arn, sub, ["CheckoutLicense"])["GrantArn"]
    b.accept_grant(GrantArn=g)
    ct = token()
    first = set_grant_status(b, g, "ACTIVE", ClientToken=ct, SourceVersion="2")
    again = set_grant_status(b, g, "ACTIVE", ClientToken=ct, SourceVersion="2")
    assert (again["Status"], again["Version"]) == (first["Status"], first["Version"]) == ("ACTIVE", "3")
    assert get_grant(v, g)["Version"] == "3"


def test_list_received_licenses_metadata_follows_the_grant(world, people):
    v, sub, b = world.v, people["sub"], people["b"]
    arn, _ = world.create_license()
    # The beneficiary holds the license outright.
    direct = received(world.c, arn)["ReceivedMetadata"]
    assert direct["ReceivedStatus"] == "ACTIVE"
    assert sorted(direct["AllowedOperations"]) == sorted(ALL_OPERATIONS)
    # Strangers see nothing.
    assert received(world.s, arn) is None
    assert received(b, arn) is None
    g = create_grant(v, arn, sub, ["CheckoutLicense", "ListPurchasedLicenses"])["GrantArn"]
    seen = []
    meta = received(b, arn)
    seen.append(meta["ReceivedMetadata"]["ReceivedStatus"])
    assert sorted(meta["ReceivedMetadata"]["AllowedOperations"]) == ["CheckoutLicense", "ListPurchasedLicenses"]
    assert meta["LicenseArn"] == arn and meta["Beneficiary"] == world.customer.account_id
    b.accept_grant(GrantArn=g)
    seen.append(received(b, arn)["ReceivedMetadata"]["ReceivedStatus"])
    set_grant_status(b, g, "ACTIVE")
    seen.append(received(b, arn)["ReceivedMetadata"]["ReceivedStatus"])
    set_grant_status(b, g, "DISABLED")
    seen.append(received(b, arn)["ReceivedMetadata"]["ReceivedStatus"])
    assert seen == ["PENDING_ACCEPT", "DISABLED", "ACTIVE", "DISABLED"]
    # The listing without LicenseArns shows it too.
    everything = list_all(b.list_received_licenses, "Licenses", page_size=100)
    assert arn in ids(everything)
    v.delete_grant(GrantArn=g, Version=get_grant(v, g)["Version"])
    assert received(b, arn) is None
    assert arn not in ids(list_all(b.list_received_licenses, "Licenses", page_size=100))


@pytest.fixture(scope="module")
def grant_set(world):
    """One vendor with a unique issuer name and two licenses; grants to three
    fresh accounts in different states; one re-grant by one of them."""
    server = world.server
    issuer = f"Grants{uuid.uuid4().hex[:8]}"
    accts = [server.create_account(f"lister-{i}") for i in range(3)]
    clients = [server.client(x) for x in accts]
    arn1, req1 = world.create_license(issuer=issuer)
    arn2, req2 = world.create_license(issuer=issuer)
    g = {}
    g["p0"] = create_grant(world.v, arn1, accts[0], ["CheckoutLicense", "CreateGrant"])["GrantArn"]   # ACTIVE
    accept_and_activate(clients[0], g["p0"])
    g["p1"] = create_grant(world.v, arn1, accts[1], ["CheckoutLicense"])["GrantArn"]                  # PENDING_ACCEPT
    g["p2"] = create_grant(world.v, arn1, accts[2], ["CheckoutLicense"])["GrantArn"]                  # DISABLED
    clients[2].accept_grant(GrantArn=g["p2"])
    g["q1"] = create_grant(world.v, arn2, accts[1], ["CheckoutLicense"])["GrantArn"]                  # PENDING_ACCEPT
    g["r2"] = create_grant(clients[0], arn1, accts[2], ["CheckoutLicense"])["GrantArn"]               # re-grant, pending
    return {"issuer": issuer, "accts": accts, "clients": clients, "arn1": arn1, "arn2": arn2,
            "sku1": req1["ProductSKU"], "sku2": req2["ProductSKU"], "g": g}


def _distributed(client, *filters, **kw) -> set:
    fs = [{"Name": n, "Values": [val]} for n, val in filters]
    return set(ids(list_all(client.list_distributed_grants, "Grants", page_size=100, Filters=fs, **kw), "GrantArn"))


def _received(client, *filters, **kw) -> set:
    fs = [{"Name": n, "Values": [val]} for n, val in filters]
    return set(ids(list_all(client.list_received_grants, "Grants", page_size=100, Filters=fs, **kw), "GrantArn"))


def test_list_distributed_grants_filters(world, grant_set):
    gs, g, v = grant_set, grant_set["g"], world.v
    mine = {g["p0"], g["p1"], g["p2"], g["q1"]}
    assert _distributed(v, ("LicenseIssuerName", gs["issuer"])) == mine
    assert _distributed(v, ("LicenseArn", gs["arn1"])) == {g["p0"], g["p1"], g["p2"]}
    assert _distributed(v, ("LicenseArn", gs["arn2"])) == {g["q1"]}
    assert _distributed(v, ("ProductSKU", gs["sku2"])) == {g["q1"]}
    assert _distributed(v, ("LicenseIssuerName", gs["issuer"]), ("GrantStatus", "PENDING_ACCEPT")) == {g["p1"], g["q1"]}
    assert _distributed(v, ("LicenseIssuerName", gs["issuer"]), ("GrantStatus", "ACTIVE")) == {g["p0"]}
    assert _distributed(v, ("LicenseIssuerName", gs["issuer"]), ("GrantStatus", "DISABLED")) == {g["p2"]}
    assert _distributed(v, ("GranteePrincipalARN", gs["accts"][1].root_arn)) == {g["p1"], g["q1"]}
    assert _distributed(v, ("LicenseArn", gs["arn1"]), ("GranteePrincipalARN", gs["accts"][1].root_arn)) == {g["p1"]}
    assert _distributed(v, GrantArns=[g["p2"], g["q1"]]) == {g["p2"], g["q1"]}
    # The re-grant is its grantor's, not the vendor's.
    assert _distributed(gs["clients"][0], ("LicenseArn", gs["arn1"])) == {g["r2"]}
    assert _distributed(world.s, ("LicenseArn", gs["arn1"])) == set()
    full = v.list_distributed_grants(GrantArns=[g["p0"]])["Grants"]
    assert len(full) == 1
    assert full[0] == get_grant(v, g["p0"]), "list and get agree on a grant"


def test_list_received_grants_filters(world, grant_set):
    gs, g = grant_set, grant_set["g"]
    c0, c1, c2 = gs["clients"]
    assert _received(c1, ("LicenseIssuerName", gs["issuer"])) == {g["p1"], g["q1"]}
    assert _received(c1, ("LicenseArn", gs["arn1"])) == {g["p1"]}
    assert _received(c1, ("ProductSKU", gs["sku2"])) == {g["q1"]}
    assert _received(c2, ("LicenseArn", gs["arn1"])) == {g["p2"], g["r2"]}
    assert _received(c2, ("LicenseArn", gs["arn1"]), ("GranterAccountId", world.vendor.account_id)) == {g["p2"]}
    assert _received(c2, ("LicenseArn", gs["arn1"]), ("GranterAccountId", gs["accts"][0].account_id)) == {g["r2"]}
    assert _received(c2, ("LicenseArn", gs["arn1"]), ("GrantStatus", "DISABLED")) == {g["p2"]}
    assert _received(c2, ("LicenseArn", gs["arn1"]), ("GrantStatus", "PENDING_ACCEPT")) == {g["r2"]}
    assert _received(c0, ("LicenseIssuerName", gs["issuer"])) == {g["p0"]}
    assert _received(c2, GrantArns=[g["r2"]]) == {g["r2"]}
    assert _received(world.v, ("LicenseArn", gs["arn1"])) == set(), "the grantor receives nothing"


def test_grant_lists_page(world, grant_set):
    gs, g = grant_set, grant_set["g"]
    fs = [{"Name": "LicenseIssuerName", "Values": [gs["issuer"]]}]
    pages = []
    resp = world.v.list_distributed_grants(Filters=fs, MaxResults=1)
    pages.append(ids(resp["Grants"], "GrantArn"))
    while resp.get("NextToken"):
        resp = world.v.list_distributed_grants(Filters=fs, MaxResults=1, NextToken=resp["NextToken"])
        pages.append(ids(resp["Grants"], "GrantArn"))
    flat = [a for p in pages for a in p]
    assert all(len(p) <= 1 for p in pages), pages
    assert len(flat) == len(set(flat)) == 4, pages
    assert set(flat) == {g["p0"], g["p1"], g["p2"], g["q1"]}

    c2 = gs["clients"][2]
    first = c2.list_received_grants(Filters=[{"Name": "LicenseArn", "Values": [gs["arn1"]]}], MaxResults=1)
    assert len(first["Grants"]) == 1 and first.get("NextToken")
    second = c2.list_received_grants(Filters=[{"Name": "LicenseArn", "Values": [gs["arn1"]]}], MaxResults=1,
                                     NextToken=first["NextToken"])
    assert len(second["Grants"]) == 1
    assert {first["Grants"][0]["GrantArn"], second["Grants"][0]["GrantArn"]} == {g["p2"], g["r2"]}
    assert not second.get("NextToken")


@pytest.mark.parametrize("op", ["list_distributed_grants", "list_received_grants"])
def test_grant_list_validation(world, op):
    raw = world.server.client(world.vendor, validate=False)
    fn = getattr(raw, op)
    expect_validation(fn, "MaxResults", MaxResults=0)
    expect_validation(fn, "MaxResults", MaxResults=101)
    expect_validation(fn, "Filters", Filters=[{"Name": "Colour", "Values": ["blue"]}])
    expect_error("ValidationException", fn, NextToken="not-a-token")
    expect_error("ValidationException", fn, Filters=[{"Name": "GrantStatus", "Values": ["SMILING"]}])


def test_seed_flow_grant_to_a_third_account(world, people):
    """The seed story's grant: vendor → a third account, accepted and activated,
    then a checkout with the vendor's Self fingerprint."""
    v, acme, a = world.v, people["acme"], people["a"]
    arn, req = world.create_license(entitlements=[counted("Seats", 2)])
    g = create_grant(v, arn, acme, ["CheckoutLicense", "CheckInLicense", "ExtendConsumptionLicense"])["GrantArn"]
    a.accept_grant(GrantArn=g)
    set_grant_status(a, g, "ACTIVE")
    out = checkout(a, req["ProductSKU"], fingerprint(world.vendor.account_id, "Self"))
    assert out["LicenseArn"] == arn
    ext = a.extend_license_consumption(LicenseConsumptionToken=out["LicenseConsumptionToken"])
    assert ext["LicenseConsumptionToken"] == out["LicenseConsumptionToken"]
    # Grantee and beneficiary share the license's one pool.
    checkout(world.c, req["ProductSKU"], world.fingerprint())
    expect_error("NoEntitlementsAllowedException", checkout, client=a, sku=req["ProductSKU"], fp=world.fingerprint())
    a.check_in_license(LicenseConsumptionToken=out["LicenseConsumptionToken"])
    assert consumed(v, arn) == "1"


def test_consumption_of_a_deleted_grant_expires_normally(private_world):
    """Deleting a grant leaves the grantee's checkouts out, counted, until
    they expire; then the units come back."""
    w = private_world
    acct = w.server.create_account("expiring-grantee")
    g = w.server.client(acct)
    arn, req = w.create_license(entitlements=[counted("Seats", 2)])
    grant = active_grant(w.v, g, arn, acct, ["CheckoutLicense", "CheckInLicense"])
    out = checkout(g, req["ProductSKU"], w.fingerprint(), value=2)
    w.v.delete_grant(GrantArn=grant, Version=get_grant(w.v, grant)["Version"])
    expect_error("NoEntitlementsAllowedException", checkout, client=w.c, sku=req["ProductSKU"], fp=w.fingerprint())
    w.server.advance_clock(59 * 60)
    assert consumed(w.v, arn) == "2"
    w.server.advance_clock(2 * 60)
    assert consumed(w.v, arn) == "0", "the deleted grantee's checkout did not expire"
    checkout(w.c, req["ProductSKU"], w.fingerprint(), value=2)
    expect_error("AccessDeniedException", g.check_in_license, LicenseConsumptionToken=out["LicenseConsumptionToken"])


def test_rejecting_the_middle_grant_stops_the_sub_grant(world, people):
    v, acme, a, sub, b = world.v, people["acme"], people["a"], people["sub"], people["b"]
    arn, req = world.create_license()
    g1 = active_grant(v, a, arn, acme, ["CreateGrant", "CheckoutLicense"])
    active_grant(a, b, arn, sub, ["CheckoutLicense"])
    checkout(b, req["ProductSKU"], world.fingerprint())
    a.reject_grant(GrantArn=g1)
    expect_error("NoEntitlementsAllowedException", checkout, client=b, sku=req["ProductSKU"], fp=world.fingerprint())
    expect_error("AccessDeniedException", b.get_license, LicenseArn=arn)


@pytest.fixture
def narrowed(world, people):
    """vendor → acme (CreateGrant + three operations) → sub (the three operations),
    all ACTIVE; then the vendor narrows acme's grant to CreateGrant alone."""
    v, acme, a, sub, b = world.v, people["acme"], people["a"], people["sub"], people["b"]
    arn, req = world.create_license(consumption=borrowable(provisional_ttl=60))
    three = ["CheckoutLicense", "CheckoutBorrowLicense", "CreateToken"]
    g1 = active_grant(v, a, arn, acme, ["CreateGrant", *three])
    active_grant(a, b, arn, sub, three)
    checkout(b, req["ProductSKU"], world.fingerprint())  # works while acme holds the operations
    v.create_grant_version(ClientToken=token(), GrantArn=g1, AllowedOperations=["CreateGrant"])
    expect_error("NoEntitlementsAllowedException", checkout, client=a, sku=req["ProductSKU"], fp=world.fingerprint())
    return {"arn": arn, "sku": req["ProductSKU"], "b": b}


@pytest.mark.parametrize("op", ["CheckoutLicense", "CheckoutBorrowLicense", "CreateToken"])
def test_a_re_grant_holds_no_more_than_its_parent_now_does(world, narrowed, op):
    """A grantee re-grants only operations its own grant has; when the issuer
    later takes an operation away from that grant, the re-grant made from it
    cannot go on using it: the sub-account would otherwise hold an operation
    its own grantor no longer has."""
    n, b = narrowed, narrowed["b"]
    before = consumed(world.v, n["arn"])
    if op == "CheckoutLicense":
        expect_error("NoEntitlementsAllowedException", checkout, client=b, sku=n["sku"], fp=world.fingerprint())
    elif op == "CheckoutBorrowLicense":
        expect_error("AccessDeniedException", borrow, client=b, arn=n["arn"])
    else:
        expect_error("AccessDeniedException", b.create_token, LicenseArn=n["arn"], ClientToken=token())
    assert consumed(world.v, n["arn"]) == before
