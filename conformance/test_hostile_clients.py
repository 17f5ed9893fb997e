"""Clients that connect and stall (half a request head, headers and part of a
body, or nothing at all) cannot keep the server to themselves, cannot keep it
from shutting down, and every refusal before an operation runs still answers
in the AWS error shape with a request ID."""

from __future__ import annotations

import json
import resource
import signal
import socket
import sqlite3
import subprocess
import threading
import time

import boto3
import pytest
import requests
from botocore.config import Config

from harness import (JSON_CT, TARGET_PREFIX, World, checkout, consumed, counted, new_sku, on_postgres, signed_post,
                     token)


def _connect(server, timeout: float = 15.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    s.settimeout(timeout)
    return s


def _closed_within(s: socket.socket, seconds: float) -> tuple[float, bytes]:
    """Waits for the server to close `s` (or answer and close); returns how long it took and what came."""
    start = time.monotonic()
    got = b""
    s.settimeout(seconds)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except (socket.timeout, TimeoutError):
        pytest.fail(f"the server kept a stalled connection open for more than {seconds}s (got {got[:200]!r})")
    except ConnectionResetError:
        pass
    return time.monotonic() - start, got


def _stalled(server, kind: str) -> socket.socket:
    s = _connect(server)
    if kind == "half-head":
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: AWSLicen")
    elif kind == "half-body":
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: " + JSON_CT.encode()
                  + b"\r\nX-Amz-Target: AWSLicenseManager.ListLicenses\r\nContent-Length: 100\r\n\r\n{\"Ma")
    return s


def test_stalled_connections_are_closed_by_their_timeouts(make_server):
    server = make_server(extra_args=["--header-read-timeout", "1", "--body-read-timeout", "1",
                                     "--idle-timeout", "3"])
    opened = time.monotonic()
    silent, half_head, half_body = (_stalled(server, k) for k in ("silent", "half-head", "half-body"))
    took, got = _closed_within(half_head, 10)
    assert got == b"" and took < 2.5, (took, got)
    took, got = _closed_within(half_body, 10)
    assert got == b"" and took < 2.5, (took, got)
    _, got = _closed_within(silent, 10)
    lived = time.monotonic() - opened
    assert got == b"" and 2.5 <= lived < 6, (lived, got)
    # A keep-alive connection that goes quiet after an answer is closed after the idle timeout too.
    s = _connect(server)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    took, got = _closed_within(s, 10)
    assert got.startswith(b"HTTP/1.1 200") and 2 <= took < 6, (took, got[:100])


def test_a_connection_goes_idle_after_a_slow_answer_and_is_closed(make_server):
    """An answer that takes longer than the header timeout does not stop the
    idle timeout from closing the connection once it goes quiet."""
    server = make_server(extra_args=["--header-read-timeout", "1", "--idle-timeout", "2"])
    w = World(server, tag="slow")
    sku = new_sku("slow")
    w.create_license(sku=sku)
    body = json.dumps({"ProductSKU": sku, "CheckoutType": "PROVISIONAL", "KeyFingerprint": w.fingerprint(),
                       "Entitlements": [{"Name": "Seats", "Value": "1", "Unit": "Count"}],
                       "ClientToken": token()}).encode()
    holder = _hold_the_write_lock(server, 2.5)
    # One keep-alive connection: the slow checkout, then silence.
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    req = AWSRequest(method="POST", url=server.url + "/", data=body,
                     headers={"Content-Type": JSON_CT, "X-Amz-Target": TARGET_PREFIX + "CheckoutLicense"})
    SigV4Auth(Credentials(w.customer.access_key_id, w.customer.secret_access_key), "license-manager",
              "us-east-1").add_auth(req)
    head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
    s = _connect(server)
    s.sendall(f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body)
    start = time.monotonic()
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(65536)
    answered = time.monotonic() - start
    holder.join(30)
    assert got.startswith(b"HTTP/1.1 200"), got[:300]
    assert answered > 1.5, f"the answer took {answered:.1f}s; the lock was to hold it longer than the header timeout"
    took, _ = _closed_within(s, 15)
    assert took < 6, f"the idle connection stayed open {took:.1f}s after its answer"


def test_a_body_that_trickles_in_is_cut_off_at_the_body_timeout(make_server):
    server = make_server(extra_args=["--body-read-timeout", "2", "--idle-timeout", "30"])
    s = _connect(server)
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: " + JSON_CT.encode()
              + b"\r\nX-Amz-Target: AWSLicenseManager.ListLicenses\r\nContent-Length: 1000\r\n\r\n{")
    start = time.monotonic()
    closed = False
    try:
        while time.monotonic() - start < 15:
            s.sendall(b" ")
            time.sleep(0.3)
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    took = time.monotonic() - start
    assert closed, "a trickling body kept its connection past the body timeout"
    assert took < 8, took


def test_a_thousand_stalled_sockets_do_not_starve_other_clients(make_server):
    """1,100 stalled sockets against a server allowed 1,024 descriptors (so
    at most 896 connections): the other clients are still answered, at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2500:
        pytest.skip(f"this test needs 2,500 descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2500), hard))
    server = make_server(nofile=1024)
    w = World(server, tag="hostile")
    sku = new_sku("hostile")
    arn, _ = w.create_license(sku=sku, entitlements=[counted("Seats", 100)])
    kinds = ["silent", "half-head", "half-body"]
    socks = []
    try:
        for i in range(1100):
            try:
                socks.append(_stalled(server, kinds[i % 3]))
            except OSError:
                # Refused or reset: the server closed it to make room, as it should.
                pass
        assert server.running()
        # Fresh clients, each on a new connection that must find a place; no retries,
        # and a hang fails the read within 5 s.
        cfg = Config(region_name="us-east-1", retries={"total_max_attempts": 1}, connect_timeout=5,
                     read_timeout=5, max_pool_connections=1)
        session = boto3.session.Session()
        for _ in range(10):
            client = session.client("license-manager", endpoint_url=server.url, config=cfg,
                                    aws_access_key_id=w.customer.access_key_id,
                                    aws_secret_access_key=w.customer.secret_access_key)
            out = checkout(client, sku, w.fingerprint())
            client.check_in_license(LicenseConsumptionToken=out["LicenseConsumptionToken"])
            client.close()
        assert consumed(w.v, arn) == "0"
        r = requests.get(server.url + "/healthz", timeout=5)
        assert r.status_code == 200
    finally:
        for s in socks:
            s.close()


def _hold_the_write_lock(server, seconds: float) -> threading.Thread:
    """Holds the database's write lock (SQLite) or the counters' table lock
    (PostgreSQL) for `seconds`, from a connection of the test's own."""
    ready = threading.Event()

    def sqlite_lock():
        db = sqlite3.connect(str(server.data_dir / "tessera.db"), timeout=30, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        ready.set()
        time.sleep(seconds)
        db.execute("COMMIT")
        db.close()

    def pg_lock():
        sql = (f"BEGIN; LOCK TABLE entitlement_usage IN EXCLUSIVE MODE; SELECT pg_sleep({seconds}); COMMIT;")
        p = subprocess.Popen(["psql", "-X", "-q", "-d", server.database_url, "-c", sql],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        time.sleep(0.5)
        ready.set()
        p.wait(timeout=seconds + 30)

    t = threading.Thread(target=pg_lock if on_postgres() else sqlite_lock, daemon=True)
    t.start()
    assert ready.wait(10)
    return t


def test_sigterm_answers_what_is_in_flight_and_exits_despite_stalled_clients(make_server):
    server = make_server(extra_args=["--drain-timeout", "8"])
    w = World(server, tag="drain")
    sku = new_sku("drain")
    arn, _ = w.create_license(sku=sku, entitlements=[counted("Seats", 10)])
    fp = w.fingerprint()
    stalled = [_stalled(server, k) for k in ("silent", "half-head", "half-body")]
    holder = _hold_the_write_lock(server, 2.0)
    answer: dict = {}

    def in_flight():
        body = json.dumps({"ProductSKU": sku, "CheckoutType": "PROVISIONAL", "KeyFingerprint": fp,
                           "Entitlements": [{"Name": "Seats", "Value": "1", "Unit": "Count"}],
                           "ClientToken": token()}).encode()
        r = signed_post(server.url, TARGET_PREFIX + "CheckoutLicense", body,
                        access_key_id=w.customer.access_key_id, secret=w.customer.secret_access_key)
        answer["status"], answer["body"] = r.status_code, r.json()

    t = threading.Thread(target=in_flight)
    t.start()
    time.sleep(0.5)
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert server.running(), "the server exited with a request in flight"
    # No new connections once it is draining.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
        raise OSError("connected")
    t.join(30)
    holder.join(30)
    assert answer.get("status") == 200, answer
    code = server.proc.wait(timeout=20)
    took = time.monotonic() - start
    assert code == 0, server.log_tail()
    assert took < 8 + 5, f"exit took {took:.1f}s with a drain deadline of 8s"
    for s in stalled:
        s.close()
    server.start()
    w.refresh_clients()
    assert consumed(w.v, arn) == "1", "the answered checkout was not durable"
    assert "stopped" in server.log_path.read_text()


def test_sigterm_exits_by_the_drain_deadline_when_a_request_never_ends(make_server):
    server = make_server(extra_args=["--drain-timeout", "1", "--body-read-timeout", "60", "--idle-timeout", "60"])
    stalled = [_stalled(server, "half-body") for _ in range(3)]
    # Let the server read their heads: requests in flight, not idle connections.
    time.sleep(0.5)
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(timeout=20)
    assert code == 0, server.log_tail()
    assert time.monotonic() - start < 6
    assert "drain deadline passed" in server.log_path.read_text()
    for s in stalled:
        s.close()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_answer_in_the_aws_shape(server, method):
    r = requests.request(method, server.url + "/", headers={"X-Amz-Target": TARGET_PREFIX + "ListLicenses"},
                         timeout=10)
    assert r.status_code == 405
    assert r.headers.get("x-amzn-RequestId")
    assert r.json()["__type"] == "UnknownOperationException" and r.json()["Message"]


def test_oversized_heads_answer_in_the_aws_shape(server):
    base = {"Content-Type": JSON_CT, "X-Amz-Target": TARGET_PREFIX + "ListLicenses"}
    for headers in ({**base, "X-Big": "a" * 20000}, {**base, **{f"X-H{i}": "v" * 300 for i in range(90)}},
                    {**base, "X-Big": "a" * 60000}):
        r = requests.post(server.url + "/", data=b"{}", headers=headers, timeout=10)
        assert r.status_code == 431, r.status_code
        assert r.headers.get("x-amzn-RequestId")
        body = r.json()
        assert body["__type"] == "ValidationException" and "header" in body["Message"], body
    # Past 100 lines the HTTP layer refuses the head before any handler.
    r = requests.post(server.url + "/", data=b"{}", headers={**base, **{f"X-H{i}": "v" for i in range(150)}},
                      timeout=10)
    assert r.status_code == 431


def test_unknown_paths_answer_in_the_aws_shape(server):
    r = requests.post(server.url + "/nothing", data=b"{}", timeout=10)
    assert r.status_code == 404
    assert r.headers.get("x-amzn-RequestId")
    assert r.json()["__type"] == "UnknownOperationException"


def test_the_agent_closes_stalled_clients_and_shuts_down_despite_them(make_server, tmp_path):
    from test_byoc_journey import Agent

    server = make_server()
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    agent = Agent(tmp_path, "env-hostile", bucket, server).start(
        "--header-read-timeout", "1", "--idle-timeout", "2", "--drain-timeout", "2")
    try:
        half_head = socket.create_connection(("127.0.0.1", agent.port), timeout=15)
        half_head.sendall(b"POST /v1/instances HTTP/1.1\r\nHost: x\r\nContent-Ty")
        took, got = _closed_within(half_head, 10)
        assert got == b"" and took < 2.5, (took, got)
        stalled = []
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", agent.port), timeout=15)
            s.sendall(b"POST /v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"inst")
            stalled.append(s)
        # Other clients are still answered meanwhile.
        assert agent.settings()["environmentId"] == "env-hostile"
        start = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.proc.wait(timeout=20) == 0, agent.log.read_text()[-2000:]
        assert time.monotonic() - start < 8
        for s in stalled:
            s.close()
    finally:
        agent.kill9()
