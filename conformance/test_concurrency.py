"""64 clients race for 5 floating seats: the count check and the draw must be
one atomic step."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import ClientError

from harness import checkout, consumed, counted, usage

THREADS = 64


def test_64_threads_race_for_5_seats(world):
    arn, req = world.create_license(entitlements=[counted("Seats", 5)])
    sku, fp = req["ProductSKU"], world.fingerprint()
    # one client per thread, each with its own connection pool
    clients = [world.server.client(world.customer) for _ in range(THREADS)]
    start = threading.Barrier(THREADS, timeout=60)

    def race(i: int):
        start.wait()
        try:
            out = checkout(clients[i], sku, fp, value=1)
            return ("ok", out["LicenseConsumptionToken"])
        except ClientError as e:
            return ("error", e.response["Error"]["Code"])
        except Exception as e:  # noqa: BLE001 - reported in the assertion
            return ("exception", repr(e))

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = list(pool.map(race, range(THREADS), timeout=120))

    ok = [r[1] for r in results if r[0] == "ok"]
    refused = [r for r in results if r == ("error", "NoEntitlementsAllowedException")]
    other = [r for r in results if r[0] != "ok" and r not in refused]
    assert other == [], f"unexpected outcomes: {other[:5]} ({len(other)} in all)"
    assert len(ok) == 5, f"{len(ok)} checkouts succeeded, expected 5"
    assert len(refused) == THREADS - 5
    assert len(set(ok)) == 5
    u = usage(world.v, arn)["Seats"]
    assert (u["ConsumedValue"], u["MaxCount"]) == ("5", "5")

    # and the five come back
    for t in ok:
        world.c.check_in_license(LicenseConsumptionToken=t)
    assert consumed(world.v, arn) == "0"
