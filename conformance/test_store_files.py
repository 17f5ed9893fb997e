"""The embedded database is Tessera's own, whole and undamaged, or the server
does not start: an empty file, another program's SQLite file and a damaged
one are refused with what was found and what to do; a database is created
only where there is none, and marked as Tessera's. One server per SQLite file
unless every server sharing it says so."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import time

import pytest
import requests
from botocore.exceptions import ClientError

from harness import World, clean_env, free_port, on_postgres, tessera_bin

pytestmark = pytest.mark.skipif(on_postgres(), reason="the embedded SQLite file only")

APPLICATION_ID = 0x54535241


def run_serve(data_dir, *extra: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """`tessera serve` that is expected to refuse to start."""
    args = [str(tessera_bin()), "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{free_port()}", *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=clean_env(),
                          stdin=subprocess.DEVNULL)


def test_an_empty_file_is_refused_and_left_as_it_is(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "tessera.db").write_bytes(b"")
    cp = run_serve(data)
    assert cp.returncode != 0
    assert "empty file" in cp.stderr and str(data / "tessera.db") in cp.stderr, cp.stderr
    assert "remove the file" in cp.stderr and "backup" in cp.stderr, cp.stderr
    assert (data / "tessera.db").stat().st_size == 0


def test_another_program_s_database_is_refused_and_not_written(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    db = sqlite3.connect(data / "tessera.db")
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    db.execute("INSERT INTO notes (body) VALUES ('keep me')")
    db.commit()
    db.close()
    before = (data / "tessera.db").read_bytes()
    cp = run_serve(data)
    assert cp.returncode != 0
    assert "another program's SQLite database" in cp.stderr and "notes" in cp.stderr, cp.stderr
    assert (data / "tessera.db").read_bytes() == before
    db = sqlite3.connect(data / "tessera.db")
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert tables == ["notes"], tables


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "tessera.db").write_bytes(b"these are not the pages you are looking for\n" * 200)
    cp = run_serve(data)
    assert cp.returncode != 0 and "cannot be read as an SQLite database" in cp.stderr, cp.stderr


def test_a_new_database_is_marked_and_an_unmarked_tessera_database_is_adopted(make_server):
    server = make_server()
    World(server, tag="mark")
    server.stop()
    db = server.data_dir / "tessera.db"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    # A database made before databases were marked.
    conn.execute("PRAGMA application_id = 0")
    conn.commit()
    conn.close()
    server.start()
    assert len(server.cli("account", "list", "--data-dir", str(server.data_dir), "--output", "json").stdout) > 2
    server.stop()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_a_leftover_half_made_database_does_not_stop_a_new_one(make_server):
    server = make_server(start=False)
    server.data_dir.mkdir(parents=True)
    leftover = server.data_dir / "tessera.db.new.4242.17"
    leftover.write_bytes(b"half of a database from a start that was killed")
    two_hours_ago = time.time() - 7200
    os.utime(leftover, (two_hours_ago, two_hours_ago))
    server.start()
    World(server, tag="fresh")
    assert not leftover.exists()


def test_servers_starting_at_once_on_no_database_make_one_and_share_it(tmp_path):
    """Two starts that both find no file: one database is made, and both use it
    (a link never replaces a file, where a rename would)."""
    data = tmp_path / "data"
    procs = []
    ports = [free_port(), free_port()]
    try:
        for port in ports:
            procs.append(subprocess.Popen(
                [str(tessera_bin()), "serve", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}",
                 "--shared-sqlite"], env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
        for port in ports:
            for _ in range(200):
                try:
                    if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.05)
        made = subprocess.run([str(tessera_bin()), "account", "create", "--name", "both", "--data-dir", str(data),
                               "--output", "json"], capture_output=True, text=True, env=clean_env(), check=True)
        key = json.loads(made.stdout)
        import boto3
        for port in ports:
            lm = boto3.client("license-manager", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
            assert lm.list_licenses()["Licenses"] == []
        assert [p.name for p in data.iterdir() if p.name.startswith("tessera.db.new")] == []
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=20)


def _damage(db, tables=("licenses", "license_versions"), seed: int = 7) -> None:
    """Overwrites the root pages of `tables` with random bytes, as a bad disk
    or a stray write would; the schema and the rest stay readable."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    roots = [conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (t,)).fetchone()[0] for t in tables]
    conn.close()
    rnd = random.Random(seed)
    with open(db, "r+b") as f:
        for root in roots:
            f.seek((root - 1) * page_size)
            f.write(bytes(rnd.getrandbits(8) for _ in range(page_size)))
        f.flush()
        os.fsync(f.fileno())


def test_a_damaged_database_is_refused_and_damage_found_later_fails_readiness(make_server):
    server = make_server()
    w = World(server, tag="damage")
    for _ in range(20):
        w.create_license()
    server.stop()
    db = server.data_dir / "tessera.db"
    _damage(db)
    cp = run_serve(server.data_dir)
    assert cp.returncode != 0
    assert "is damaged" in cp.stderr and "restore" in cp.stderr and str(db) in cp.stderr, cp.stderr
    # A database too large to check at every start can skip the check; the damage still shows.
    server.extra_args = ["--skip-integrity-check"]
    server.start()
    assert requests.get(server.url + "/readyz", timeout=10).status_code == 200
    with pytest.raises(ClientError) as e:
        server.client(w.vendor).list_licenses()
    assert e.value.response["Error"]["Code"] == "ServerInternalException"
    assert "malformed" not in e.value.response["Error"]["Message"], "the cause is for the log, not the client"
    r = requests.get(server.url + "/readyz", timeout=10)
    assert r.status_code == 503, r.text
    assert any("damaged" in reason for reason in r.json()["reasons"]), r.json()
    log = server.log_path.read_text()
    assert "the database file is damaged" in log and str(db) in log and "restore" in log
    # A failing disk does not flood the log: fifty failing requests, each with
    # its access line, but the identical cause logged once (the rest counted).
    before = server.log_path.read_text().count("request failed")
    ids = []
    for _ in range(50):
        with pytest.raises(ClientError) as e:
            server.client(w.vendor).list_licenses()
        ids.append(e.value.response["ResponseMetadata"]["RequestId"])
    log = server.log_path.read_text()
    assert log.count("request failed") - before <= 1, "a repeated store error was logged for every request"
    assert all(1 <= log.count(i) <= 2 for i in ids), "every request has its access line (and at most its cause)"
    metrics = requests.get(server.url + "/metrics", timeout=10).text
    assert "tessera_log_errors_suppressed_total" in metrics


def test_a_second_server_on_the_same_file_is_refused_naming_the_first(make_server):
    server = make_server()
    cp = run_serve(server.data_dir)
    assert cp.returncode != 0
    assert f"process {server.proc.pid}" in cp.stderr and "--shared-sqlite" in cp.stderr, cp.stderr
    # Sharing must be everyone's choice: a sharing server is refused too while one holds it alone.
    cp = run_serve(server.data_dir, "--shared-sqlite")
    assert cp.returncode != 0 and "--shared-sqlite" in cp.stderr, cp.stderr
    # The CLI works beside the server as before.
    server.cli("account", "list", "--data-dir", str(server.data_dir))


def test_servers_that_all_say_so_share_one_file(make_server):
    a = make_server(extra_args=["--shared-sqlite"])
    b = make_server(start=False, extra_args=["--shared-sqlite"])
    b.data_dir = a.data_dir
    b.start()
    w = World(a, tag="shared")
    arn, _ = w.create_license()
    got = b.client(w.vendor).get_license(LicenseArn=arn)["License"]
    assert got["LicenseArn"] == arn
    cp = run_serve(a.data_dir)
    assert cp.returncode != 0 and "--shared-sqlite" in cp.stderr, cp.stderr
    b.stop()
    a.stop()
