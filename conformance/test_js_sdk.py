"""The AWS SDK for JavaScript v3 works against Tessera with only an endpoint
override, and types every refusal: it looks exception names up service-wide,
so each name Tessera answers must be one the model defines."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from harness import checkout, counted, new_sku, token

JS = Path(__file__).resolve().parent / "js"

pytestmark = pytest.mark.skipif(not (JS / "node_modules" / "@aws-sdk" / "client-license-manager").is_dir()
                                or shutil.which("node") is None,
                                reason="the JavaScript SDK is not installed (npm ci in conformance/js)")


def run_js(server, account, calls: list) -> list:
    plan = {"endpoint": server.url, "accessKeyId": account.access_key_id,
            "secretAccessKey": account.secret_access_key, "calls": calls}
    cp = subprocess.run(["node", str(JS / "errors.mjs")], input=json.dumps(plan), capture_output=True, text=True,
                        timeout=120, cwd=str(JS))
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def test_the_javascript_sdk_types_every_refusal(world):
    sku = new_sku("js")
    arn, _ = world.create_license(sku=sku, entitlements=[counted("Seats", 1)])
    fp = world.fingerprint()
    ct = token()
    checkout(world.c, sku, fp, ClientToken=ct)
    missing = f"arn:aws:license-manager::{world.vendor.account_id}:license:l-{uuid.uuid4().hex}"
    ents = [{"Name": "Seats", "Value": "1", "Unit": "Count"}]
    calls = [
        {"command": "ListReceivedLicensesCommand", "input": {"LicenseArns": [arn]}},
        {"command": "GetLicenseCommand", "input": {"LicenseArn": missing}, "expect": "InvalidParameterValueException"},
        {"command": "CheckoutLicenseCommand", "expect": "ValidationException",
         "input": {"ProductSKU": sku, "CheckoutType": "PROVISIONAL", "KeyFingerprint": fp, "Entitlements": ents,
                   "ClientToken": ct, "NodeId": "another request"}},
        {"command": "CheckoutLicenseCommand", "expect": "NoEntitlementsAllowedException",
         "input": {"ProductSKU": sku, "CheckoutType": "PROVISIONAL", "KeyFingerprint": fp, "Entitlements": ents,
                   "ClientToken": token()}},
        {"command": "CheckoutLicenseCommand", "expect": "ValidationException",
         "input": {"ProductSKU": sku, "CheckoutType": "PROVISIONAL", "KeyFingerprint": fp,
                   "Entitlements": [{"Name": "Seats", "Value": "9223372036854775807", "Unit": "Count"}],
                   "ClientToken": token()}},
        {"command": "CheckInLicenseCommand", "input": {"LicenseConsumptionToken": uuid.uuid4().hex},
         "expect": "ResourceNotFoundException"},
        {"command": "GetGrantCommand", "expect": "InvalidParameterValueException",
         "input": {"GrantArn": f"arn:aws:license-manager::{world.vendor.account_id}:grant:g-{uuid.uuid4().hex}"}},
    ]
    results = run_js(world.server, world.customer, calls)
    assert results[0]["ok"] and "Licenses" in results[0]["keys"], results[0]
    for call, got in zip(calls[1:], results[1:]):
        assert not got["ok"], (call, got)
        assert got["name"] == call["expect"], (call["command"], got)
        assert got["typed"] and got["service"], f"{call['command']}: not a typed {call['expect']}: {got}"
        assert got["message"] and got["requestId"] and got["status"] == 400, got
