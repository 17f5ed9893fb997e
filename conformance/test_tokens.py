"""Tokens for workloads without access keys: CreateToken (a refresh token),
GetAccessToken (signed or not), ListTokens, DeleteToken, and access tokens
sent as `Authorization: Bearer` for checkout, check-in, extension and borrow
on the one license they name."""

from __future__ import annotations

import datetime as dt
import uuid

import boto3
import botocore
import jwt
import pytest
from botocore.config import Config

from harness import (
    REGION,
    SERVICE,
    active_grant,
    assert_close,
    assert_wire_error,
    bearer_ok,
    bearer_post,
    borrowable,
    checkout,
    consumed,
    counted,
    expect_error,
    expect_validation,
    get_jwks,
    list_all,
    parse_iso,
    set_grant_status,
    token,
    utcnow,
)

MIN = 60


def unsigned_client(server):
    """A boto3 client that sends no credentials at all."""
    return boto3.session.Session().client(
        SERVICE, endpoint_url=server.url, region_name=REGION,
        config=Config(signature_version=botocore.UNSIGNED, retries={"total_max_attempts": 1, "mode": "standard"}))


def _verify_eddsa(tok: str, jwks: dict, audience: str) -> dict:
    header = jwt.get_unverified_header(tok)
    assert header["alg"] == "EdDSA", header
    keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys}
    assert header.get("kid") in keys, f"kid {header.get('kid')!r} not in the JWKS"
    return jwt.decode(tok, key=keys[header["kid"]].key, algorithms=["EdDSA"], audience=audience,
                      options={"verify_iss": False})


def _listed(client, token_id: str) -> dict:
    got = client.list_tokens(TokenIds=[token_id])["Tokens"]
    assert len(got) == 1, got
    return got[0]


def _wire(server, op: str, body: dict, access: str, code: str) -> dict:
    return assert_wire_error(bearer_post(server.url, op, body, access), code)


def _checkout_body(sku: str, fp: str, value: int = 1) -> dict:
    return {"ProductSKU": sku, "CheckoutType": "PROVISIONAL", "KeyFingerprint": fp, "ClientToken": token(),
            "Entitlements": [{"Name": "Seats", "Value": str(value), "Unit": "Count"}]}


# ---- CreateToken


def test_create_token_is_a_refresh_jwt(world, server):
    arn, _ = world.create_license()
    role = f"arn:aws:iam::{world.customer.account_id}:role/Workload"
    before = utcnow()
    out = world.c.create_token(LicenseArn=arn, TokenProperties=["plant-7", "line-2"], RoleArns=[role],
                               ClientToken=token())
    assert out["TokenType"] == "REFRESH_TOKEN"
    assert isinstance(out["TokenId"], str) and out["TokenId"]
    claims = _verify_eddsa(out["Token"], get_jwks(server), audience=arn)
    assert claims["aud"] == arn
    assert claims["amr"] == ["plant-7", "line-2"]
    assert claims["token_use"] == "refresh"
    exp = dt.datetime.fromtimestamp(claims["exp"], dt.timezone.utc)
    assert_close(exp, before + dt.timedelta(days=365), 120, "a refresh token lives 365 days by default")

    data = _listed(world.c, out["TokenId"])
    assert data["TokenId"] == out["TokenId"]
    assert data["TokenType"] == "REFRESH_TOKEN"
    assert data["LicenseArn"] == arn
    assert data["TokenProperties"] == ["plant-7", "line-2"]
    assert data["RoleArns"] == [role]
    assert data["Status"] == "AVAILABLE"
    assert_close(parse_iso(data["ExpirationTime"]), exp, 2, "ExpirationTime is the JWT's exp")


def test_expiration_in_days(world, server):
    arn, _ = world.create_license()
    out = world.c.create_token(LicenseArn=arn, ExpirationInDays=7, ClientToken=token())
    claims = _verify_eddsa(out["Token"], get_jwks(server), audience=arn)
    assert_close(dt.datetime.fromtimestamp(claims["exp"], dt.timezone.utc), utcnow() + dt.timedelta(days=7), 120,
                 "ExpirationInDays=7")
    longest = world.c.create_token(LicenseArn=arn, ExpirationInDays=3650, ClientToken=token())
    assert_close(parse_iso(_listed(world.c, longest["TokenId"])["ExpirationTime"]),
                 utcnow() + dt.timedelta(days=3650), 120, "ExpirationInDays=3650")


def test_create_token_validation(world):
    arn, _ = world.create_license()
    raw = world.server.client(world.customer, validate=False)
    for days in (0, 3651, -1):
        expect_validation(raw.create_token, "ExpirationInDays", LicenseArn=arn, ExpirationInDays=days,
                          ClientToken=token())
    expect_validation(raw.create_token, "TokenProperties", LicenseArn=arn, TokenProperties=["a", "b", "c", "d"],
                      ClientToken=token())
    expect_validation(raw.create_token, "LicenseArn", LicenseArn="l-123", ClientToken=token())
    assert world.c.list_tokens(Filters=[{"Name": "LicenseArns", "Values": [arn]}])["Tokens"] == []


def test_create_token_is_idempotent_per_client_token(world):
    arn, _ = world.create_license()
    ct = token()
    first = world.c.create_token(LicenseArn=arn, TokenProperties=["x"], ClientToken=ct)
    again = world.c.create_token(LicenseArn=arn, TokenProperties=["x"], ClientToken=ct)
    assert again["TokenId"] == first["TokenId"]
    listed = world.c.list_tokens(Filters=[{"Name": "LicenseArns", "Values": [arn]}])["Tokens"]
    assert [t["TokenId"] for t in listed] == [first["TokenId"]]


def test_who_may_create_tokens(world):
    server = world.server
    arn, _ = world.create_license()
    expect_error("AccessDeniedException", world.s.create_token, LicenseArn=arn, ClientToken=token())
    expect_error("AccessDeniedException", world.v.create_token, LicenseArn=arn, ClientToken=token())
    missing = f"arn:aws:license-manager::{world.vendor.account_id}:license:l-{uuid.uuid4().hex}"
    expect_error("ResourceNotFoundException", world.c.create_token, LicenseArn=missing, ClientToken=token())
    # A grantee, through an ACTIVE grant that allows CreateToken.
    acct = server.create_account("token-grantee")
    g = server.client(acct)
    grant = active_grant(world.v, g, arn, acct, ["CheckoutLicense", "CreateToken"])
    out = g.create_token(LicenseArn=arn, ClientToken=token())
    assert out["TokenType"] == "REFRESH_TOKEN"
    assert _listed(g, out["TokenId"])["LicenseArn"] == arn
    set_grant_status(g, grant, "DISABLED")
    expect_error("AccessDeniedException", g.create_token, LicenseArn=arn, ClientToken=token())


# ---- GetAccessToken


def test_get_access_token_without_credentials(world, server):
    arn, _ = world.create_license()
    refresh = world.c.create_token(LicenseArn=arn, TokenProperties=["p1", "p2"], ClientToken=token())["Token"]
    before = utcnow()
    access = unsigned_client(server).get_access_token(Token=refresh)["AccessToken"]
    claims = _verify_eddsa(access, get_jwks(server), audience=arn)
    assert claims["exp"] - claims["iat"] == 3600, "access tokens are valid for one hour"
    assert_close(dt.datetime.fromtimestamp(claims["exp"], dt.timezone.utc), before + dt.timedelta(hours=1), 120,
                 "exp is one hour after issue")
    assert claims["aud"] == arn
    assert set(claims["amr"]) <= {"p1", "p2"}
    assert claims.get("token_use") != "refresh"


def test_get_access_token_signed(world, server):
    arn, _ = world.create_license()
    refresh = world.c.create_token(LicenseArn=arn, ClientToken=token())["Token"]
    access = world.c.get_access_token(Token=refresh)["AccessToken"]
    claims = _verify_eddsa(access, get_jwks(server), audience=arn)
    assert claims["exp"] - claims["iat"] == 3600


def test_get_access_token_properties(world, server):
    arn, _ = world.create_license()
    refresh = world.c.create_token(LicenseArn=arn, TokenProperties=["p1", "p2"], ClientToken=token())["Token"]
    u = unsigned_client(server)
    sub = u.get_access_token(Token=refresh, TokenProperties=["p2"])["AccessToken"]
    assert set(_verify_eddsa(sub, get_jwks(server), audience=arn)["amr"]) <= {"p1", "p2"}
    expect_validation(u.get_access_token, "TokenProperties", Token=refresh, TokenProperties=["p3"])
    expect_validation(u.get_access_token, "TokenProperties", Token=refresh, TokenProperties=["p1", "p9"])


def test_get_access_token_refusals(world, server):
    u = unsigned_client(server)
    expect_error("AccessDeniedException", u.get_access_token, Token="not.a.token")
    arn, _ = world.create_license()
    refresh = world.c.create_token(LicenseArn=arn, ClientToken=token())["Token"]
    h, p, s = refresh.split(".")
    forged = ".".join([h, p, s[:-4] + ("AAAA" if s[-4:] != "AAAA" else "BBBB")])
    expect_error("AccessDeniedException", u.get_access_token, Token=forged)
    access = u.get_access_token(Token=refresh)["AccessToken"]
    expect_error("AccessDeniedException", u.get_access_token, Token=access)  # not a refresh token


# ---- ListTokens and DeleteToken


def test_list_tokens(world):
    server = world.server
    owner = server.create_account("token-lister")
    o = server.client(owner)
    arn1, _ = world.create_license(beneficiary=owner.account_id)
    arn2, _ = world.create_license(beneficiary=owner.account_id)
    t1 = o.create_token(LicenseArn=arn1, ClientToken=token())["TokenId"]
    t2 = o.create_token(LicenseArn=arn1, TokenProperties=["a"], ClientToken=token())["TokenId"]
    t3 = o.create_token(LicenseArn=arn2, ClientToken=token())["TokenId"]

    every = list_all(o.list_tokens, "Tokens", page_size=100)
    assert {t["TokenId"] for t in every} == {t1, t2, t3}
    pages = []
    resp = o.list_tokens(MaxResults=1)
    pages.append(resp["Tokens"])
    while resp.get("NextToken"):
        resp = o.list_tokens(MaxResults=1, NextToken=resp["NextToken"])
        pages.append(resp["Tokens"])
    assert [len(p) for p in pages] == [1, 1, 1], pages
    assert {p[0]["TokenId"] for p in pages} == {t1, t2, t3}

    by_arn = o.list_tokens(Filters=[{"Name": "LicenseArns", "Values": [arn1]}])["Tokens"]
    assert {t["TokenId"] for t in by_arn} == {t1, t2}
    assert {t["TokenId"] for t in o.list_tokens(TokenIds=[t3, t1])["Tokens"]} == {t1, t3}
    # Another account's list never shows them.
    assert world.c.list_tokens(TokenIds=[t1, t2, t3])["Tokens"] == []
    assert world.s.list_tokens(Filters=[{"Name": "LicenseArns", "Values": [arn1]}])["Tokens"] == []
    raw = server.client(owner, validate=False)
    expect_validation(raw.list_tokens, "MaxResults", MaxResults=0)
    expect_validation(raw.list_tokens, "Filters", Filters=[{"Name": "Colour", "Values": ["x"]}])


def test_delete_token(world, server):
    arn, _ = world.create_license()
    out = world.c.create_token(LicenseArn=arn, ClientToken=token())
    tid, refresh = out["TokenId"], out["Token"]
    expect_error("AccessDeniedException", world.s.delete_token, TokenId=tid)
    expect_error("AccessDeniedException", world.v.delete_token, TokenId=tid)
    assert _listed(world.c, tid)["Status"] == "AVAILABLE"
    expect_error("ResourceNotFoundException", world.c.delete_token, TokenId=uuid.uuid4().hex)

    world.c.delete_token(TokenId=tid)
    assert _listed(world.c, tid)["Status"] == "DELETED"
    expect_error("AccessDeniedException", unsigned_client(server).get_access_token, Token=refresh)
    expect_error("AccessDeniedException", world.c.get_access_token, Token=refresh)


# ---- Bearer


@pytest.fixture
def bearer(world, server):
    """A license of the customer's with a borrow configuration, a second
    license of the customer's, and an access token for the first."""
    arn, req = world.create_license(entitlements=[counted("Seats", 5)],
                                    consumption=borrowable(provisional_ttl=60, allow_early_check_in=True))
    other, other_req = world.create_license(entitlements=[counted("Seats", 5)])
    made = world.c.create_token(LicenseArn=arn, ClientToken=token())
    access = unsigned_client(server).get_access_token(Token=made["Token"])["AccessToken"]
    return {"arn": arn, "sku": req["ProductSKU"], "other": other, "other_sku": other_req["ProductSKU"],
            "token_id": made["TokenId"], "access": access, "fp": world.fingerprint()}


def test_bearer_checkout_extend_and_check_in(world, server, bearer):
    b = bearer
    out = bearer_ok(bearer_post(server.url, "CheckoutLicense", _checkout_body(b["sku"], b["fp"], 2), b["access"]))
    assert out["LicenseArn"] == b["arn"]
    assert out["EntitlementsAllowed"] == [{"Name": "Seats", "Value": "2", "Unit": "Count"}]
    assert out["SignedToken"]
    assert consumed(world.v, b["arn"]) == "2"
    # The checkout is the token account's: it can check it in with its keys too.
    ext = bearer_ok(bearer_post(server.url, "ExtendLicenseConsumption",
                                {"LicenseConsumptionToken": out["LicenseConsumptionToken"]}, b["access"]))
    assert ext["LicenseConsumptionToken"] == out["LicenseConsumptionToken"]
    parse_iso(ext["Expiration"])
    bearer_ok(bearer_post(server.url, "CheckInLicense",
                          {"LicenseConsumptionToken": out["LicenseConsumptionToken"]}, b["access"]))
    assert consumed(world.v, b["arn"]) == "0"

    # A checkout made with the account's keys, on the token's license, can be checked in by bearer.
    signed = checkout(world.c, b["sku"], b["fp"])
    bearer_ok(bearer_post(server.url, "CheckInLicense",
                          {"LicenseConsumptionToken": signed["LicenseConsumptionToken"]}, b["access"]))
    assert consumed(world.v, b["arn"]) == "0"


def test_bearer_borrow(world, server, bearer):
    b = bearer
    body = {"LicenseArn": b["arn"], "DigitalSignatureMethod": "JWT_PS384", "ClientToken": token(),
            "Entitlements": [{"Name": "Seats", "Value": "1", "Unit": "Count"}]}
    out = bearer_ok(bearer_post(server.url, "CheckoutBorrowLicense", body, b["access"]))
    assert out["LicenseArn"] == b["arn"]
    assert jwt.get_unverified_header(out["SignedToken"])["alg"] == "PS384"
    assert consumed(world.v, b["arn"]) == "1"
    other = dict(body, LicenseArn=b["other"], ClientToken=token())
    _wire(server, "CheckoutBorrowLicense", other, b["access"], "AccessDeniedException")


@pytest.mark.parametrize("op,body", [
    ("GetLicense", lambda b: {"LicenseArn": b["arn"]}),
    ("GetLicenseUsage", lambda b: {"LicenseArn": b["arn"]}),
    ("ListLicenses", lambda b: {}),
    ("ListReceivedLicenses", lambda b: {}),
    ("ListTokens", lambda b: {}),
    ("CreateToken", lambda b: {"LicenseArn": b["arn"], "ClientToken": token()}),
    ("DeleteToken", lambda b: {"TokenId": b["token_id"]}),
    ("CreateGrant", lambda b: {"ClientToken": token(), "GrantName": "g", "LicenseArn": b["arn"],
                               "Principals": ["arn:aws:iam::123456789012:root"], "HomeRegion": REGION,
                               "AllowedOperations": ["CheckoutLicense"]}),
    ("ListReceivedGrants", lambda b: {}),
    ("CreateLicense", lambda b: {}),
])
def test_bearer_may_call_only_the_consumption_operations(world, server, bearer, op, body):
    _wire(server, op, body(bearer), bearer["access"], "AccessDeniedException")
    assert _listed(world.c, bearer["token_id"])["Status"] == "AVAILABLE"


def test_bearer_is_confined_to_its_license(world, server, bearer):
    b = bearer
    # The customer holds the other license too, but not through this token.
    _wire(server, "CheckoutLicense", _checkout_body(b["other_sku"], b["fp"]), b["access"],
          "NoEntitlementsAllowedException")
    assert consumed(world.v, b["other"]) == "0"
    theirs = checkout(world.c, b["other_sku"], b["fp"])
    tok = {"LicenseConsumptionToken": theirs["LicenseConsumptionToken"]}
    _wire(server, "CheckInLicense", tok, b["access"], "AccessDeniedException")
    _wire(server, "ExtendLicenseConsumption", tok, b["access"], "AccessDeniedException")
    assert consumed(world.v, b["other"]) == "1"
    # Nor does it reach another account's checkouts on its own license.
    field = world.server.create_account("bearer-bystander")
    f = world.server.client(field)
    active_grant(world.v, f, b["arn"], field, ["CheckoutLicense", "CheckInLicense"])
    fc = checkout(f, b["sku"], b["fp"])
    _wire(server, "CheckInLicense", {"LicenseConsumptionToken": fc["LicenseConsumptionToken"]}, b["access"],
          "AccessDeniedException")
    assert consumed(world.v, b["arn"]) == "1"


def test_bearer_refused_after_delete_token(world, server, bearer):
    b = bearer
    out = bearer_ok(bearer_post(server.url, "CheckoutLicense", _checkout_body(b["sku"], b["fp"]), b["access"]))
    world.c.delete_token(TokenId=b["token_id"])
    _wire(server, "CheckoutLicense", _checkout_body(b["sku"], b["fp"]), b["access"], "AccessDeniedException")
    _wire(server, "CheckInLicense", {"LicenseConsumptionToken": out["LicenseConsumptionToken"]}, b["access"],
          "AccessDeniedException")
    assert consumed(world.v, b["arn"]) == "1"
    # The account's keys still work.
    world.c.check_in_license(LicenseConsumptionToken=out["LicenseConsumptionToken"])
    assert consumed(world.v, b["arn"]) == "0"


@pytest.mark.parametrize("garbage", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."])
def test_garbage_bearer(world, server, bearer, garbage):
    _wire(server, "CheckoutLicense", _checkout_body(bearer["sku"], bearer["fp"]), garbage, "AccessDeniedException")
    assert consumed(world.v, bearer["arn"]) == "0"


def test_refresh_token_is_no_bearer(world, server):
    arn, req = world.create_license()
    refresh = world.c.create_token(LicenseArn=arn, ClientToken=token())["Token"]
    _wire(server, "CheckoutLicense", _checkout_body(req["ProductSKU"], world.fingerprint()), refresh,
          "AccessDeniedException")
    assert consumed(world.v, arn) == "0"


def test_grantee_bearer_follows_its_grant(world, server):
    acct = server.create_account("bearer-grantee")
    g = server.client(acct)
    arn, req = world.create_license(entitlements=[counted("Seats", 3)])
    grant = active_grant(world.v, g, arn, acct, ["CheckoutLicense", "CheckInLicense", "CreateToken"])
    refresh = g.create_token(LicenseArn=arn, ClientToken=token())["Token"]
    access = unsigned_client(server).get_access_token(Token=refresh)["AccessToken"]
    body = _checkout_body(req["ProductSKU"], world.fingerprint())
    out = bearer_ok(bearer_post(server.url, "CheckoutLicense", body, access))
    assert out["LicenseArn"] == arn
    set_grant_status(g, grant, "DISABLED")
    _wire(server, "CheckoutLicense", _checkout_body(req["ProductSKU"], world.fingerprint()), access,
          "NoEntitlementsAllowedException")
    _wire(server, "CheckInLicense", {"LicenseConsumptionToken": out["LicenseConsumptionToken"]}, access,
          "AccessDeniedException")
    assert consumed(world.v, arn) == "1"
    set_grant_status(g, grant, "ACTIVE")
    bearer_ok(bearer_post(server.url, "CheckInLicense", {"LicenseConsumptionToken": out["LicenseConsumptionToken"]},
                          access))
    assert consumed(world.v, arn) == "0"


def test_access_token_expires_after_an_hour(private_world):
    w = private_world
    arn, req = w.create_license()
    refresh = w.c.create_token(LicenseArn=arn, ClientToken=token())["Token"]
    access = unsigned_client(w.server).get_access_token(Token=refresh)["AccessToken"]
    body = lambda: _checkout_body(req["ProductSKU"], w.fingerprint())  # noqa: E731
    bearer_ok(bearer_post(w.server.url, "CheckoutLicense", body(), access))
    w.server.advance_clock(59 * MIN)
    bearer_ok(bearer_post(w.server.url, "CheckoutLicense", body(), access))
    w.server.advance_clock(2 * MIN)
    _wire(w.server, "CheckoutLicense", body(), access, "AccessDeniedException")
    fresh = unsigned_client(w.server).get_access_token(Token=refresh)["AccessToken"]
    bearer_ok(bearer_post(w.server.url, "CheckoutLicense", body(), fresh))
