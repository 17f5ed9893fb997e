"""Backups: `tessera backup` while checkouts are written, `tessera restore`
into a new data directory, and the PostgreSQL equivalent with pg_dump and
pg_restore; the agent's data directory copied to a new machine."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import pytest
import requests
from botocore.exceptions import ClientError

from harness import (TesseraServer, World, checkout, clean_env, counted, create_database, new_sku,
                     on_postgres, postgres_admin_url, usage)
from test_byoc_journey import Agent


@pytest.mark.skipif(on_postgres(), reason="the embedded database's backup; PostgreSQL's is tested below")
def test_backup_during_checkout_load_restores_every_acknowledged_checkout(tmp_path):
    server = TesseraServer(tmp_path / "data", tmp_path / "server.log").start()
    try:
        w = World(server, tag="backup")
        sku = new_sku("backup")
        arn, _ = w.create_license(sku=sku, entitlements=[counted(max_count=1_000_000)])
        acknowledged: list[tuple[float, str]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def load() -> None:
            c = server.client(w.customer)
            while not stop.is_set():
                out = checkout(c, sku, w.fingerprint())
                with lock:
                    acknowledged.append((time.monotonic(), out["LicenseConsumptionToken"]))

        workers = [threading.Thread(target=load) for _ in range(4)]
        for t in workers:
            t.start()
        time.sleep(1.5)
        began = time.monotonic()
        copy = tmp_path / "tessera-backup.db"
        made = server.cli("backup", "--to", str(copy), "--data-dir", str(server.data_dir), "-o", "json")
        time.sleep(0.5)
        stop.set()
        for t in workers:
            t.join()
        summary = json.loads(made.stdout)
        assert summary["Bytes"] == copy.stat().st_size > 0
        before = [tok for at, tok in acknowledged if at < began]
        assert len(before) >= 20, "the load did not run before the backup"
        # The live server kept serving through the backup.
        assert any(at > began for at, _ in acknowledged)
    finally:
        server.stop()

    # A server holding the directory refuses the restore.
    target = tmp_path / "restored"
    holder = TesseraServer(target, tmp_path / "holder.log").start()
    try:
        refused = holder.cli("restore", "--from", str(copy), "--data-dir", str(target), check=False)
        assert refused.returncode != 0 and "stop it" in refused.stderr
    finally:
        holder.stop()
    shutil.rmtree(target)

    restored = server.cli("restore", "--from", str(copy), "--data-dir", str(target), "-o", "json")
    assert json.loads(restored.stdout)["LiveConsumptions"] == summary["LiveConsumptions"]
    again = TesseraServer(target, tmp_path / "restored.log").start()
    try:
        w.server = again
        c = again.client(w.customer)
        v = again.client(w.vendor)
        consumed = int(usage(v, arn)["Seats"]["ConsumedValue"])
        # Counters equal the live consumptions the copy holds.
        assert consumed == summary["LiveConsumptions"] >= len(before)
        # Every checkout acknowledged before the backup began is there.
        for tok in before:
            c.check_in_license(LicenseConsumptionToken=tok)
        assert int(usage(v, arn)["Seats"]["ConsumedValue"]) == consumed - len(before)
        # And the restored server takes new checkouts.
        checkout(c, sku, w.fingerprint())
    finally:
        again.stop()


@pytest.mark.skipif(on_postgres(), reason="about the embedded database's files")
def test_restore_refuses_what_is_not_a_tessera_backup(tmp_path):
    server = TesseraServer(tmp_path / "data", tmp_path / "server.log")
    other = tmp_path / "other.db"
    subprocess.run(["python3", "-c", f"import sqlite3; c=sqlite3.connect('{other}'); c.execute('create table t(x)'); c.commit()"],
                   check=True)
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    for bad, says in ((other, "not a Tessera database"), (text, "not an SQLite database"),
                      (tmp_path / "missing.db", "cannot read")):
        cp = server.cli("restore", "--from", str(bad), "--data-dir", str(tmp_path / "target"), check=False)
        assert cp.returncode != 0 and says in cp.stderr, cp.stderr
    assert not (tmp_path / "target" / "tessera.db").exists()
    # A backup never overwrites a file.
    TesseraServer(tmp_path / "data", tmp_path / "server.log").start().stop()
    cp = server.cli("backup", "--to", str(text), "--data-dir", str(tmp_path / "data"), check=False)
    assert cp.returncode != 0 and "already exists" in cp.stderr
    assert text.read_text() == "not a database\n"


@pytest.mark.skipif(on_postgres(), reason="about the embedded database's files")
def test_restore_replace_keeps_the_database_it_replaces_and_a_newer_schema_is_refused(tmp_path):
    import sqlite3
    server = TesseraServer(tmp_path / "data", tmp_path / "server.log").start()
    try:
        w = World(server, tag="replace")
        arn, _ = w.create_license(sku=new_sku("replace"), entitlements=[counted()])
        copy = tmp_path / "copy.db"
        server.cli("backup", "--to", str(copy), "--data-dir", str(server.data_dir))
        w.create_license(sku=new_sku("replace-later"), entitlements=[counted()])
    finally:
        server.stop()
    data = server.data_dir
    cp = server.cli("restore", "--from", str(copy), "--data-dir", str(data), check=False)
    assert cp.returncode != 0 and "--replace" in cp.stderr
    server.cli("restore", "--from", str(copy), "--data-dir", str(data), "--replace")
    kept = [p for p in data.iterdir() if p.name.startswith("tessera.db.before-restore-") and "-" not in p.name[-4:]]
    assert len(kept) == 1, list(data.iterdir())
    with sqlite3.connect(kept[0]) as c:
        assert c.execute("SELECT count(*) FROM licenses").fetchone()[0] == 2
    again = TesseraServer(data, tmp_path / "again.log").start()
    try:
        arns = [l["LicenseArn"] for l in again.client(w.vendor).list_licenses()["Licenses"]]
        assert arns == [arn], "the restored database is the backup's, not the one it replaced"
    finally:
        again.stop()
    # A backup written by a newer Tessera (a migration this build does not know) is refused.
    newer = tmp_path / "newer.db"
    shutil.copy(copy, newer)
    with sqlite3.connect(newer) as c:
        c.execute("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) "
                  "VALUES (9999, 'from the future', 1, x'00', 0)")
    cp = server.cli("restore", "--from", str(newer), "--data-dir", str(tmp_path / "fresh"), check=False)
    assert cp.returncode != 0 and "newer Tessera" in cp.stderr, cp.stderr


@pytest.mark.skipif(not on_postgres(), reason="PostgreSQL's own tools; runs in the PostgreSQL pass")
def test_postgres_backup_with_pg_dump_and_pg_restore(tmp_path):
    if not shutil.which("pg_dump") or not shutil.which("pg_restore"):
        pytest.skip("pg_dump and pg_restore are not installed")
    url = create_database()
    server = TesseraServer(tmp_path / "data", tmp_path / "server.log", database_url=url).start()
    try:
        w = World(server, tag="pgdump")
        sku = new_sku("pgdump")
        arn, _ = w.create_license(sku=sku, entitlements=[counted(max_count=10)])
        tok = checkout(w.c, sku, w.fingerprint())["LicenseConsumptionToken"]
        dump = tmp_path / "tessera.dump"
        subprocess.run(["pg_dump", "--format=custom", "--no-owner", f"--file={dump}", url], check=True)
    finally:
        server.stop()
    copy = create_database()
    subprocess.run(["pg_restore", "--no-owner", f"--dbname={copy}", str(dump)], check=True)
    again = TesseraServer(tmp_path / "data2", tmp_path / "restored.log", database_url=copy).start()
    try:
        v = again.client(w.vendor)
        assert usage(v, arn)["Seats"]["ConsumedValue"] == "1"
        again.client(w.customer).check_in_license(LicenseConsumptionToken=tok)
        assert usage(v, arn)["Seats"]["ConsumedValue"] == "0"
    finally:
        again.stop()


def test_a_copied_agent_data_directory_keeps_its_install_id_and_license(tmp_path, server):
    agent = Agent(tmp_path, "env-backup", tmp_path / "ops", server)
    agent.start()
    before = agent.settings()
    assert agent.reserve("i-1", 3).status_code in (200, 201)
    agent.kill9()
    # What the README says to back up: the whole data directory.
    moved = Agent(tmp_path / "elsewhere", "env-backup", tmp_path / "ops", server)
    shutil.copytree(agent.dir, moved.dir)
    moved.start()
    try:
        after = moved.settings()
        assert after["installId"] == before["installId"]
        assert after["licenseState"] == before["licenseState"]
        assert after["expiresAt"] == before["expiresAt"]
        assert after["akuInUse"] == 3
    finally:
        moved.kill9()
