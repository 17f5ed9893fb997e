"""Process control and request helpers for the Tessera conformance suite.

Everything here talks to a real `tessera serve` process over loopback, the way
boto3, the AWS CLI and hand-signed HTTP requests would talk to AWS License
Manager.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional
from unittest import mock

import boto3
import botocore.auth
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

REPO_ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
SERVICE = "license-manager"
TARGET_PREFIX = "AWSLicenseManager."
JSON_CT = "application/x-amz-json-1.1"

# The model's ISO8601DateTime pattern: a zone (Z or an offset) is mandatory.
ISO_RE = re.compile(
    r"^(-?(?:[1-9][0-9]*)?[0-9]{4})-(1[0-2]|0[1-9])-(3[0-1]|0[1-9]|[1-2][0-9])"
    r"T(2[0-3]|[0-1][0-9]):([0-5][0-9]):([0-5][0-9])(\.[0-9]+)?"
    r"(Z|[+-](?:2[0-3]|[0-1][0-9]):[0-5][0-9])+$"
)
ACCOUNT_RE = re.compile(r"^[0-9]{12}$")


def license_arn_re(account_id: str) -> re.Pattern:
    return re.compile(rf"^arn:aws:license-manager::{account_id}:license:l-[0-9a-f]{{32}}$")


def grant_arn_re(account_id: str) -> re.Pattern:
    return re.compile(rf"^arn:aws:license-manager::{account_id}:grant:g-[0-9a-f]{{32}}$")


# Every AllowedOperation, in the model's order (note ExtendConsumptionLicense).
ALL_OPERATIONS = [
    "CreateGrant",
    "CheckoutLicense",
    "CheckoutBorrowLicense",
    "CheckInLicense",
    "ExtendConsumptionLicense",
    "ListPurchasedLicenses",
    "CreateToken",
]


def tessera_bin() -> Path:
    raw = os.environ.get("TESSERA_BIN")
    path = Path(raw) if raw else REPO_ROOT / "target" / "release" / "tessera"
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


# --------------------------------------------------------------------------
# time helpers


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(t: dt.datetime) -> str:
    """2026-11-22T01:02:03Z: whole seconds, UTC, with the zone."""
    return t.astimezone(dt.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(s: str) -> dt.datetime:
    assert isinstance(s, str) and ISO_RE.match(s), f"not an ISO 8601 date-time with a zone: {s!r}"
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def assert_close(a: dt.datetime, b: dt.datetime, tolerance_s: float, what: str = "") -> None:
    delta = abs((a - b).total_seconds())
    assert delta <= tolerance_s, f"{what}: {a.isoformat()} vs {b.isoformat()} differ by {delta:.1f}s (> {tolerance_s}s)"


# --------------------------------------------------------------------------
# accounts and the server process


@dataclass(frozen=True)
class Account:
    name: str
    account_id: str
    access_key_id: str
    secret_access_key: str

    @property
    def root_arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:root"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child before exec: on Linux, SIGKILL the server if the test
    process dies, so that no server outlives an aborted run."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort, other platforms
        pass


# --------------------------------------------------------------------------
# PostgreSQL: TESSERA_CONFORMANCE_DATABASE=postgres gives every server a fresh
# database on the server of TESSERA_CONFORMANCE_POSTGRES_URL (a URL of any
# database there, by default the local one); a restarted server reuses its own.

DEFAULT_POSTGRES_URL = "postgres://root@127.0.0.1:5432/test"
_created_databases: list[str] = []


def on_postgres() -> bool:
    mode = os.environ.get("TESSERA_CONFORMANCE_DATABASE", "sqlite") or "sqlite"
    if mode not in ("sqlite", "postgres"):
        raise pytest.UsageError(f"TESSERA_CONFORMANCE_DATABASE must be sqlite or postgres, not {mode!r}")
    return mode == "postgres"


def postgres_admin_url() -> str:
    return os.environ.get("TESSERA_CONFORMANCE_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def _psql(sql: str) -> None:
    cp = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", postgres_admin_url(), "-c", sql],
                        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if cp.returncode != 0:
        raise RuntimeError(f"psql {sql!r} failed (is PostgreSQL up at {postgres_admin_url()}?): {cp.stderr.strip()}")


def create_database() -> str:
    """A new, empty PostgreSQL database; returns its URL. Dropped when the run ends."""
    name = f"tessera_conf_{uuid.uuid4().hex}"
    _psql(f"CREATE DATABASE {name}")
    _created_databases.append(name)
    base = postgres_admin_url().split("?", 1)[0].rsplit("/", 1)[0]
    return f"{base}/{name}"


@atexit.register
def _drop_databases() -> None:
    for name in _created_databases:
        with contextlib.suppress(Exception):
            _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def clean_env(extra: Optional[dict] = None) -> dict:
    """The caller's environment without AWS_* or TESSERA_* settings, so that a
    developer's own AWS profile or server settings never leak into a test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TESSERA_"))}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    if extra:
        env.update(extra)
    return env


class TesseraServer:
    """One `tessera serve` process on a loopback port over one data directory.

    The process can be stopped gracefully, killed with SIGKILL and started
    again over the same data directory (on a new port: build clients after a
    restart with `client()`).

    On PostgreSQL (`database_url`, or a fresh database when
    TESSERA_CONFORMANCE_DATABASE=postgres) the server, its restarts and the
    `tessera` commands run by `cli()` all use that database."""

    def __init__(self, data_dir: Path, log_path: Path, *, test_clock: bool = True,
                 config_from_env: bool = False, binary: Optional[Path] = None,
                 database_url: Optional[str] = None, extra_args: Iterable[str] = (),
                 nofile: Optional[int] = None):
        self.binary = binary or tessera_bin()
        self.extra_args = list(extra_args)
        # A soft limit on the server's open file descriptors (RLIMIT_NOFILE).
        self.nofile = nofile
        self.data_dir = Path(data_dir)
        self.database_url = database_url or (create_database() if on_postgres() else None)
        self.log_path = Path(log_path)
        self.test_clock = test_clock
        self.config_from_env = config_from_env
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None
        self._log = None
        self._session = None
        self._clients_config = Config(
            region_name=REGION,
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            max_pool_connections=4,
        )

    # ---- lifecycle

    @property
    def url(self) -> str:
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "TesseraServer":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.port = free_port()
        listen = f"127.0.0.1:{self.port}"
        env = clean_env({"RUST_BACKTRACE": "1"})
        # TESSERA_CONFORMANCE_SERVER_LOG sets the servers' log filter, for debugging a test.
        if os.environ.get("TESSERA_CONFORMANCE_SERVER_LOG"):
            env["TESSERA_LOG"] = os.environ["TESSERA_CONFORMANCE_SERVER_LOG"]
        if self.config_from_env:
            args = [str(self.binary), "serve"]
            env["TESSERA_DATA_DIR"] = str(self.data_dir)
            env["TESSERA_LISTEN"] = listen
            if self.test_clock:
                env["TESSERA_TEST_CLOCK"] = "1"
            if self.database_url:
                env["TESSERA_DATABASE_URL"] = self.database_url
        else:
            args = [str(self.binary), "serve", "--data-dir", str(self.data_dir), "--listen", listen]
            if self.test_clock:
                args.append("--test-clock")
            if self.database_url:
                args += ["--database-url", self.database_url]
        args += self.extra_args
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        shown = " ".join(re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", a) for a in args)
        self._log.write(f"\n=== start {shown}\n".encode())
        self._log.flush()
        nofile = self.nofile

        def prepare() -> None:
            _die_with_parent()
            if nofile is not None:
                import resource
                _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, cwd=str(self.data_dir.parent),
                                     preexec_fn=prepare if sys.platform.startswith("linux") else None)
        self._wait_healthy(timeout)
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tessera serve exited with {self.proc.returncode} before it was ready\n{self.log_tail()}")
            try:
                r = requests.get(self.url + "/healthz", timeout=1)
                if r.status_code == 200 and r.json().get("status") == "ok":
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except (requests.RequestException, ValueError) as e:
                last = repr(e)
            time.sleep(0.05)
        self.kill9()
        raise RuntimeError(f"tessera serve not healthy within {timeout}s (last: {last})\n{self.log_tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL: no shutdown hooks, no flush: what a power cut looks like to the process."""
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
        self._reap()

    def stop(self) -> None:
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self, *, hard: bool = True) -> "TesseraServer":
        self.kill9() if hard else self.stop()
        return self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    # ---- test clock

    def advance_clock(self, seconds: int) -> dict:
        r = requests.post(self.url + "/_tessera/test/clock", json={"AdvanceSeconds": seconds}, timeout=10)
        assert r.status_code == 200, f"test clock: {r.status_code} {r.text}"
        body = r.json()
        parse_iso(body["Now"])
        return body

    # ---- the tessera CLI

    def cli(self, *args: str, env: Optional[dict] = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess:
        env = dict(env or clean_env())
        if self.database_url:
            # Overrides the --data-dir the callers pass, as it does for an operator.
            env.setdefault("TESSERA_DATABASE_URL", self.database_url)
        cp = subprocess.run([str(self.binary), *args], capture_output=True, text=True,
                            env=env, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and cp.returncode != 0:
            raise AssertionError(f"tessera {' '.join(args)} exited {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}")
        return cp

    def create_account(self, name: str, *, aws_profile: Optional[str] = None,
                       env: Optional[dict] = None) -> Account:
        args = ["account", "create", "--name", name, "--data-dir", str(self.data_dir), "--output", "json",
                "--allow-duplicate-name"]
        if aws_profile:
            args += ["--aws-profile", aws_profile, "--endpoint-url", self.url, "--region", REGION]
        cp = self.cli(*args, env=env)
        body = json.loads(cp.stdout)
        assert isinstance(body, dict), cp.stdout
        assert ACCOUNT_RE.match(body["AccountId"]), body
        assert body["AccessKeyId"] and body["SecretAccessKey"], body
        return Account(name, body["AccountId"], body["AccessKeyId"], body["SecretAccessKey"])

    def create_key(self, account_id: str) -> Account:
        cp = self.cli("key", "create", "--account", account_id, "--data-dir", str(self.data_dir), "--output", "json")
        body = json.loads(cp.stdout)
        assert body["AccountId"] == account_id, body
        return Account("key", account_id, body["AccessKeyId"], body["SecretAccessKey"])

    def revoke_key(self, access_key_id: str) -> None:
        self.cli("key", "revoke", access_key_id, "--data-dir", str(self.data_dir))

    # ---- clients

    def client(self, account: Account, *, validate: bool = True, secret: Optional[str] = None,
               access_key_id: Optional[str] = None):
        cfg = self._clients_config
        if not validate:
            cfg = cfg.merge(Config(parameter_validation=False))
        if self._session is None:
            self._session = boto3.session.Session()
        return self._session.client(
            SERVICE,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=access_key_id or account.access_key_id,
            aws_secret_access_key=secret or account.secret_access_key,
            config=cfg,
        )


# --------------------------------------------------------------------------
# a set of accounts on one server


class World:
    """A running server plus a vendor (issuer), a customer (beneficiary) and a
    stranger (neither), each with a boto3 client."""

    def __init__(self, server: TesseraServer, tag: str = ""):
        self.server = server
        suffix = f"-{tag}" if tag else ""
        self.vendor = server.create_account("vendor" + suffix)
        self.customer = server.create_account("customer" + suffix)
        self.stranger = server.create_account("stranger" + suffix)
        self.refresh_clients()

    def refresh_clients(self) -> None:
        s = self.server
        self.v = s.client(self.vendor)
        self.c = s.client(self.customer)
        self.s = s.client(self.stranger)

    def fingerprint(self, issuer: str = "Self") -> str:
        return fingerprint(self.vendor.account_id, issuer)

    def create_license(self, **kw) -> tuple[str, dict]:
        """The vendor issues a license to the customer (by default)."""
        kw.setdefault("beneficiary", self.customer.account_id)
        return create_license(self.v, **kw)


def fingerprint(account_id: str, issuer: str = "Self") -> str:
    return f"aws:{account_id}:{issuer}:issuer-fingerprint"


# --------------------------------------------------------------------------
# request builders

_NO = object()


def new_sku(prefix: str = "sku") -> str:
    return f"{prefix}-{uuid.uuid4()}"


def token() -> str:
    return str(uuid.uuid4())


def counted(name: str = "Seats", max_count: Optional[int] = 5, *, overage: Optional[bool] = False,
            allow_check_in: Optional[bool] = True, unit: str = "Count") -> dict:
    e = {"Name": name, "Unit": unit}
    if max_count is not None:
        e["MaxCount"] = max_count
    if overage is not None:
        e["Overage"] = overage
    if allow_check_in is not None:
        e["AllowCheckIn"] = allow_check_in
    return e


def tier(name: str, value: str = "Enabled") -> dict:
    return {"Name": name, "Value": value, "Unit": "None"}


def provisional(ttl_minutes: Optional[int] = 60) -> dict:
    c: dict = {"RenewType": "None"}
    if ttl_minutes is not None:
        c["ProvisionalConfiguration"] = {"MaxTimeToLiveInMinutes": ttl_minutes}
    return c


def license_request(*, beneficiary: str, sku: Optional[str] = None, name: Optional[str] = None,
                    issuer: str = "Self", entitlements: Optional[list] = None,
                    consumption: Optional[dict] = None, begin: Any = None, end: Any = None,
                    tags: Optional[list] = None, metadata: Optional[list] = None,
                    client_token: Optional[str] = None, product_name: str = "Conformance Product") -> dict:
    now = utcnow()
    sku = sku if sku is not None else new_sku()
    begin_s = begin if isinstance(begin, str) else iso(begin or now - dt.timedelta(hours=1))
    validity = {"Begin": begin_s}
    if end is not _NO:
        validity["End"] = end if isinstance(end, str) else iso(end or now + dt.timedelta(days=30))
    req = {
        "LicenseName": name or f"License {sku}",
        "ProductName": product_name,
        "ProductSKU": sku,
        "Issuer": {"Name": issuer},
        "HomeRegion": REGION,
        "Validity": validity,
        "Entitlements": entitlements if entitlements is not None else [counted()],
        "Beneficiary": beneficiary,
        "ConsumptionConfiguration": consumption if consumption is not None else provisional(),
        "ClientToken": client_token or token(),
    }
    if tags is not None:
        req["Tags"] = tags
    if metadata is not None:
        req["LicenseMetadata"] = metadata
    return req


NO_END = _NO


def borrowable(*, allow_early_check_in: bool = True, ttl_minutes: int = 60,
               provisional_ttl: Optional[int] = None) -> dict:
    """A ConsumptionConfiguration with a BorrowConfiguration (and optionally a
    ProvisionalConfiguration too, so that plain checkouts work as well)."""
    c: dict = {"RenewType": "None",
               "BorrowConfiguration": {"AllowEarlyCheckIn": allow_early_check_in,
                                       "MaxTimeToLiveInMinutes": ttl_minutes}}
    if provisional_ttl is not None:
        c["ProvisionalConfiguration"] = {"MaxTimeToLiveInMinutes": provisional_ttl}
    return c


def create_license(client, **kw) -> tuple[str, dict]:
    req = license_request(**kw)
    resp = client.create_license(**req)
    return resp["LicenseArn"], req


def version_request(arn: str, base: dict, *, status: str = "AVAILABLE", source_version: Optional[str] = None,
                    reset_usage: Optional[bool] = None, client_token: Optional[str] = None, **changes) -> dict:
    req = {
        "LicenseArn": arn,
        "LicenseName": base["LicenseName"],
        "ProductName": base["ProductName"],
        "Issuer": base["Issuer"],
        "HomeRegion": base["HomeRegion"],
        "Validity": base["Validity"],
        "Entitlements": base["Entitlements"],
        "ConsumptionConfiguration": base["ConsumptionConfiguration"],
        "Status": status,
        "ClientToken": client_token or token(),
    }
    if "LicenseMetadata" in base:
        req["LicenseMetadata"] = base["LicenseMetadata"]
    req.update(changes)
    if source_version is not None:
        req["SourceVersion"] = source_version
    if reset_usage is not None:
        req["ResetUsage"] = reset_usage
    return req


def checkout(client, sku: str, fp: str, *, value: Optional[int] = 1, name: str = "Seats", unit: str = "Count",
             checkout_type: str = "PROVISIONAL", entitlements: Optional[list] = None, **kw) -> dict:
    if entitlements is None:
        e = {"Name": name, "Unit": unit}
        if value is not None:
            e["Value"] = str(value)
        entitlements = [e]
    kw.setdefault("ClientToken", token())
    return client.checkout_license(ProductSKU=sku, CheckoutType=checkout_type, KeyFingerprint=fp,
                                   Entitlements=entitlements, **kw)


def borrow(client, arn: str, *, value: Optional[int] = 1, name: str = "Seats", unit: str = "Count",
           entitlements: Optional[list] = None, method: str = "JWT_PS384", **kw) -> dict:
    if entitlements is None:
        e = {"Name": name, "Unit": unit}
        if value is not None:
            e["Value"] = str(value)
        entitlements = [e]
    kw.setdefault("ClientToken", token())
    return client.checkout_borrow_license(LicenseArn=arn, Entitlements=entitlements,
                                          DigitalSignatureMethod=method, **kw)


# ---- grants


def principal(who) -> str:
    """An Account, or an account ID, as the principal a grant names."""
    acct = who.account_id if isinstance(who, Account) else who
    return f"arn:aws:iam::{acct}:root"


def create_grant(client, license_arn: str, grantee, ops: Iterable[str], *, name: Optional[str] = None,
                 **kw) -> dict:
    kw.setdefault("ClientToken", token())
    kw.setdefault("HomeRegion", REGION)
    return client.create_grant(GrantName=name or f"grant-{uuid.uuid4().hex[:8]}", LicenseArn=license_arn,
                               Principals=[principal(grantee)], AllowedOperations=list(ops), **kw)


def set_grant_status(client, grant_arn: str, status: str, **kw) -> dict:
    """CreateGrantVersion with a new Status (the grantee's activate/deactivate)."""
    kw.setdefault("ClientToken", token())
    return client.create_grant_version(GrantArn=grant_arn, Status=status, **kw)


def accept_and_activate(client, grant_arn: str) -> dict:
    accepted = client.accept_grant(GrantArn=grant_arn)
    assert accepted["Status"] == "DISABLED", accepted
    return set_grant_status(client, grant_arn, "ACTIVE", SourceVersion=accepted["Version"])


def active_grant(grantor_client, grantee_client, license_arn: str, grantee, ops: Iterable[str], **kw) -> str:
    """A grant created by the grantor, accepted and activated by the grantee: its ARN."""
    arn = create_grant(grantor_client, license_arn, grantee, ops, **kw)["GrantArn"]
    out = accept_and_activate(grantee_client, arn)
    assert out["Status"] == "ACTIVE", out
    return arn


def get_grant(client, grant_arn: str, version: Optional[str] = None) -> dict:
    kw = {"Version": version} if version is not None else {}
    return client.get_grant(GrantArn=grant_arn, **kw)["Grant"]


def received(client, license_arn: str) -> Optional[dict]:
    """The caller's ListReceivedLicenses entry for one license, or None."""
    got = client.list_received_licenses(LicenseArns=[license_arn])["Licenses"]
    assert len(got) <= 1, got
    return got[0] if got else None


def usage(client, arn: str) -> dict:
    """{entitlement name: EntitlementUsage}"""
    resp = client.get_license_usage(LicenseArn=arn)
    return {u["Name"]: u for u in resp["LicenseUsage"]["EntitlementUsages"]}


def consumed(client, arn: str, name: str = "Seats") -> str:
    u = usage(client, arn)
    assert name in u, f"no usage entry for {name}: {u}"
    return u[name]["ConsumedValue"]


def strip_meta(resp: dict) -> dict:
    return {k: v for k, v in resp.items() if k != "ResponseMetadata"}


def expect_error(code: str, fn: Callable, **kwargs) -> dict:
    """Calls a boto3 operation that must fail with `code`; returns the error response."""
    op = getattr(fn, "__name__", "call")
    try:
        resp = fn(**kwargs)
    except ClientError as e:
        err = e.response.get("Error", {})
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        assert err.get("Code") == code, (
            f"{op}: expected {code}, got {err.get('Code')} (HTTP {status}): {err.get('Message')}")
        want_status = 500 if code == "ServerInternalException" else 400
        assert status == want_status, f"{op}: {code} came with HTTP {status}, expected {want_status}"
        return e.response
    pytest.fail(f"{op}: expected {code}, but the call succeeded: {strip_meta(resp)}")


def expect_validation(fn: Callable, field: str, code: str = "ValidationException", **kwargs) -> dict:
    """A refused input whose message names `field`. ListLicenseVersions lists no
    ValidationException in the model: it answers InvalidParameterValueException."""
    resp = expect_error(code, fn, **kwargs)
    msg = resp["Error"].get("Message", "")
    assert field in msg, f"{code} message does not name {field!r}: {msg!r}"
    return resp


def list_all(fn: Callable, key: str, *, page_size: Optional[int] = None, max_pages: int = 50, **kwargs) -> list:
    items: list = []
    next_token = None
    for _ in range(max_pages):
        kw = dict(kwargs)
        if page_size:
            kw["MaxResults"] = page_size
        if next_token:
            kw["NextToken"] = next_token
        resp = fn(**kw)
        items.extend(resp.get(key, []))
        next_token = resp.get("NextToken")
        if not next_token:
            return items
    pytest.fail(f"more than {max_pages} pages")


# --------------------------------------------------------------------------
# hand-signed HTTP


def signed_post(url: str, target: str, body: bytes, *, access_key_id: str, secret: str,
                when: Optional[dt.datetime] = None, region: str = REGION, service: str = SERVICE,
                extra_headers: Optional[dict] = None, send_body: Optional[bytes] = None,
                mutate: Optional[Callable[[dict], None]] = None) -> requests.Response:
    """POST / signed with botocore's SigV4Auth, optionally as if signed at `when`,
    optionally sending `send_body` instead of the body that was signed."""
    headers = {"Content-Type": JSON_CT}
    if target is not None:
        headers["X-Amz-Target"] = target
    if extra_headers:
        headers.update(extra_headers)
    req = AWSRequest(method="POST", url=url + "/", data=body, headers=headers)
    signer = SigV4Auth(Credentials(access_key_id, secret), service, region)
    if when is None:
        signer.add_auth(req)
    else:
        naive = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
        with mock.patch.object(botocore.auth, "get_current_datetime", lambda *a, **k: naive):
            signer.add_auth(req)
    sent = {k: v for k, v in req.headers.items()}
    if mutate:
        mutate(sent)
    return requests.post(url + "/", data=body if send_body is None else send_body, headers=sent, timeout=15)


def unsigned_post(url: str, target: str, body: bytes, headers: Optional[dict] = None) -> requests.Response:
    h = {"Content-Type": JSON_CT, "X-Amz-Target": target}
    if headers:
        h.update(headers)
    return requests.post(url + "/", data=body, headers=h, timeout=15)


def error_type(resp: requests.Response) -> str:
    """The error code the way botocore reads it from an awsJson1_1 body."""
    body = resp.json()
    raw = body.get("__type", "")
    return raw.split("#")[-1].split(":")[0]


def assert_wire_error(resp: requests.Response, code: str) -> dict:
    want_status = 500 if code == "ServerInternalException" else 400
    try:
        body = resp.json()
    except ValueError:
        pytest.fail(f"expected a JSON {code} body, got HTTP {resp.status_code}: {resp.text[:300]!r}")
    assert isinstance(body, dict) and "__type" in body, f"error body has no __type: {body}"
    got = error_type(resp)
    assert got == code, f"expected {code}, got {got} (HTTP {resp.status_code}): {body}"
    assert resp.status_code == want_status, f"{code} came with HTTP {resp.status_code}"
    assert isinstance(body.get("Message"), str), f"error body has no Message: {body}"
    return body


def bearer_post(url: str, operation: str, body: dict, access_token: str) -> requests.Response:
    """An awsJson1_1 request authenticated by `Authorization: Bearer <access token>`."""
    headers = {"Content-Type": JSON_CT, "X-Amz-Target": TARGET_PREFIX + operation,
               "Authorization": f"Bearer {access_token}"}
    return requests.post(url + "/", data=json.dumps(body).encode(), headers=headers, timeout=15)


def bearer_ok(resp: requests.Response) -> dict:
    assert resp.status_code == 200, f"HTTP {resp.status_code}: {resp.text[:300]}"
    return resp.json()


def get_jwks(server: "TesseraServer") -> dict:
    r = requests.get(server.url + "/.well-known/jwks.json", timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def ids(items: Iterable[dict], key: str = "LicenseArn") -> list:
    return [i[key] for i in items]


# --------------------------------------------------------------------------
# the AWS CLI v1, with profiles written by `tessera account create --aws-profile`


def _shim(bin_dir: Path, name: str, body: str) -> None:
    p = bin_dir / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


class Cli:
    """Runs `aws` (the AWS CLI v1 of this interpreter's environment) with private
    AWS config and credentials files, so that the profiles written by `tessera
    account create --aws-profile` are the only ones it sees."""

    def __init__(self, server: "TesseraServer", tmp: Path):
        self.server = server
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        py = sys.executable
        # uuidgen is not on every machine; the seed script calls it.
        _shim(bin_dir, "aws", f'exec "{py}" -m awscli "$@"')
        _shim(bin_dir, "uuidgen", f'exec "{py}" -c "import uuid; print(uuid.uuid4())"')
        self.config = tmp / "aws-config"
        self.credentials = tmp / "aws-credentials"
        self.env = clean_env({
            "AWS_CONFIG_FILE": str(self.config),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.credentials),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "TZ": "UTC",
            "PYTHONWARNINGS": "ignore",
        })

    def account(self, name: str, profile: Optional[str] = None) -> Account:
        """A new account whose AWS CLI profile (named `profile`, default `name`) points at the server."""
        return self.server.create_account(name, aws_profile=profile or name, env=self.env)

    def run(self, args: list, *, profile: str, extra_env: Optional[dict] = None) -> subprocess.CompletedProcess:
        env = dict(self.env, AWS_PROFILE=profile, **(extra_env or {}))
        return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120,
                              stdin=subprocess.DEVNULL)

    def aws(self, *args: str, profile: str) -> dict:
        cp = self.run(["aws", "--profile", profile, "--output", "json", *args], profile=profile)
        assert cp.returncode == 0, f"aws {' '.join(args)} exited {cp.returncode}\n{cp.stderr}"
        return json.loads(cp.stdout) if cp.stdout.strip() else {}

    def aws_fails(self, *args: str, profile: str) -> subprocess.CompletedProcess:
        cp = self.run(["aws", "--profile", profile, "--output", "json", *args], profile=profile)
        assert cp.returncode != 0, f"aws {' '.join(args)} should have failed:\n{cp.stdout}"
        return cp

    def script(self, path: Path, *, profile: str, **env) -> dict:
        """Runs a shell script under `profile`; its stdout is JSON."""
        cp = self.run(["bash", str(path)], profile=profile, extra_env=env)
        assert cp.returncode == 0, f"{path.name} exited {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}"
        return json.loads(cp.stdout)
