"""Every error an operation answers is one the License Manager service model
lists for that operation, so that SDKs which build one error type per
operation from the model (the AWS SDK for Rust, for one) can type it.

The walk is generated from botocore's copy of the model: for every operation
Tessera offers, requests from the vendor, the customer and a stranger, first
with values that name real resources, then with every member in turn left
out, of the wrong type, empty, too long, holding a NUL, naming nothing, or
out of range; then the state conflicts the operations have (grants rejected
or deleted, tokens reused, consumptions ended). The only names allowed beside
an operation's list are the errors AWS's front end answers before any
operation runs (signature, key, unreadable body, unknown operation)."""

from __future__ import annotations

import collections
import copy
import json

import botocore.session
import pytest

from harness import (TARGET_PREFIX, borrowable, checkout, counted, create_grant, error_type, license_request,
                     new_sku, principal, signed_post, tier, token, unsigned_post)

MODEL = botocore.session.get_session().get_service_model("license-manager")

# What AWS answers for every service before an operation runs.
FRONT_END = {
    "IncompleteSignatureException", "InvalidSignatureException", "MissingAuthenticationTokenException",
    "UnrecognizedClientException", "SerializationException", "UnknownOperationException",
}

OFFERED = [
    "CreateLicense", "CreateLicenseVersion", "GetLicense", "ListLicenses", "ListReceivedLicenses",
    "ListLicenseVersions", "DeleteLicense", "CheckoutLicense", "CheckInLicense", "ExtendLicenseConsumption",
    "GetLicenseUsage", "CheckoutBorrowLicense", "CreateGrant", "AcceptGrant", "RejectGrant", "CreateGrantVersion",
    "DeleteGrant", "GetGrant", "ListDistributedGrants", "ListReceivedGrants", "CreateToken", "GetAccessToken",
    "ListTokens", "DeleteToken", "TagResource", "UntagResource", "ListTagsForResource",
]

NOWHERE_LICENSE = "arn:aws:license-manager::000000000000:license:l-00000000000000000000000000000000"
NOWHERE_GRANT = "arn:aws:license-manager::000000000000:grant:g-00000000000000000000000000000000"


def listed(op: str) -> set:
    return {s.name for s in MODEL.operation_model(op).error_shapes}


class Walk:
    """Sends requests and records every error name per operation."""

    def __init__(self, world):
        self.world = world
        self.url = world.server.url
        self.seen: dict = collections.defaultdict(collections.Counter)
        self.bad: list = []
        self.sent = 0

    def send(self, who, op: str, body) -> dict:
        raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
        raw = raw.encode() if isinstance(raw, str) else raw
        r = signed_post(self.url, TARGET_PREFIX + op, raw, access_key_id=who.access_key_id,
                        secret=who.secret_access_key)
        return self.record(op, body, r)

    def record(self, op: str, body, r) -> dict:
        self.sent += 1
        if r.status_code == 200:
            return r.json()
        try:
            name = error_type(r)
        except ValueError:
            self.bad.append(f"{op}: HTTP {r.status_code} without a JSON error body: {r.text[:200]!r}")
            return {}
        self.seen[op][name] += 1
        if name not in listed(op) | FRONT_END:
            self.bad.append(f"{op}: {name} is not in the model's list {sorted(listed(op))}: "
                            f"{r.json().get('Message')!r} for {str(body)[:300]}")
        if r.status_code == 500:
            self.bad.append(f"{op}: HTTP 500 for {str(body)[:300]}: {r.text[:200]}")
        return {}


@pytest.fixture(scope="module")
def resources(world):
    """Real resources for the operations to name: a license (borrowable, with a
    feature), a pending grant to the stranger, a refresh token and a
    consumption of the customer's."""
    w = world
    sku = new_sku("model")
    arn = w.v.create_license(**license_request(
        beneficiary=w.customer.account_id, sku=sku,
        entitlements=[counted("Seats", 10), tier("Premium")],
        consumption=borrowable(provisional_ttl=60)))["LicenseArn"]
    grant = create_grant(w.v, arn, w.stranger, ["CheckoutLicense", "CreateGrant"])["GrantArn"]
    refresh = w.c.create_token(LicenseArn=arn, ClientToken=token())
    consumption = checkout(w.c, sku, w.fingerprint())["LicenseConsumptionToken"]
    return {"sku": sku, "arn": arn, "grant": grant, "token_id": refresh["TokenId"], "refresh": refresh["Token"],
            "consumption": consumption}


def baseline(op: str, r: dict, world) -> dict:
    """A request of `op` whose values name the resources above."""
    fp = world.fingerprint()
    ents = [{"Name": "Seats", "Value": "1", "Unit": "Count"}]
    lic = license_request(beneficiary=world.customer.account_id, sku=r["sku"])
    by_op = {
        "CreateLicense": lic,
        "CreateLicenseVersion": {**{k: v for k, v in lic.items() if k not in ("ProductSKU", "Beneficiary")},
                                 "LicenseArn": r["arn"], "Status": "AVAILABLE", "SourceVersion": "1"},
        "GetLicense": {"LicenseArn": r["arn"]},
        "ListLicenses": {"LicenseArns": [r["arn"]], "MaxResults": 10},
        "ListReceivedLicenses": {"LicenseArns": [r["arn"]], "MaxResults": 10},
        "ListLicenseVersions": {"LicenseArn": r["arn"], "MaxResults": 10},
        "DeleteLicense": {"LicenseArn": r["arn"], "SourceVersion": "1"},
        "CheckoutLicense": {"ProductSKU": r["sku"], "CheckoutType": "PROVISIONAL", "KeyFingerprint": fp,
                            "Entitlements": ents, "ClientToken": token()},
        "CheckInLicense": {"LicenseConsumptionToken": r["consumption"]},
        "ExtendLicenseConsumption": {"LicenseConsumptionToken": r["consumption"]},
        "GetLicenseUsage": {"LicenseArn": r["arn"]},
        "CheckoutBorrowLicense": {"LicenseArn": r["arn"], "Entitlements": ents, "DigitalSignatureMethod": "JWT_PS384",
                                  "ClientToken": token()},
        "CreateGrant": {"ClientToken": token(), "GrantName": "g", "LicenseArn": r["arn"],
                        "Principals": [principal(world.stranger)], "HomeRegion": "us-east-1",
                        "AllowedOperations": ["CheckoutLicense"]},
        "AcceptGrant": {"GrantArn": r["grant"]},
        "RejectGrant": {"GrantArn": r["grant"]},
        "CreateGrantVersion": {"ClientToken": token(), "GrantArn": r["grant"], "Status": "ACTIVE"},
        "DeleteGrant": {"GrantArn": r["grant"], "Version": "1"},
        "GetGrant": {"GrantArn": r["grant"]},
        "ListDistributedGrants": {"GrantArns": [r["grant"]], "MaxResults": 10},
        "ListReceivedGrants": {"GrantArns": [r["grant"]], "MaxResults": 10},
        "CreateToken": {"LicenseArn": r["arn"], "ClientToken": token()},
        "GetAccessToken": {"Token": r["refresh"]},
        "ListTokens": {"TokenIds": [r["token_id"]], "MaxResults": 10},
        "DeleteToken": {"TokenId": r["token_id"]},
        "TagResource": {"ResourceArn": r["arn"], "Tags": [{"Key": "k", "Value": "v"}]},
        "UntagResource": {"ResourceArn": r["arn"], "TagKeys": ["k"]},
        "ListTagsForResource": {"ResourceArn": r["arn"]},
    }
    return by_op[op]


def variants(shape, value):
    """Values to put in a member instead of `value`: wrong type, empty, too
    long, NUL, naming nothing, out of range."""
    t = shape.type_name
    if t == "string":
        out = [7, "", "x" * 3000, "a\u0000b", NOWHERE_LICENSE, NOWHERE_GRANT, "arn:aws:nope", "\u00e9\u4e2d"]
        if shape.enum:
            out.append("NOT_A_VALUE")
        return out
    if t in ("integer", "long"):
        return ["1", -1, 0, 2**31, 2**63, 2**64, 1.5]
    if t == "boolean":
        return ["true", 1]
    if t == "list":
        member = value[0] if isinstance(value, list) and value else "x"
        return ["x", [], [member] * 201, [None], [{"Name": 1}]]
    if t == "structure":
        return ["x", {}, {"Unknown": 1}]
    if t == "timestamp":
        return ["yesterday", -1]
    return [None]


def mutations(op: str, base: dict):
    shape = MODEL.operation_model(op).input_shape
    yield base
    yield {}
    for name, member in shape.members.items():
        if name in base:
            less = copy.deepcopy(base)
            del less[name]
            yield less
        for v in variants(member, base.get(name)):
            changed = copy.deepcopy(base)
            changed[name] = v
            if name == "ClientToken" or "ClientToken" not in changed or name in ("Entitlements",):
                yield changed
            else:
                changed["ClientToken"] = token()
                yield changed
        if member.type_name == "list" and isinstance(base.get(name), list) and base[name] \
                and isinstance(base[name][0], dict):
            for field, sub in member.member.members.items():
                for v in variants(sub, base[name][0].get(field)):
                    changed = copy.deepcopy(base)
                    changed[name][0][field] = v
                    yield changed


def test_every_error_of_every_operation_is_in_the_model(world, resources):
    walk = Walk(world)
    w = world
    for op in OFFERED:
        base = baseline(op, resources, world)
        for who in (w.stranger, w.customer, w.vendor):
            for body in mutations(op, base):
                walk.send(who, op, body)
            for raw in (b"[]", b"not json", b'{"LicenseArn": ', b"\xff\xfe"):
                walk.send(who, op, raw)
        # Without a credential.
        walk.record(op, "unsigned", unsigned_post(w.server.url, TARGET_PREFIX + op, json.dumps(base).encode()))
    assert not walk.bad, "\n".join(walk.bad[:30]) + f"\n({len(walk.bad)} in all)"
    print(f"{walk.sent} requests, {sum(sum(c.values()) for c in walk.seen.values())} errors:",
          {op: dict(walk.seen[op]) for op in OFFERED})
    # Every operation had errors to check, and more than one kind for most.
    for op in OFFERED:
        assert sum(walk.seen[op].values()) >= 10, (op, walk.seen[op])
    kinds = sum(1 for op in OFFERED if len(walk.seen[op]) >= 2)
    assert kinds >= len(OFFERED) - 2, {op: dict(walk.seen[op]) for op in OFFERED}


def test_state_conflicts_answer_with_listed_exceptions(world, resources):
    """The answers the issue names, and their neighbours: a name that names
    nothing, a grant in a state that forbids the change, a ClientToken reused
    for another request."""
    w = world
    walk = Walk(world)
    expect = []

    def check(who, op, body, want):
        walk.send(who, op, body)
        expect.append((op, want))

    check(w.customer, "GetLicense", {"LicenseArn": NOWHERE_LICENSE}, "InvalidParameterValueException")
    check(w.stranger, "AcceptGrant", {"GrantArn": NOWHERE_GRANT}, "InvalidParameterValueException")
    check(w.stranger, "GetGrant", {"GrantArn": NOWHERE_GRANT}, "InvalidParameterValueException")
    check(w.vendor, "DeleteGrant", {"GrantArn": NOWHERE_GRANT, "Version": "1"}, "InvalidParameterValueException")
    check(w.vendor, "GetLicenseUsage", {"LicenseArn": NOWHERE_LICENSE}, "InvalidParameterValueException")
    check(w.vendor, "ListLicenseVersions", {"LicenseArn": NOWHERE_LICENSE}, "InvalidParameterValueException")
    check(w.vendor, "ListLicenseVersions", {"LicenseArn": resources["arn"], "MaxResults": 0},
          "InvalidParameterValueException")
    check(w.vendor, "TagResource", {"ResourceArn": NOWHERE_LICENSE, "Tags": [{"Key": "k", "Value": "v"}]},
          "InvalidParameterValueException")
    # A rejected grant cannot be activated: CreateGrantVersion lists no ConflictException.
    rejected = create_grant(w.v, resources["arn"], w.stranger, ["CheckoutLicense"])["GrantArn"]
    w.s.reject_grant(GrantArn=rejected)
    check(w.stranger, "CreateGrantVersion", {"GrantArn": rejected, "Status": "ACTIVE", "ClientToken": token()},
          "ValidationException")
    check(w.stranger, "AcceptGrant", {"GrantArn": rejected}, "ValidationException")
    check(w.vendor, "DeleteGrant", {"GrantArn": rejected, "Version": "999"}, "ValidationException")
    # A ClientToken reused for another checkout: CheckoutLicense lists no ConflictException.
    ct = token()
    checkout(w.c, resources["sku"], w.fingerprint(), ClientToken=ct)
    check(w.customer, "CheckoutLicense", {**baseline("CheckoutLicense", resources, w), "ClientToken": ct,
                                          "NodeId": "another"}, "ValidationException")
    # ExtendLicenseConsumption lists ResourceNotFoundException; CheckInLicense ConflictException.
    out = checkout(w.c, resources["sku"], w.fingerprint())
    w.c.check_in_license(LicenseConsumptionToken=out["LicenseConsumptionToken"])
    check(w.customer, "CheckInLicense", {"LicenseConsumptionToken": out["LicenseConsumptionToken"]},
          "ConflictException")
    check(w.customer, "ExtendLicenseConsumption", {"LicenseConsumptionToken": out["LicenseConsumptionToken"]},
          "ResourceNotFoundException")
    assert not walk.bad, "\n".join(walk.bad)
    got = [(op, name) for op in walk.seen for name in walk.seen[op]]
    for op, want in expect:
        assert (op, want) in got, f"{op}: expected {want}; saw {dict(walk.seen[op])}"


def test_the_lists_used_here_are_the_model_s():
    """The pinned botocore's model offers every operation walked above."""
    names = set(MODEL.operation_names)
    assert set(OFFERED) <= names
    for op in OFFERED:
        assert "ServerInternalException" in listed(op), op
