"""The BYOC environment agent against a real S3 API: moto's server on a local
port plays the customer's ops bucket, boto3 writes product keys into it, and
`tessera agent run` must pick them up without a restart.

Product keys are minted here in Python with `cryptography`, reproducing the
format of crates/tessera-token/src/product_key.rs byte for byte: the body JSON
(members in the struct's order, no spaces, as serde_json writes it) signed
with Ed25519, the signature as base64url without padding appended as the last
member, the whole JSON in standard base64.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

import boto3
import pytest
import requests
from botocore.config import Config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness import _die_with_parent, clean_env, free_port, iso, tessera_bin, utcnow

ENV_ID = "env-conf-1"
BUCKET = "automq-ops-env-conf-1"
KEY_OBJECT = "tessera/product-key"
S3_CREDS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}


def _popen(args: list, log_path: Path, env: dict, cwd: Path) -> tuple[subprocess.Popen, object]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")
    log.write(f"\n=== start {' '.join(args)}\n".encode())
    log.flush()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=str(cwd),
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    return proc, log


def _stop(proc: Optional[subprocess.Popen], log) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if log is not None:
        log.close()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_http(url: str, proc: subprocess.Popen, log_path: Path, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready\n{_tail(log_path)}")
        try:
            r = requests.get(url, timeout=1)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as e:
            last = repr(e)
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {timeout}s (last: {last})\n{_tail(log_path)}")


# --------------------------------------------------------------------------
# moto's S3 server


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    base = tmp_path_factory.mktemp("moto")
    port = free_port()
    log_path = base / "moto.log"
    proc, log = _popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log_path,
                       clean_env(), base)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(url + "/moto-api/", proc, log_path, "moto_server")
        yield url
    finally:
        _stop(proc, log)


@pytest.fixture(scope="module")
def s3(s3_endpoint):
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test",
                          config=Config(retries={"total_max_attempts": 1}))
    client.create_bucket(Bucket=BUCKET)
    return client


# --------------------------------------------------------------------------
# the vendor: an Ed25519 issuer key and product keys in the Rust format


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Issuer:
    def __init__(self, account_id: str = "111111111111"):
        self.private = Ed25519PrivateKey.generate()
        raw = self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.x = _b64url(raw)
        self.kid = f"{account_id}-{hashlib.sha256(raw).hexdigest()[:16]}"

    def jwks(self) -> dict:
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": self.x, "kid": self.kid}]}

    def body(self, install_id: str, *, aku: int, days: float = 30, environment_id: str = ENV_ID,
             version: str = "1", issued_at: Optional[dt.datetime] = None) -> dict:
        now = utcnow()
        # Member order is the order of ProductKeyBody's fields.
        return {
            "installId": install_id,
            "environmentId": environment_id,
            "licenseArn": "arn:aws:license-manager::111111111111:license:l-" + uuid.UUID(int=7).hex,
            "licenseVersion": version,
            "productSku": "automq-byoc",
            "entitlement": "AKU",
            "aku": aku,
            "validFrom": iso(now - dt.timedelta(days=1)),
            "validUntil": iso(now + dt.timedelta(days=days)),
            "issuedAt": iso(issued_at or now),
            "keyFingerprint": "aws:111111111111:Self:issuer-fingerprint",
            "keyId": self.kid,
        }

    def issue(self, body: dict) -> str:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        sig = _b64url(self.private.sign(text.encode()))
        signed = text[:-1] + f',"signature":"{sig}"}}'
        return base64.b64encode(signed.encode()).decode()


def tamper(key: str, old: str, new: str) -> str:
    text = base64.b64decode(key).decode()
    assert old in text, text
    return base64.b64encode(text.replace(old, new).encode()).decode()


# --------------------------------------------------------------------------
# the agent


class Agent:
    """One `tessera agent run` process reading an s3:// ops bucket on moto."""

    def __init__(self, base: Path, s3_endpoint: str, prefix: str, issuer: Issuer):
        self.base = base
        self.data_dir = base / "agent-data"
        self.log_path = base / "agent.log"
        self.jwks = base / "jwks.json"
        self.jwks.write_text(json.dumps(issuer.jwks()))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ops_bucket = f"s3://{BUCKET}/{prefix}"
        self.env = clean_env({"AWS_ENDPOINT_URL": s3_endpoint, **S3_CREDS, "RUST_BACKTRACE": "1"})
        self.proc = None
        self._log = None

    def start(self) -> "Agent":
        args = [str(tessera_bin()), "agent", "run", "--data-dir", str(self.data_dir),
                "--listen", f"127.0.0.1:{self.port}", "--environment-id", ENV_ID,
                "--ops-bucket", self.ops_bucket, "--cloud-provider", "aws", "--region", "us-east-1",
                "--trusted-jwks", str(self.jwks), "--bucket-poll-seconds", "1"]
        self.proc, self._log = _popen(args, self.log_path, self.env, self.base)
        _wait_http(self.url + "/healthz", self.proc, self.log_path, "tessera agent run")
        return self

    def stop(self) -> None:
        _stop(self.proc, self._log)
        self._log = None

    def settings(self) -> dict:
        r = requests.get(self.url + "/v1/settings", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_settings(self, pred, what: str, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        s = None
        while time.monotonic() < deadline:
            s = self.settings()
            if pred(s):
                return s
            time.sleep(0.2)
        pytest.fail(f"{what}: not within {timeout}s; settings: {s}\n{_tail(self.log_path)}")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cp = subprocess.run([str(tessera_bin()), "agent", *args, "--agent-url", self.url], capture_output=True,
                            text=True, env=clean_env(), timeout=60, stdin=subprocess.DEVNULL)
        if check and cp.returncode != 0:
            raise AssertionError(f"tessera agent {' '.join(args)} exited {cp.returncode}\n{cp.stdout}\n{cp.stderr}")
        return cp


@pytest.fixture
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def agent(tmp_path, s3_endpoint, s3, issuer):
    a = Agent(tmp_path, s3_endpoint, f"t-{uuid.uuid4().hex[:8]}", issuer).start()
    try:
        yield a
    finally:
        a.stop()


def put_key(s3, agent: Agent, key: str) -> None:
    prefix = agent.ops_bucket.split(BUCKET, 1)[1].strip("/")
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{KEY_OBJECT}", Body=key.encode(), ContentType="text/plain")


# --------------------------------------------------------------------------


def test_the_agent_starts_in_trial_and_sees_an_empty_s3_ops_bucket(agent):
    s = agent.settings()
    assert s["licenseState"] == "TRIAL" and s["akuAllocated"] == 14, s
    assert s["opsBucket"] == agent.ops_bucket
    assert len(s["installId"]) == 32
    s = agent.wait_settings(lambda s: (s.get("lastBucketCheck") or {}).get("outcome") == "NO_KEY",
                            "a successful read of the empty bucket")


def test_a_key_written_to_the_s3_ops_bucket_is_applied_without_restart(agent, s3, issuer):
    install = agent.settings()["installId"]
    first = issuer.body(install, aku=30)
    put_key(s3, agent, issuer.issue(first))
    s = agent.wait_settings(lambda s: s["licenseState"] == "ACTIVE", "activation from the bucket")
    assert s["akuAllocated"] == 30
    assert s["licenseArn"] == first["licenseArn"] and s["licenseVersion"] == "1"
    assert s["expiresAt"] == first["validUntil"]
    assert s["licenseSource"] == "OPS_BUCKET"
    pid = agent.proc.pid

    # A renewal with more AKU, issued later, replaces it live.
    renewal = issuer.body(install, aku=80, days=365, version="2",
                          issued_at=utcnow() + dt.timedelta(seconds=5))
    put_key(s3, agent, issuer.issue(renewal))
    s = agent.wait_settings(lambda s: s["akuAllocated"] == 80, "the renewal from the bucket")
    assert s["licenseVersion"] == "2" and s["expiresAt"] == renewal["validUntil"]
    assert agent.proc.pid == pid and agent.proc.poll() is None, "no restart"

    info = json.loads(agent.cli("info", "--output", "json").stdout)
    assert info["licenseState"] == "ACTIVE" and info["akuAllocated"] == 80


def test_a_tampered_or_foreign_object_in_the_bucket_is_ignored(agent, s3, issuer):
    install = agent.settings()["installId"]
    good = issuer.issue(issuer.body(install, aku=40))
    put_key(s3, agent, good)
    agent.wait_settings(lambda s: s["akuAllocated"] == 40 and s["licenseState"] == "ACTIVE", "the good key")

    put_key(s3, agent, tamper(good, '"aku":40', '"aku":4000'))
    s = agent.wait_settings(lambda s: "BAD_SIGNATURE" in ((s.get("lastBucketCheck") or {}).get("detail") or ""),
                            "the tampered object refused")
    assert s["akuAllocated"] == 40 and s["licenseState"] == "ACTIVE"

    put_key(s3, agent, issuer.issue(issuer.body("0123456789abcdef0123456789abcdef", aku=400)))
    s = agent.wait_settings(lambda s: "WRONG_INSTALL" in ((s.get("lastBucketCheck") or {}).get("detail") or ""),
                            "the foreign key refused")
    assert s["akuAllocated"] == 40
    assert "ignored a product key" in agent.log_path.read_text(errors="replace")


def test_python_minted_keys_activate_through_the_cli(agent, issuer):
    install = agent.settings()["installId"]
    refused = agent.cli("activate", issuer.issue(issuer.body(install, aku=20, environment_id="env-other")),
                        "--output", "json", check=False)
    assert refused.returncode != 0
    assert json.loads(refused.stdout)["reason"] == "WRONG_ENVIRONMENT", refused.stdout
    assert "env-other" in refused.stderr

    out = json.loads(agent.cli("activate", issuer.issue(issuer.body(install, aku=20)), "--output", "json").stdout)
    assert out["licenseState"] == "ACTIVE" and out["akuAllocated"] == 20

    created = json.loads(agent.cli("instances", "create", "kafka-1", "--aku", "15", "--output", "json").stdout)
    assert created == {"instanceId": "kafka-1", "aku": 15}
    over = agent.cli("instances", "create", "kafka-2", "--aku", "6", "--output", "json", check=False)
    assert over.returncode != 0
    body = json.loads(over.stdout)
    assert body["code"] == "Instance.NoAvailableSubscription"
    assert (body["requested"], body["used"], body["allowed"]) == (6, 15, 20)
    agent.cli("instances", "scale", "kafka-1", "--aku", "10")
    listed = json.loads(agent.cli("instances", "list", "--output", "json").stdout)
    assert listed["instances"] == [{"instanceId": "kafka-1", "aku": 10}] and listed["akuInUse"] == 10
    table = agent.cli("instances", "list").stdout
    assert "kafka-1" in table and "10 of 20 AKU" in table
    agent.cli("instances", "delete", "kafka-1")
    assert agent.settings()["akuInUse"] == 0


def test_an_unreachable_s3_endpoint_keeps_the_trial(tmp_path, issuer):
    a = Agent(tmp_path, f"http://127.0.0.1:{free_port()}", "nowhere", issuer).start()
    try:
        s = a.wait_settings(lambda s: (s.get("lastBucketCheck") or {}).get("outcome") == "FAILED",
                            "a failed bucket read", timeout=60)
        assert s["licenseState"] == "TRIAL"
    finally:
        a.stop()
