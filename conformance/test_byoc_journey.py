"""The BYOC journey against real processes: a vendor server, two environment
agents sharing one 300-AKU license (100 and 200), the built-in trial, product
keys bound to an install, live renewal through the ops bucket, expiry, restarts
and a clock moved back."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from harness import TesseraServer, clean_env, free_port, iso, tessera_bin, token, utcnow
import datetime as dt

DAY = 86400


def store_args(server: TesseraServer) -> list[str]:
    args = ["--data-dir", str(server.data_dir)]
    url = getattr(server, "database_url", None)
    if url:
        args += ["--database-url", url]
    return args


class Agent:
    """One `tessera agent run` process over its own data directory."""

    def __init__(self, root: Path, env_id: str, bucket: Path, server: TesseraServer):
        self.dir = root / env_id
        self.env_id = env_id
        self.bucket = bucket
        self.server = server
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.log = root / f"{env_id}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *extra: str) -> "Agent":
        self.port = free_port()
        args = [str(tessera_bin()), "agent", "run", "--data-dir", str(self.dir), "--listen", f"127.0.0.1:{self.port}",
                "--environment-id", self.env_id, "--ops-bucket", f"file://{self.bucket}",
                "--cloud-provider", "aws", "--region", "us-east-1",
                "--trusted-jwks", self.server.url + "/.well-known/jwks.json",
                "--bucket-poll-seconds", "1", "--test-clock", *extra]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=clean_env({"RUST_BACKTRACE": "1"}))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/v1/settings", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            time.sleep(0.1)
        raise AssertionError("agent did not start: " + self.log.read_text()[-2000:])

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def settings(self) -> dict:
        r = requests.get(self.url + "/v1/settings", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def reserve(self, instance: str, aku: int) -> requests.Response:
        return requests.post(self.url + "/v1/instances", json={"instanceId": instance, "aku": aku}, timeout=10)

    def scale(self, instance: str, aku: int) -> requests.Response:
        return requests.patch(self.url + f"/v1/instances/{instance}", json={"aku": aku}, timeout=10)

    def delete(self, instance: str) -> requests.Response:
        return requests.delete(self.url + f"/v1/instances/{instance}", timeout=10)

    def activate(self, key: str) -> requests.Response:
        return requests.post(self.url + "/v1/license", json={"productKey": key}, timeout=10)

    def advance(self, seconds: int) -> None:
        r = requests.post(self.url + "/_tessera/test/clock", json={"AdvanceSeconds": seconds}, timeout=10)
        assert r.status_code == 200, r.text

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(tessera_bin()), "agent", *args, "--agent-url", self.url], capture_output=True,
                              text=True, timeout=30, env=clean_env(), stdin=subprocess.DEVNULL)


def vendor_cli(server: TesseraServer, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return server.cli(*args, *store_args(server), check=check)


def assert_refused(resp: requests.Response, requested: int, used: int, allowed: int) -> None:
    assert resp.status_code == 403, resp.text
    body = resp.json()
    assert body["code"] == "Instance.NoAvailableSubscription", body
    assert (body["requested"], body["used"], body["allowed"]) == (requested, used, allowed), body


@pytest.fixture
def journey(tmp_path):
    server = TesseraServer(tmp_path / "vendor", tmp_path / "vendor.log").start()
    agents: list[Agent] = []
    yield server, agents, tmp_path
    for a in agents:
        a.kill9()
    server.stop()


def test_the_byoc_journey(journey):
    server, agents, root = journey
    vendor = server.create_account("vendor")
    customer = server.create_account("customer")
    lm = server.client(vendor)
    now = utcnow()
    arn = lm.create_license(
        LicenseName="AutoMQ BYOC subscription", ProductName="AutoMQ for Kafka", ProductSKU="automq-byoc",
        Issuer={"Name": "Self"}, HomeRegion="us-east-1",
        Validity={"Begin": iso(now - dt.timedelta(days=1)), "End": iso(now + dt.timedelta(days=30))},
        Entitlements=[{"Name": "AKU", "MaxCount": 300, "Unit": "Count"}], Beneficiary=customer.account_id,
        ConsumptionConfiguration={"RenewType": "None"}, ClientToken=token(),
    )["LicenseArn"]

    a = Agent(root, "env-a", root / "ops-a", server).start()
    b = Agent(root, "env-b", root / "ops-b", server).start()
    agents += [a, b]
    sa, sb = a.settings(), b.settings()
    assert sa["licenseState"] == "TRIAL" and sa["akuAllocated"] == 14, sa
    assert sa["installId"] != sb["installId"]

    # The built-in trial: 14 AKU, the 15th refused with the numbers.
    for i in range(14):
        assert a.reserve(f"trial-{i}", 1).status_code in (200, 201)
    assert_refused(a.reserve("trial-14", 1), 1, 14, 14)

    # The vendor registers both environments on the one license.
    for env, agent, aku in (("env-a", a, 100), ("env-b", b, 200)):
        cp = vendor_cli(server, "env", "register", "--license-arn", arn, "--environment-id", env,
                        "--install-id", agent.settings()["installId"], "--ops-bucket", f"file://{agent.bucket}",
                        "--cloud", "aws", "--region", "us-east-1", "--aku", str(aku), "--output", "json")
        assert json.loads(cp.stdout)[0]["AkuAllocated"] == aku
    over = vendor_cli(server, "env", "allocate", "env-a", "--aku", "101", check=False)
    assert over.returncode != 0 and "300" in over.stderr, over.stderr

    key_b = json.loads(vendor_cli(server, "product-key", "issue", "env-b", "--output", "json").stdout)["ProductKey"]
    key_a = json.loads(vendor_cli(server, "product-key", "issue", "env-a", "--output", "json").stdout)["ProductKey"]
    assert key_a.startswith("eyJpbnN0YWxsSWQiOi")

    # A key for the other install is refused, and so is a tampered one; the trial stays.
    r = a.activate(key_b)
    assert r.status_code == 400 and r.json()["reason"] == "WRONG_INSTALL", r.text
    doc = base64.b64decode(key_a).decode().replace('"aku":100', '"aku":300')
    r = a.activate(base64.b64encode(doc.encode()).decode())
    assert r.status_code == 400 and r.json()["reason"] == "BAD_SIGNATURE", r.text
    assert a.settings()["licenseState"] == "TRIAL"

    # Activation (through the CLI), then reservations up to the allocation.
    cp = a.cli("activate", key_a)
    assert cp.returncode == 0, cp.stderr
    s = a.settings()
    assert (s["licenseState"], s["akuAllocated"], s["licenseArn"]) == ("ACTIVE", 100, arn), s
    assert a.reserve("big", 86).status_code in (200, 201)
    assert_refused(a.reserve("one-more", 1), 1, 100, 100)
    assert b.activate(key_b).status_code == 200

    # The vendor moves 50 AKU from env-b to env-a and publishes; env-a applies it live.
    vendor_cli(server, "env", "allocate", "env-b", "--aku", "150")
    vendor_cli(server, "env", "allocate", "env-a", "--aku", "150")
    vendor_cli(server, "product-key", "publish", "env-a")
    started = time.monotonic()
    while a.settings()["akuAllocated"] != 150:
        assert time.monotonic() - started < 60, "the renewal was not applied within a minute"
        time.sleep(0.5)
    assert a.reserve("after-renewal", 50).status_code in (200, 201)
    # A tampered object in the bucket is ignored; the good key stays.
    (a.bucket / "tessera" / "product-key").write_text(base64.b64encode(doc.encode()).decode())
    time.sleep(3)
    assert a.settings()["akuAllocated"] == 150

    # Restart (kill -9): same install ID, same reservations.
    before = a.settings()
    a.kill9()
    a.start()
    after = a.settings()
    assert after["installId"] == before["installId"] and after["akuInUse"] == before["akuInUse"] == 150

    # Expiry: nothing is created or scaled up; running instances may shrink or go.
    a.advance(31 * DAY)
    assert a.settings()["licenseState"] == "EXPIRED"
    assert a.reserve("late", 1).status_code == 403
    assert a.scale("big", 87).status_code == 403
    assert a.scale("big", 10).status_code == 200
    assert a.delete("trial-0").status_code in (200, 204)
    listed = requests.get(a.url + "/v1/instances", timeout=10).json()
    assert any(i.get("instanceId") == "big" for i in (listed if isinstance(listed, list) else listed.get("instances", [])))

    # A clock moved back does not revive an expired trial.
    c = Agent(root, "env-c", root / "ops-c", server).start()
    agents.append(c)
    c.advance(15 * DAY)
    assert c.settings()["licenseState"] == "EXPIRED"
    c.kill9()
    c.start("--clock-offset-seconds", str(-20 * DAY))
    assert c.settings()["licenseState"] == "EXPIRED"
    assert c.reserve("x", 1).status_code == 403
