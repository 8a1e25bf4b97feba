"""Popular Python drivers with their default settings against one revealed URI.

    DL_URI=postgresql://... DL_OVERRIDE_URI=postgresql://... DL_KEYS=40 python python_drivers.py

The URIs are the revealed ones: TLS with sslmode=verify-full and sslrootcert=<CA file>, which
psycopg (libpq) and asyncpg read from the URI; SQLAlchemy's asyncpg dialect needs them as an
SSLContext (asyncpg_engine_args). The servers refuse plaintext, and each driver also connects
once with DL_FOREIGN_CA (a CA that did not sign the server's certificate) in sslrootcert and
must be refused: proof that it verifies the certificate rather than ignoring sslrootcert.

The workspace holds people `person:0` .. `person:{DL_KEYS-1}` whose display name is `Name {i}`.
Each driver (asyncpg also through its pool) runs point reads of random keys (fixed seed) over several concurrent connections and
counts, per driver, the queries run, the errors, and the wrong rows (a read of key k that did
not return k's row). psycopg also writes an override with the seed's upsert and a Jsonb patch.
One JSON line per driver on stdout; the Rust test (tests/drivers.rs) asserts on them.
"""

import asyncio
import json
import os
import random
import ssl
import threading
import urllib.parse

import asyncpg
import psycopg
import sqlalchemy
from psycopg.types.json import Jsonb
from sqlalchemy.ext.asyncio import create_async_engine

URI = os.environ["DL_URI"]
OVERRIDE_URI = os.environ["DL_OVERRIDE_URI"]
KEYS = int(os.environ["DL_KEYS"])
FOREIGN_CA = os.environ["DL_FOREIGN_CA"]
POINT_READ = "SELECT identity_key, display_name FROM dl_resolved.people WHERE identity_key = "
CLIENTS = 4
READS = 120


def keys_for(client):
    rng = random.Random(client)
    return [rng.randrange(KEYS) for _ in range(READS)]


class Tally:
    def __init__(self, driver):
        self.driver, self.queries, self.errors, self.wrong, self.first_error = driver, 0, 0, 0, None
        self.foreign_ca_refused = None
        self.lock = threading.Lock()

    def foreign_ca(self, error):
        """How a connection with the foreign CA ended: its exception, or None if it got in."""
        self.foreign_ca_refused = error is not None and "certificate" in str(error).lower()
        if error is not None and not self.foreign_ca_refused:
            self.first_error = self.first_error or f"foreign CA: {type(error).__name__}: {error}"[:300]

    def read(self, i, row):
        with self.lock:
            self.queries += 1
            if row is None or tuple(row) != (f"person:{i}", f"Name {i}"):
                self.wrong += 1

    def error(self, e):
        with self.lock:
            self.queries += 1
            self.errors += 1
            self.first_error = self.first_error or f"{type(e).__name__}: {e}"[:300]

    def report(self):
        print(json.dumps({"driver": self.driver, "queries": self.queries, "errors": self.errors,
                          "wrong": self.wrong, "first_error": self.first_error,
                          "foreign_ca_refused": self.foreign_ca_refused}), flush=True)


def foreign_ca_error(connect_once):
    try:
        connect_once(with_foreign_ca(URI))
    except Exception as e:  # each driver raises its own type for a TLS failure
        return e
    return None


async def foreign_ca_error_async(connect_once):
    try:
        await connect_once(with_foreign_ca(URI))
    except Exception as e:
        return e
    return None


def with_foreign_ca(uri):
    base, query = uri.split("?", 1)
    params = [p for p in query.split("&") if not p.startswith("sslrootcert=")]
    return base + "?" + "&".join(params + ["sslrootcert=" + urllib.parse.quote(FOREIGN_CA, safe="")])


def threads(target):
    ts = [threading.Thread(target=target, args=(c,)) for c in range(CLIENTS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def psycopg3():
    # Defaults: server-side prepared statements after 5 executions of the same query.
    tally = Tally("psycopg3")

    def client(c):
        with psycopg.connect(URI) as conn:
            for i in keys_for(c):
                try:
                    tally.read(i, conn.execute(POINT_READ + "%s", (f"person:{i}",)).fetchone())
                except psycopg.Error as e:
                    tally.error(e)
                    conn.rollback()

    threads(client)
    tally.foreign_ca(foreign_ca_error(lambda uri: psycopg.connect(uri).close()))
    # A write as an app makes it: the seed's upsert, the patch as Jsonb.
    with psycopg.connect(OVERRIDE_URI) as conn:
        conn.execute(
            """INSERT INTO dl_override.person_overrides
                   (identity_key, status, identity_payload_patch, raw_payload_patch, tombstoned, updated_at)
               VALUES (%s, %s, %s, %s, false, now())
               ON CONFLICT (identity_key) DO UPDATE
               SET status = EXCLUDED.status, identity_payload_patch = EXCLUDED.identity_payload_patch,
                   raw_payload_patch = EXCLUDED.raw_payload_patch, tombstoned = false, updated_at = now()""",
            ("person:psycopg", "verified", Jsonb({"display_name": "Written by psycopg"}), Jsonb({})),
        )
    with psycopg.connect(URI) as conn:
        row = conn.execute(POINT_READ + "%s", ("person:psycopg",)).fetchone()
        tally.queries += 1
        if row is None or row[1] != "Written by psycopg":
            tally.wrong += 1
    tally.report()


async def asyncpg_reads():
    # Defaults: every query is a named prepared statement, cached per connection.
    tally = Tally("asyncpg")

    async def client(c):
        conn = await asyncpg.connect(URI)
        try:
            for i in keys_for(c):
                try:
                    tally.read(i, await conn.fetchrow(POINT_READ + "$1", f"person:{i}"))
                except asyncpg.PostgresError as e:
                    tally.error(e)
        finally:
            await conn.close()

    await asyncio.gather(*(client(c) for c in range(CLIENTS)))

    async def connect_once(uri):
        await (await asyncpg.connect(uri)).close()

    tally.foreign_ca(await foreign_ca_error_async(connect_once))
    tally.report()


async def asyncpg_pool():
    # create_pool() with its defaults (FastAPI's usual setup): each connection taken back is
    # reset with `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`, and the
    # pool hands out fewer connections than there are clients.
    tally = Tally("asyncpg pool")
    async with asyncpg.create_pool(URI, min_size=2, max_size=3) as pool:

        async def client(c):
            for i in keys_for(c):
                try:
                    async with pool.acquire() as conn:
                        tally.read(i, await conn.fetchrow(POINT_READ + "$1", f"person:{i}"))
                except asyncpg.PostgresError as e:
                    tally.error(e)

        await asyncio.gather(*(client(c) for c in range(CLIENTS)))

    async def connect_once(uri):
        async with asyncpg.create_pool(uri, min_size=1, max_size=1) as p:
            await p.fetchval("SELECT 1")

    tally.foreign_ca(await foreign_ca_error_async(connect_once))
    tally.report()


def sqlalchemy_psycopg():
    tally = Tally("sqlalchemy+psycopg")
    engine = sqlalchemy.create_engine(URI.replace("postgresql://", "postgresql+psycopg://", 1))
    query = sqlalchemy.text(POINT_READ + ":k")

    def client(c):
        reads = keys_for(c)
        # Short sessions, as a web request makes them: ten reads each, from the pool.
        for start in range(0, len(reads), 10):
            try:
                with engine.connect() as conn:
                    for i in reads[start:start + 10]:
                        tally.read(i, conn.execute(query, {"k": f"person:{i}"}).fetchone())
            except sqlalchemy.exc.DBAPIError as e:
                tally.error(e)

    threads(client)
    engine.dispose()

    def connect_once(uri):
        other = sqlalchemy.create_engine(uri.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            other.connect().close()
        finally:
            other.dispose()

    tally.foreign_ca(foreign_ca_error(connect_once))
    tally.report()


def asyncpg_engine_args(uri):
    """SQLAlchemy's asyncpg dialect hands the URL's query to asyncpg.connect() as keyword
    arguments, and it takes no sslmode/sslrootcert: the same check (verify-full: the chain to
    the revealed CA and the host name) as an SSLContext."""
    url = sqlalchemy.engine.make_url(uri.replace("postgresql://", "postgresql+asyncpg://", 1))
    tls = ssl.create_default_context(cafile=url.query["sslrootcert"])
    assert url.query["sslmode"] == "verify-full" and tls.check_hostname
    return url.difference_update_query(["sslmode", "sslrootcert"]), {"ssl": tls}


async def sqlalchemy_asyncpg():
    tally = Tally("sqlalchemy+asyncpg")
    url, connect_args = asyncpg_engine_args(URI)
    engine = create_async_engine(url, connect_args=connect_args)
    query = sqlalchemy.text(POINT_READ + ":k")

    async def client(c):
        reads = keys_for(c)
        for start in range(0, len(reads), 10):
            try:
                async with engine.connect() as conn:
                    for i in reads[start:start + 10]:
                        tally.read(i, (await conn.execute(query, {"k": f"person:{i}"})).fetchone())
            except sqlalchemy.exc.DBAPIError as e:
                tally.error(e)

    await asyncio.gather(*(client(c) for c in range(CLIENTS)))
    await engine.dispose()

    async def connect_once(uri):
        url, connect_args = asyncpg_engine_args(uri)
        other = create_async_engine(url, connect_args=connect_args)
        try:
            await (await other.connect()).close()
        finally:
            await other.dispose()

    tally.foreign_ca(await foreign_ca_error_async(connect_once))
    tally.report()


psycopg3()
asyncio.run(asyncpg_reads())
asyncio.run(asyncpg_pool())
sqlalchemy_psycopg()
asyncio.run(sqlalchemy_asyncpg())
