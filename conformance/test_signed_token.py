"""CheckoutLicense's SignedToken: a compact JWS (EdDSA, with a kid) that a
customer's software can verify offline against the server's JWKS, with PyJWT
and with `tessera token verify`."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
import requests

from harness import checkout, counted, tier


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def jwks(server) -> dict:
    r = requests.get(server.url + "/.well-known/jwks.json", timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def jwks_file(jwks, tmp_path_factory):
    p = tmp_path_factory.mktemp("jwks") / "jwks.json"
    p.write_text(json.dumps(jwks))
    return p


@pytest.fixture(scope="module")
def signed(world):
    arn, req = world.create_license(entitlements=[counted("Seats", 5), tier("Gold")])
    out = checkout(world.c, req["ProductSKU"], world.fingerprint(), NodeId="node-7",
                   entitlements=[{"Name": "Seats", "Value": "2", "Unit": "Count"}, {"Name": "Gold", "Unit": "None"}])
    return {"arn": arn, "req": req, "out": out, "token": out["SignedToken"]}


def _verify_pyjwt(token: str, jwks: dict) -> dict:
    header = jwt.get_unverified_header(token)
    keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys}
    assert header.get("kid") in keys, f"kid {header.get('kid')!r} not in the JWKS ({list(keys)})"
    return jwt.decode(token, key=keys[header["kid"]].key, algorithms=["EdDSA"],
                      options={"verify_aud": False, "verify_iss": False})


def _verify_cli(server, token: str, jwks_source: str):
    return server.cli("token", "verify", "--jwks", jwks_source, token, "-o", "json", check=False)


def test_header_is_eddsa_with_kid(signed):
    header = jwt.get_unverified_header(signed["token"])
    assert header["alg"] == "EdDSA"
    assert header.get("kid")


def test_pyjwt_verifies_and_claims_match_the_response(world, signed, jwks):
    claims = _verify_pyjwt(signed["token"], jwks)
    out = signed["out"]
    for key in ("entitlementsAllowed", "expiration", "issuedAt", "licenseArn", "licenseConsumptionToken",
                "nodeId", "keyFingerprint", "productSKU", "beneficiary"):
        assert key in claims, f"claim {key} missing: {sorted(claims)}"
    assert claims["licenseArn"] == signed["arn"]
    assert claims["licenseConsumptionToken"] == out["LicenseConsumptionToken"]
    assert claims["nodeId"] == "node-7"
    assert claims["keyFingerprint"] == world.fingerprint()
    assert claims["productSKU"] == signed["req"]["ProductSKU"]
    assert claims["beneficiary"] == world.customer.account_id
    assert claims["expiration"] == out["Expiration"]
    assert claims["issuedAt"] == out["IssuedAt"]
    names = sorted((e.get("name") or e.get("Name")) for e in claims["entitlementsAllowed"])
    assert names == ["Gold", "Seats"]


def test_tessera_token_verify(server, signed, jwks_file):
    for source in (server.url + "/.well-known/jwks.json", str(jwks_file)):
        cp = _verify_cli(server, signed["token"], source)
        assert cp.returncode == 0, f"--jwks {source}: exit {cp.returncode}: {cp.stderr}"
        claims = json.loads(cp.stdout)
        assert claims["licenseConsumptionToken"] == signed["out"]["LicenseConsumptionToken"]
        assert claims["licenseArn"] == signed["arn"]


def _tampered_payload(token: str) -> str:
    h, p, s = token.split(".")
    claims = json.loads(_b64d(p))
    claims["nodeId"] = "someone-else"
    return ".".join([h, _b64e(json.dumps(claims, separators=(",", ":")).encode()), s])


def _tampered_signature(token: str) -> str:
    h, p, s = token.split(".")
    i = len(s) // 2
    s = s[:i] + ("A" if s[i] != "A" else "B") + s[i + 1:]
    return ".".join([h, p, s])


@pytest.mark.parametrize("tamper", [_tampered_payload, _tampered_signature], ids=["payload", "signature"])
def test_tampered_token_fails_both_verifiers(server, signed, jwks, jwks_file, tamper):
    bad = tamper(signed["token"])
    with pytest.raises(jwt.InvalidTokenError):
        _verify_pyjwt(bad, jwks)
    cp = _verify_cli(server, bad, str(jwks_file))
    assert cp.returncode != 0, f"tessera token verify accepted a tampered token: {cp.stdout}"
    assert cp.stderr.strip(), "no reason on stderr"


def test_every_checkout_is_signed(world, jwks):
    _, req = world.create_license()
    for kind in ("PROVISIONAL", "PERPETUAL"):
        out = checkout(world.c, req["ProductSKU"], world.fingerprint(), checkout_type=kind)
        claims = _verify_pyjwt(out["SignedToken"], jwks)
        assert claims["licenseConsumptionToken"] == out["LicenseConsumptionToken"]
