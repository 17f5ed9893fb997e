"""The CLI's habits: a config file beneath flags and environment, `config
show` with sources and secrets hidden, near-miss flags, `-o json`
everywhere, and the account and key commands an operator reaches for."""

from __future__ import annotations

import json
import subprocess

import pytest

from harness import TesseraServer, clean_env, tessera_bin


def run(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cp = subprocess.run([str(tessera_bin()), *args], capture_output=True, text=True,
                        env=clean_env(env), timeout=60, stdin=subprocess.DEVNULL)
    if check:
        assert cp.returncode == 0, f"tessera {' '.join(args)}: {cp.stderr}"
    return cp


def shown(cp: subprocess.CompletedProcess, key: str = "Setting") -> dict:
    return {r[key]: r for r in json.loads(cp.stdout)}


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path):
    conf = tmp_path / "tessera.toml"
    conf.write_text('listen = "127.0.0.1:7001"\nidle-timeout = 11\ndrain-timeout = 12\n'
                    'shared-sqlite = true\nlog-format = "json"\n'
                    'database-url = "postgres://ops:hunter2-secret@db.internal:5432/tessera"\n')
    cp = run("config", "show", "--config", str(conf), "--drain-timeout", "3", "-o", "json",
             env={"TESSERA_IDLE_TIMEOUT": "7"})
    s = shown(cp)
    assert (s["listen"]["Value"], s["listen"]["Source"]) == ("127.0.0.1:7001", "file")
    assert (s["idle-timeout"]["Value"], s["idle-timeout"]["Source"]) == ("7", "env")
    assert (s["drain-timeout"]["Value"], s["drain-timeout"]["Source"]) == ("3", "flag")
    assert (s["header-read-timeout"]["Value"], s["header-read-timeout"]["Source"]) == ("10", "default")
    assert (s["shared-sqlite"]["Value"], s["shared-sqlite"]["Source"]) == ("true", "file")
    assert s["log-format"]["Source"] == "file"
    assert s["listen"]["EnvironmentVariable"] == "TESSERA_LISTEN"
    assert "hunter2-secret" not in cp.stdout and "db.internal" in s["database-url"]["Value"]
    table = run("config", "show", "--config", str(conf)).stdout
    assert "Source" in table and "hunter2-secret" not in table


def test_the_server_runs_on_its_config_file(tmp_path):
    data = tmp_path / "data"
    conf = tmp_path / "tessera.toml"
    port = __import__("harness").free_port()
    conf.write_text(f'data-dir = "{data}"\nlisten = "127.0.0.1:{port}"\n')
    proc = subprocess.Popen([str(tessera_bin()), "serve", "--config", str(conf)], env=clean_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import requests, time
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            pytest.fail("the server did not listen where its config file says")
        assert (data / "tessera.db").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_unknown_and_mistyped_settings_are_named(tmp_path):
    conf = tmp_path / "bad.toml"
    conf.write_text('port = 7070\nlisten = "127.0.0.1:7070"\n')
    cp = run("serve", "--config", str(conf), check=False)
    assert cp.returncode != 0
    assert "unknown settings: port" in cp.stderr and "listen" in cp.stderr
    conf.write_text('max-connections = "many"\n')
    cp = run("serve", "--config", str(conf), check=False)
    assert cp.returncode != 0 and "max-connections" in cp.stderr
    conf.write_text('listen = [1, 2]\n')
    cp = run("serve", "--config", str(conf), check=False)
    assert cp.returncode != 0 and "listen" in cp.stderr
    cp = run("serve", "--config", str(tmp_path / "missing.toml"), check=False)
    assert cp.returncode != 0 and "missing.toml" in cp.stderr


def test_agent_config_show_hides_the_secret(tmp_path):
    conf = tmp_path / "agent.toml"
    conf.write_text('environment-id = "env-conf"\nserver-url = "http://127.0.0.1:7070"\n'
                    'access-key-id = "AKIACONF"\nsecret-access-key = "agent-secret-never-shown"\n')
    cp = run("agent", "config", "show", "--config", str(conf), "-o", "json")
    s = shown(cp, "setting")
    assert s["environment-id"]["value"] == "env-conf" and s["environment-id"]["source"] == "file"
    assert "agent-secret-never-shown" not in cp.stdout
    assert s["secret-access-key"]["source"] == "file"


def test_near_miss_flags_point_at_the_right_one():
    cp = run("serve", "--port", "7070", check=False)
    assert cp.returncode == 2 and "--listen" in cp.stderr
    cp = run("account", "list", "--db", "x", check=False)
    assert "--database-url" in cp.stderr


def test_account_and_key_commands(tmp_path):
    data = ["--data-dir", str(tmp_path / "data")]
    # Reading commands do not make an empty database where there is none.
    cp = run("account", "list", *data, check=False)
    assert cp.returncode != 0 and "no Tessera database" in cp.stderr
    assert not (tmp_path / "data" / "tessera.db").exists()
    first = json.loads(run("account", "create", "--name", "acme", *data, "-o", "json").stdout)
    cp = run("account", "create", "--name", "acme", *data, check=False)
    assert cp.returncode != 0 and "--allow-duplicate-name" in cp.stderr and first["AccountId"] in cp.stderr
    run("account", "create", "--name", "acme", "--allow-duplicate-name", *data)
    second_key = json.loads(run("key", "create", "--account", first["AccountId"], *data, "-o", "json").stdout)
    keys = json.loads(run("key", "list", "--account", first["AccountId"], *data, "-o", "json").stdout)
    assert [k["AccessKeyId"] for k in keys] == [first["AccessKeyId"], second_key["AccessKeyId"]]
    assert all(k["Status"] == "Active" for k in keys)
    assert first["SecretAccessKey"] not in json.dumps(keys)
    run("key", "revoke", second_key["AccessKeyId"], *data)
    keys = json.loads(run("key", "list", "--account", first["AccountId"], *data, "-o", "json").stdout)
    assert keys[1]["Status"] == "Revoked" and keys[1]["RevokedAt"]
    listed = json.loads(run("account", "list", *data, "-o", "json").stdout)
    assert len(listed) == 2
    run("account", "delete", first["AccountId"], *data)
    listed = json.loads(run("account", "list", *data, "-o", "json").stdout)
    assert first["AccountId"] not in [a["AccountId"] for a in listed]
    cp = run("key", "list", "--account", first["AccountId"], *data, check=False)
    assert cp.returncode != 0 and "does not exist" in cp.stderr


def test_an_account_that_holds_licenses_is_not_deleted(tmp_path, server):
    from harness import World, counted, new_sku
    w = World(server, tag="delete")
    w.create_license(sku=new_sku("delete"), entitlements=[counted()])
    cp = server.cli("account", "delete", w.vendor.account_id, "--data-dir", str(server.data_dir), check=False)
    assert cp.returncode != 0 and "still in use" in cp.stderr and "issues 1 licenses" in cp.stderr
    w.v.list_licenses()


def test_a_replaced_aws_profile_is_announced(tmp_path, server):
    env = clean_env({"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
                     "AWS_CONFIG_FILE": str(tmp_path / "config")})
    args = ["account", "create", "--name", "profiled", "--allow-duplicate-name", "--data-dir",
            str(server.data_dir), "--aws-profile", "tessera-habits", "--endpoint-url", server.url]
    first = server.cli(*args, env=env)
    assert "already existed" not in first.stdout
    again = server.cli(*args, env=env)
    assert "already existed" in again.stdout
