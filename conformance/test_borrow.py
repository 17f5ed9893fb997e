"""CheckoutBorrowLicense: units borrowed until the BorrowConfiguration's TTL,
a SignedToken (JWS PS384) verified offline against the JWKS with PyJWT and
`tessera token verify`, early check-in, expiry by the test clock, and the
refusals (signature method, partial checkouts, exhausted pools)."""

from __future__ import annotations

import base64
import datetime as dt
import json

import jwt
import pytest

from harness import (
    active_grant,
    borrow,
    borrowable,
    checkout,
    consumed,
    counted,
    expect_error,
    expect_validation,
    get_jwks,
    parse_iso,
    provisional,
    tier,
    token,
    utcnow,
)

MIN = 60


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _verify_ps384(signed: str, jwks: dict) -> dict:
    header = jwt.get_unverified_header(signed)
    keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys}
    assert header.get("kid") in keys, f"kid {header.get('kid')!r} not in the JWKS ({list(keys)})"
    return jwt.decode(signed, key=keys[header["kid"]].key, algorithms=["PS384"],
                      options={"verify_aud": False, "verify_iss": False})


@pytest.fixture(scope="module")
def jwks(server) -> dict:
    return get_jwks(server)


@pytest.fixture(scope="module")
def borrowed(world):
    arn, req = world.create_license(entitlements=[counted("Seats", 5), tier("Gold")],
                                    consumption=borrowable(allow_early_check_in=True, ttl_minutes=90))
    before = utcnow()
    out = borrow(world.c, arn, entitlements=[{"Name": "Seats", "Value": "2", "Unit": "Count"},
                                             {"Name": "Gold", "Unit": "None"}],
                 NodeId="laptop-42", CheckoutMetadata=[{"Name": "Mac", "Value": "AB:CD"},
                                                       {"Name": "Host", "Value": "field-1"}])
    return {"arn": arn, "req": req, "out": out, "token": out["SignedToken"], "before": before}


def test_borrow_response(world, borrowed):
    out, arn = borrowed["out"], borrowed["arn"]
    assert out["LicenseArn"] == arn
    assert isinstance(out["LicenseConsumptionToken"], str) and out["LicenseConsumptionToken"]
    assert out["NodeId"] == "laptop-42"
    allowed = {e["Name"]: e for e in out["EntitlementsAllowed"]}
    assert allowed["Seats"] == {"Name": "Seats", "Value": "2", "Unit": "Count"}
    assert allowed["Gold"]["Unit"] == "None" and allowed["Gold"].get("Value") == "Enabled"
    assert out["CheckoutMetadata"] == [{"Name": "Mac", "Value": "AB:CD"}, {"Name": "Host", "Value": "field-1"}]
    issued, expires = parse_iso(out["IssuedAt"]), parse_iso(out["Expiration"])
    assert expires - issued == dt.timedelta(minutes=90), "Expiration = IssuedAt + borrow MaxTimeToLiveInMinutes"
    assert abs((issued - borrowed["before"]).total_seconds()) < 60
    assert consumed(world.v, arn) == "2", "borrowed units are counted"


def test_signed_token_is_ps384_and_verifies(borrowed, jwks):
    signed = borrowed["token"]
    header = jwt.get_unverified_header(signed)
    assert header["alg"] == "PS384"
    jwk = next(k for k in jwks["keys"] if k.get("kid") == header["kid"])
    assert jwk["kty"] == "RSA" and jwk.get("n") and jwk.get("e"), jwk
    # PyJWK on the one key, as well as the set.
    key = jwt.PyJWK(jwk)
    claims = jwt.decode(signed, key=key.key, algorithms=["PS384"], options={"verify_aud": False})
    assert claims == _verify_ps384(signed, jwks)
    # It is not an EdDSA token and no other algorithm is accepted for it.
    with pytest.raises(jwt.InvalidTokenError):
        jwt.decode(signed, key=key.key, algorithms=["RS384"], options={"verify_aud": False})


def test_signed_token_claims(world, borrowed, jwks):
    claims = _verify_ps384(borrowed["token"], jwks)
    out = borrowed["out"]
    assert claims["licenseArn"] == borrowed["arn"]
    assert claims["licenseConsumptionToken"] == out["LicenseConsumptionToken"]
    assert claims["nodeId"] == "laptop-42"
    assert claims["checkoutMetadata"] == {"Mac": "AB:CD", "Host": "field-1"}
    assert claims["issuedAt"] == out["IssuedAt"]
    assert claims["expiration"] == out["Expiration"]
    assert claims["exp"] == int(parse_iso(out["Expiration"]).timestamp())
    ents = {(e.get("name") or e.get("Name")): e for e in claims["entitlementsAllowed"]}
    assert set(ents) == {"Seats", "Gold"}
    assert (ents["Seats"].get("value") or ents["Seats"].get("Value")) == "2"


def test_tessera_token_verify_ps384(server, borrowed, jwks, tmp_path):
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(jwks))
    for source in (server.url + "/.well-known/jwks.json", str(jwks_file)):
        cp = server.cli("token", "verify", "--jwks", source, borrowed["token"], "-o", "json", check=False)
        assert cp.returncode == 0, f"--jwks {source}: exit {cp.returncode}: {cp.stderr}"
        claims = json.loads(cp.stdout)
        assert claims["licenseConsumptionToken"] == borrowed["out"]["LicenseConsumptionToken"]
        assert claims["checkoutMetadata"] == {"Mac": "AB:CD", "Host": "field-1"}


def _tampered(signed: str) -> str:
    h, p, s = signed.split(".")
    claims = json.loads(_b64d(p))
    claims["nodeId"] = "someone-else"
    return ".".join([h, _b64e(json.dumps(claims, separators=(",", ":")).encode()), s])


def test_tampered_borrow_token_is_refused(server, borrowed, jwks, tmp_path):
    bad = _tampered(borrowed["token"])
    with pytest.raises(jwt.InvalidTokenError):
        _verify_ps384(bad, jwks)
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(jwks))
    cp = server.cli("token", "verify", "--jwks", str(jwks_file), bad, check=False)
    assert cp.returncode != 0, f"tessera token verify accepted a tampered PS384 token: {cp.stdout}"


def test_unsupported_signature_method(world):
    arn, _ = world.create_license(consumption=borrowable())
    for method in ("JWT_RS256", "JWT_PS256", "jwt_ps384", "NONE"):
        expect_error("UnsupportedDigitalSignatureMethodException", borrow, client=world.c, arn=arn, method=method)
    assert consumed(world.v, arn) == "0"


def test_partial_checkout_is_refused(world):
    arn, _ = world.create_license(entitlements=[counted("Seats", 5)], consumption=borrowable())
    ents = [{"Name": "Seats", "Value": "1", "Unit": "Count"}, {"Name": "Wheels", "Value": "1", "Unit": "Count"}]
    expect_error("EntitlementNotAllowedException", borrow, client=world.c, arn=arn, entitlements=ents)
    assert consumed(world.v, arn) == "0", "nothing is drawn when one entitlement is missing"
    # The entitlement the license does hold, alone, is fine.
    borrow(world.c, arn, value=1)
    assert consumed(world.v, arn) == "1"


def test_exhausted_pool(world):
    arn, _ = world.create_license(entitlements=[counted("Seats", 3)], consumption=borrowable())
    borrow(world.c, arn, value=2)
    # Two asked, one left: no partial borrow of the one.
    expect_error("NoEntitlementsAllowedException", borrow, client=world.c, arn=arn, value=2)
    assert consumed(world.v, arn) == "2"
    borrow(world.c, arn, value=1)
    expect_error("NoEntitlementsAllowedException", borrow, client=world.c, arn=arn, value=1)
    assert consumed(world.v, arn) == "3"


def test_license_without_borrow_configuration(world):
    arn, _ = world.create_license(consumption=provisional(60))
    expect_error("ValidationException", borrow, client=world.c, arn=arn)
    assert consumed(world.v, arn) == "0"


def test_early_check_in_allowed(world):
    arn, _ = world.create_license(entitlements=[counted("Seats", 3)], consumption=borrowable(allow_early_check_in=True))
    out = borrow(world.c, arn, value=2)
    assert consumed(world.v, arn) == "2"
    world.c.check_in_license(LicenseConsumptionToken=out["LicenseConsumptionToken"])
    assert consumed(world.v, arn) == "0"


def test_early_check_in_refused(world):
    arn, _ = world.create_license(entitlements=[counted("Seats", 3)], consumption=borrowable(allow_early_check_in=False))
    out = borrow(world.c, arn, value=2)
    expect_error("ValidationException", world.c.check_in_license, LicenseConsumptionToken=out["LicenseConsumptionToken"])
    assert consumed(world.v, arn) == "2", "a refused early check-in returned units"


def test_extending_a_borrow_is_refused(world):
    arn, req = world.create_license(consumption=borrowable(provisional_ttl=60, ttl_minutes=90))
    out = borrow(world.c, arn)
    assert parse_iso(out["Expiration"]) - parse_iso(out["IssuedAt"]) == dt.timedelta(minutes=90), \
        "a borrow lasts the BorrowConfiguration's TTL, not the provisional one"
    expect_error("ValidationException", world.c.extend_license_consumption,
                 LicenseConsumptionToken=out["LicenseConsumptionToken"])
    # A plain checkout of the same license lasts the provisional TTL, and extends.
    plain = checkout(world.c, req["ProductSKU"], world.fingerprint())
    assert parse_iso(plain["Expiration"]) - parse_iso(plain["IssuedAt"]) == dt.timedelta(minutes=60)
    world.c.extend_license_consumption(LicenseConsumptionToken=plain["LicenseConsumptionToken"])


def test_borrow_validation(world):
    arn, _ = world.create_license(consumption=borrowable())
    raw = world.server.client(world.customer, validate=False)
    expect_validation(raw.checkout_borrow_license, "ClientToken", LicenseArn=arn, DigitalSignatureMethod="JWT_PS384",
                      Entitlements=[{"Name": "Seats", "Value": "1", "Unit": "Count"}])
    expect_validation(raw.checkout_borrow_license, "LicenseArn", LicenseArn="not-an-arn",
                      DigitalSignatureMethod="JWT_PS384", ClientToken=token(),
                      Entitlements=[{"Name": "Seats", "Value": "1", "Unit": "Count"}])
    assert consumed(world.v, arn) == "0"


def test_grantee_borrows_through_its_grant(world):
    server = world.server
    field = server.create_account("borrow-field")
    f = server.client(field)
    arn, _ = world.create_license(entitlements=[counted("Seats", 4)], consumption=borrowable(ttl_minutes=30))
    expect_error("AccessDeniedException", borrow, client=f, arn=arn)
    active_grant(world.v, f, arn, field, ["CheckoutBorrowLicense", "CheckInLicense"])
    out = borrow(f, arn, value=2, NodeId="field-laptop")
    assert out["LicenseArn"] == arn
    assert consumed(world.v, arn) == "2"
    f.check_in_license(LicenseConsumptionToken=out["LicenseConsumptionToken"])
    assert consumed(world.v, arn) == "0"


# ---- expiry, on a private server whose clock moves


def test_borrowed_units_return_at_expiration(private_world):
    w = private_world
    arn, _ = w.create_license(entitlements=[counted("Seats", 4)],
                              consumption=borrowable(allow_early_check_in=False, ttl_minutes=30))
    out = borrow(w.c, arn, value=4)
    expect_error("NoEntitlementsAllowedException", borrow, client=w.c, arn=arn)

    w.server.advance_clock(29 * MIN)
    assert consumed(w.v, arn) == "4", "borrowed units returned before Expiration"
    expect_error("ValidationException", w.c.check_in_license, LicenseConsumptionToken=out["LicenseConsumptionToken"])

    now = w.server.advance_clock(2 * MIN)
    assert parse_iso(now["Now"]) > parse_iso(out["Expiration"])
    assert consumed(w.v, arn) == "0", "borrowed units not returned at Expiration"
    again = borrow(w.c, arn, value=4)
    assert parse_iso(again["Expiration"]) - parse_iso(again["IssuedAt"]) == dt.timedelta(minutes=30)


def test_expired_borrow_frees_units_for_the_next_borrow(private_world):
    """The checkout-time expiry: the next borrow after Expiration finds the units
    free without anyone reading the usage first."""
    w = private_world
    arn, _ = w.create_license(entitlements=[counted("Seats", 2)], consumption=borrowable(ttl_minutes=10))
    borrow(w.c, arn, value=2)
    w.server.advance_clock(11 * MIN)
    out = borrow(w.c, arn, value=2)
    assert out["EntitlementsAllowed"][0]["Value"] == "2"
    assert consumed(w.v, arn) == "2"
