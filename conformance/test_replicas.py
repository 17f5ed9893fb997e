"""Three `tessera serve` replicas on one database: 48 clients race checkouts
and check-ins across them while one replica is killed with SIGKILL.
The pool never goes above its MaxCount, the count in the database matches what
the clients were told, and a ClientToken retried on another replica gets the
same consumption. Then the replicas' reapers expire consumptions together, and
each is returned once.

The database is the pass's own (TESSERA_CONFORMANCE_DATABASE): a fresh
PostgreSQL database (see harness.create_database), or one SQLite file that the
three processes share. On SQLite this is what the writer's memory and its log
flush are held to: each process forgets what it knows when another commits,
takes its turn at the file's write lock, and answers a write only once it is
on disk, so a process killed mid-batch loses nothing it acknowledged.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from harness import (TesseraServer, checkout, consumed, counted, create_database, create_license, fingerprint,
                     on_postgres)

REPLICAS = 3
THREADS = 48
SEATS = 5
RUN_SECONDS = 10.0
KILL_AFTER = 4.0


@pytest.fixture
def database_url(tmp_path_factory) -> str:
    if not on_postgres():
        return f"sqlite://{tmp_path_factory.mktemp('shared') / 'tessera.db'}"
    if os.environ.get("TESSERA_SKIP_POSTGRES") == "1":
        pytest.skip("TESSERA_SKIP_POSTGRES=1")
    return create_database()


@pytest.fixture
def replicas(tmp_path_factory, database_url):
    servers = []
    for i in range(REPLICAS):
        base = tmp_path_factory.mktemp(f"replica-{i}")
        # On SQLite the replicas share one file, which they must say.
        servers.append(TesseraServer(base / "data", base / "server.log", database_url=database_url,
                                     extra_args=["--shared-sqlite"]))
    for s in servers:
        s.start()
    yield servers
    for s in servers:
        s.stop()


@dataclass
class Ledger:
    """What the clients were told, and what they could not find out."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    # client token -> consumption token, for every acknowledged checkout
    checkouts: dict = field(default_factory=dict)
    # consumption tokens whose check-in was acknowledged
    check_ins: set = field(default_factory=set)
    # client tokens of checkouts whose answer was lost (connection cut)
    doubtful_checkouts: list = field(default_factory=list)
    # consumption tokens whose check-in answer was lost
    doubtful_check_ins: list = field(default_factory=list)
    # which replica acknowledged each checkout
    origin: dict = field(default_factory=dict)
    refused: int = 0
    unexpected: list = field(default_factory=list)


def test_replicas_share_one_pool_exactly(replicas):
    first = replicas[0]
    vendor = first.create_account("replica-vendor")
    customer = first.create_account("replica-customer")
    arn, req = create_license(first.client(vendor), beneficiary=customer.account_id,
                              entitlements=[counted("Seats", SEATS)])
    sku, fp = req["ProductSKU"], fingerprint(vendor.account_id)

    # boto3 clients are made up front: creating them is not thread-safe.
    clients = [[s.client(customer) for s in replicas] for _ in range(THREADS)]
    samplers = [s.client(vendor) for s in replicas]
    alive = [True] * REPLICAS
    ledger = Ledger()
    samples: list[int] = []
    sample_errors: list[str] = []
    stop = threading.Event()
    start = threading.Barrier(THREADS + 1, timeout=60)

    def pick(prefer: int) -> int:
        for k in range(REPLICAS):
            r = (prefer + k) % REPLICAS
            if alive[r]:
                return r
        raise AssertionError("no replica alive")

    def worker(i: int) -> None:
        rng = random.Random(i)
        home = i % REPLICAS
        start.wait()
        while not stop.is_set():
            r = pick(home)
            c = clients[i][r]
            ct = f"replica-{i}-{rng.getrandbits(64):016x}"
            try:
                out = checkout(c, sku, fp, value=1, ClientToken=ct)
            except ClientError as e:
                if e.response["Error"]["Code"] == "NoEntitlementsAllowedException":
                    with ledger.lock:
                        ledger.refused += 1
                    time.sleep(rng.uniform(0, 0.01))
                else:
                    with ledger.lock:
                        ledger.unexpected.append(("checkout", r, e.response["Error"]))
                continue
            except BotoCoreError:
                # The replica died with the request in flight: committed or not, unknown.
                with ledger.lock:
                    ledger.doubtful_checkouts.append(ct)
                home = pick(r + 1)
                continue
            consumption = out["LicenseConsumptionToken"]
            with ledger.lock:
                ledger.checkouts[ct] = consumption
                ledger.origin[ct] = r
            # Hold the seat a moment, now and then for longer; a holder told to
            # stop keeps its seat, so some are still out at the end.
            stop.wait(rng.uniform(0, 0.02) if rng.random() < 0.9 else rng.uniform(0.2, 0.6))
            if stop.is_set():
                return
            r = pick(home)
            try:
                clients[i][r].check_in_license(LicenseConsumptionToken=consumption)
                with ledger.lock:
                    ledger.check_ins.add(consumption)
            except ClientError as e:
                with ledger.lock:
                    ledger.unexpected.append(("check-in", r, e.response["Error"]))
            except BotoCoreError:
                with ledger.lock:
                    ledger.doubtful_check_ins.append(consumption)
                home = pick(r + 1)

    def sampler() -> None:
        k = 0
        while not stop.is_set():
            r = pick(k)
            k += 1
            try:
                samples.append(int(consumed(samplers[r], arn)))
            except BotoCoreError:
                pass  # the replica just died
            except ClientError as e:
                sample_errors.append(repr(e.response["Error"]))
            time.sleep(0.01)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
    threads.append(threading.Thread(target=sampler, daemon=True))
    for t in threads:
        t.start()
    start.wait()
    time.sleep(KILL_AFTER)
    alive[2] = False
    replicas[2].kill9()
    time.sleep(RUN_SECONDS - KILL_AFTER)
    stop.set()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a client thread hung"

    assert ledger.unexpected == [], ledger.unexpected[:5]
    assert sample_errors == [], sample_errors[:5]
    survivor = replicas[0].client(vendor)
    other = replicas[1].client(customer)

    # Settle what the kill left unknown, through a surviving replica. A lost
    # checkout retried with its ClientToken either replays (it was committed)
    # or is made now; one refused for want of seats was never committed.
    for ct in ledger.doubtful_checkouts:
        try:
            out = checkout(other, sku, fp, value=1, ClientToken=ct)
            ledger.checkouts[ct] = out["LicenseConsumptionToken"]
        except ClientError as e:
            assert e.response["Error"]["Code"] == "NoEntitlementsAllowedException", e.response
    for consumption in ledger.doubtful_check_ins:
        try:
            other.check_in_license(LicenseConsumptionToken=consumption)
        except ClientError as e:
            # Committed before the replica died: the retry finds it checked in.
            assert e.response["Error"]["Code"] == "ConflictException", e.response
        ledger.check_ins.add(consumption)

    held = set(ledger.checkouts.values()) - ledger.check_ins
    in_db = int(consumed(survivor, arn))
    assert in_db == len(held), (
        f"{in_db} seats in use, but {len(ledger.checkouts)} checkouts and {len(ledger.check_ins)} check-ins "
        f"were acknowledged ({len(ledger.doubtful_checkouts)} checkouts, {len(ledger.doubtful_check_ins)} "
        f"check-ins settled after the kill)")
    print(f"\n{len(ledger.checkouts)} checkouts and {len(ledger.check_ins)} check-ins acknowledged, "
          f"{ledger.refused} refused, {len(ledger.doubtful_checkouts)}+{len(ledger.doubtful_check_ins)} settled "
          f"after the kill, {len(held)} held at the end, {len(samples)} samples, at most {max(samples)} in use")
    assert len(samples) >= 20, f"only {len(samples)} usage samples"
    assert max(samples) <= SEATS, f"the pool went to {max(samples)} of {SEATS}"
    assert len(ledger.checkouts) > 3 * SEATS, f"only {len(ledger.checkouts)} checkouts in {RUN_SECONDS}s"
    assert ledger.refused > 0, "the pool never ran dry"
    assert any(r == 2 for r in ledger.origin.values()), "the killed replica acknowledged nothing"

    # An acknowledged checkout retried on another replica answers the same consumption,
    # including those acknowledged by the replica that died.
    by_killed = [ct for ct, r in ledger.origin.items() if r == 2][:5]
    by_others = [ct for ct, r in ledger.origin.items() if r != 2][:5]
    for ct in by_killed + by_others:
        target = 1 if ledger.origin[ct] == 0 else 0
        out = checkout(replicas[target].client(customer), sku, fp, value=1, ClientToken=ct)
        assert out["LicenseConsumptionToken"] == ledger.checkouts[ct], ct
    assert int(consumed(survivor, arn)) == len(held), "replays must not draw"

    # Give every seat back.
    for consumption in held:
        other.check_in_license(LicenseConsumptionToken=consumption)
    assert consumed(survivor, arn) == "0"


def test_replica_reapers_return_each_expiry_once(replicas):
    first = replicas[0]
    vendor = first.create_account("reaper-vendor")
    customer = first.create_account("reaper-customer")
    arn, req = create_license(first.client(vendor), beneficiary=customer.account_id,
                              entitlements=[counted("Seats", 40)])
    sku, fp = req["ProductSKU"], fingerprint(vendor.account_id)
    clients = [s.client(customer) for s in replicas]
    tokens = [checkout(clients[i % REPLICAS], sku, fp, value=1)["LicenseConsumptionToken"] for i in range(30)]
    assert consumed(first.client(vendor), arn) == "30"

    # Half an hour on: ten are extended (to an hour from now), twenty are not.
    for s in replicas:
        s.advance_clock(1800)
    for i, t in enumerate(tokens[:10]):
        clients[i % REPLICAS].extend_license_consumption(LicenseConsumptionToken=t)
    # Another 31 minutes: the twenty are due. Every replica's reaper (once a
    # second) races for them; nothing reads the usage until they have had time.
    for s in replicas:
        s.advance_clock(1860)
    time.sleep(3.5)
    for s in replicas:
        assert consumed(s.client(vendor), arn) == "10", f"replica on port {s.port}"
    # The extended ten are still active and give their seats back once.
    for i, t in enumerate(tokens[:10]):
        clients[(i + 1) % REPLICAS].check_in_license(LicenseConsumptionToken=t)
    assert consumed(replicas[2].client(vendor), arn) == "0"
    for t in tokens[10:]:
        with pytest.raises(ClientError) as e:
            clients[0].check_in_license(LicenseConsumptionToken=t)
        assert e.value.response["Error"]["Code"] == "ConflictException"


def test_every_replica_publishes_every_issuer_key(replicas):
    """A token signed by one replica verifies against any replica's JWKS, even
    one that served its JWKS before the key existed."""
    import jwt
    import requests

    a, b, c = replicas
    vendor = a.create_account("jwks-vendor")
    customer = a.create_account("jwks-customer")
    before = {k["kid"] for k in requests.get(b.url + "/.well-known/jwks.json", timeout=10).json()["keys"]}
    sku = f"jwks-{random.randrange(1 << 30)}"
    create_license(a.client(vendor), beneficiary=customer.account_id, sku=sku, entitlements=[counted("Seats", 5)])
    # The first checkout makes the issuer's signing key, on replica A.
    token = checkout(a.client(customer), sku, fingerprint(vendor.account_id))["SignedToken"]
    kid = jwt.get_unverified_header(token)["kid"]
    assert kid not in before
    for s in (b, c, a):
        jwks = requests.get(s.url + "/.well-known/jwks.json", timeout=10).json()
        keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys}
        assert kid in keys, f"replica on port {s.port} does not publish {kid}"
        jwt.decode(token, key=keys[kid].key, algorithms=["EdDSA"], options={"verify_aud": False})
