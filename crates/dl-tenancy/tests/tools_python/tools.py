"""Python tools with their defaults against one workspace: one tool a run, one JSON line.

    python tools.py <tool> <work dir>     tool: django alembic sqlalchemy sqlalchemy_async
                                                pandas asyncpg psycopg

What a developer sets from `dl-tenancy connection-uris reveal` (the Rust test,
tests/tools_python.rs, sets them for the pooled or the direct URIs):

    DB_URI            the read login's URI (reads)
    DB_OVERRIDE_URI   the override login's URI (writes to dl_override)
    DB_MIGRATE_URI    the override login's URI for migrations (the direct one in the recipes)
    DB_HOST DB_PORT DB_NAME DB_USER DB_PASSWORD DB_SSLROOTCERT   Django: the override login
    DB_READ_HOST ... DB_READ_SSLROOTCERT                          Django: the read login
    DL_SEED_DIR       tests/seed (read_query.sql, override_upsert.sql)

The workspace holds people person:0 .. person:39 named `Name {i}` whose updated_at is in the
future and falls with i, so the seed's read query returns exactly person:0 .. person:19 in
that order, whatever the tools write meanwhile (their writes are stamped now()).

Each tool:
  1. its migration, where it has one (Django, Alembic; SQLAlchemy's create_all and pandas'
     to_sql stand in for theirs): a table in tenant_custom, a second step, the migrate command
     once more as a no-op;
  2. the seed's read query, 200 times over 4 connections (50 each), every row checked;
  3. the seed's upsert (twice: insert, then the ON CONFLICT update) with jsonb parameters from
     the tool, then the resolved row read back with the read login.
Code between `# recipe: <tool>` and `# end recipe` is what an app developer copies.
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

TOOL = sys.argv[1]
WORK = Path(sys.argv[2])
SEED = Path(os.environ["DL_SEED_DIR"])
READ_QUERY = (SEED / "read_query.sql").read_text().strip()
UPSERT = (SEED / "override_upsert.sql").read_text().strip()
EXPECTED = [(f"person:{i}", f"Name {i}") for i in range(20)]
CONNECTIONS = 4
READS_EACH = 50


class Tally:
    def __init__(self, tool):
        self.tool = tool
        self.out = {"tool": tool, "queries": 0, "errors": 0, "wrong": 0, "first_error": None}
        self.lock = threading.Lock()

    def rows(self, rows):
        with self.lock:
            self.out["queries"] += 1
            if [tuple(r) for r in rows] != EXPECTED:
                self.out["wrong"] += 1
                self.out["first_error"] = self.out["first_error"] or f"wrong rows: {list(rows)[:3]}"

    def error(self, e):
        with self.lock:
            self.out["queries"] += 1
            self.out["errors"] += 1
            self.out["first_error"] = self.out["first_error"] or f"{type(e).__name__}: {e}"[:400]

    def set(self, **kv):
        self.out.update(kv)

    def report(self):
        print(json.dumps(self.out), flush=True)


def threads(target):
    ts = [threading.Thread(target=target, args=(c,)) for c in range(CONNECTIONS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def run(args, cwd, env=None):
    """A tool's command line; its output, or an exception carrying it."""
    p = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p.stdout + p.stderr


def bin_(name):
    return str(Path(sys.executable).parent / name)


def upsert_values(tool, round_):
    """The upsert's parameters: round 0 inserts, round 1 updates through ON CONFLICT."""
    name = f"Written by {tool}" if round_ else f"First by {tool}"
    return f"person:{tool}", "verified", {"display_name": name, "tool": tool}, {"source": tool}


# ---------------------------------------------------------------------------------- Django

DJANGO_MODELS_1 = '''
from django.db import models
from django.db.models.functions import Now


class Note(models.Model):
    """The app's own table: tenant_custom (the override login's first schema)."""
    title = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)


class Person(models.Model):
    """dl_resolved.people (the read login's first schema), read-only."""
    identity_key = models.TextField(primary_key=True)
    display_name = models.TextField(null=True)
    updated_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "people"


class PersonOverride(models.Model):
    """dl_override.person_overrides: not on the search path, so the schema goes in db_table."""
    identity_key = models.TextField(primary_key=True)
    status = models.TextField(null=True)
    identity_payload_patch = models.JSONField(null=True)
    raw_payload_patch = models.JSONField(null=True)
    tombstoned = models.BooleanField(default=False)
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        managed = False
        db_table = 'dl_override"."person_overrides'
'''

# The second migration: a column more.
DJANGO_MODELS_2 = DJANGO_MODELS_1.replace(
    "    created_at = models.DateTimeField(auto_now_add=True)\n",
    "    created_at = models.DateTimeField(auto_now_add=True)\n"
    "    body = models.TextField(default=\"\")\n",
)


def django_tool():
    tally = Tally("django")
    py = sys.executable
    project = WORK / "mysite"
    project.mkdir(parents=True)
    run([py, "-m", "django", "startproject", "mysite", "."], project)
    run([py, "manage.py", "startapp", "notes"], project)
    settings = project / "mysite" / "settings.py"
    tail = (Path(__file__).parent / "django_settings.py").read_text()
    settings.write_text(settings.read_text() + "\n" + tail + '\nINSTALLED_APPS += ["notes"]\n')
    models = project / "notes" / "models.py"
    models.write_text(DJANGO_MODELS_1)
    made = [run([py, "manage.py", "makemigrations", "notes"], project)]
    migrate = [run([py, "manage.py", "migrate"], project)]
    models.write_text(DJANGO_MODELS_2)
    made.append(run([py, "manage.py", "makemigrations", "notes"], project))
    migrate.append(run([py, "manage.py", "migrate"], project))
    migrate.append(run([py, "manage.py", "migrate"], project))
    tally.set(
        migrations=sorted(p.name for p in (project / "notes" / "migrations").glob("0*.py")),
        migrate_runs=len(migrate),
        second_applied="Applying notes.0002" in migrate[1],
        last_is_noop="No migrations to apply." in migrate[2] and "Applying" not in migrate[2],
    )

    sys.path.insert(0, str(project))
    os.environ["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
    import django
    from django.db import connections

    django.setup()
    from notes.models import Note, Person, PersonOverride

    Note.objects.create(title="first", body="through the ORM")
    tally.set(notes=Note.objects.count())

    def client(c):
        try:
            for n in range(READS_EACH):
                try:
                    if n % 2 == 0:
                        # The seed's query as it is, on the read login's connection.
                        with connections["read"].cursor() as cur:
                            cur.execute(READ_QUERY)
                            tally.rows(cur.fetchall())
                    else:
                        # The same through the ORM; iterator() would be a server-side cursor
                        # without DISABLE_SERVER_SIDE_CURSORS.
                        qs = Person.objects.using("read").order_by("-updated_at")
                        tally.rows(list(qs.values_list("identity_key", "display_name")[:20].iterator()))
                except Exception as e:  # noqa: BLE001 - every failure counts
                    tally.error(e)
        finally:
            connections.close_all()

    threads(client)

    for round_ in range(2):
        key, status, patch, raw = upsert_values("django", round_)
        # recipe: Django upsert
        # The seed's upsert through the ORM: INSERT ... ON CONFLICT (identity_key) DO UPDATE;
        # JSONField values go as jsonb, updated_at takes its db_default now().
        PersonOverride.objects.bulk_create(
            [PersonOverride(identity_key=key, status=status, identity_payload_patch=patch,
                            raw_payload_patch=raw, tombstoned=False)],
            update_conflicts=True,
            unique_fields=["identity_key"],
            update_fields=["status", "identity_payload_patch", "raw_payload_patch", "tombstoned", "updated_at"],
        )
        # end recipe
    resolved = Person.objects.using("read").get(identity_key="person:django")
    tally.set(resolved=resolved.display_name)
    connections.close_all()
    tally.report()


# --------------------------------------------------------------------------------- Alembic

ALEMBIC_REV_1 = """    op.create_table(
        "alembic_notes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
    )"""
ALEMBIC_REV_2 = """    op.add_column("alembic_notes", sa.Column("body", sa.Text))"""


def fill_upgrade(path, body):
    """`alembic revision` writes an upgrade() that passes: give it the migration's body."""
    text = path.read_text()
    text, n = re.subn(r'(def upgrade\(\) -> None:\n(?:    """[^\n]*"""\n)?)    pass\n', lambda m: m.group(1) + body + "\n", text)
    assert n == 1, text
    path.write_text(text)


def alembic_tool():
    tally = Tally("alembic")
    project = WORK / "alembic"
    project.mkdir(parents=True)
    alembic = bin_("alembic")
    # recipe: Alembic
    # `alembic init` with its defaults; sqlalchemy.url in alembic.ini is the direct override URI
    # (migrations run alone there), driver psycopg 3. The ini reads % as interpolation: the
    # revealed URI has none, so it goes in as it is.
    run([alembic, "init", "migrations"], project)
    url = os.environ["DB_MIGRATE_URI"].replace("postgresql://", "postgresql+psycopg://", 1)
    ini = project / "alembic.ini"
    ini.write_text(re.sub(r"(?m)^sqlalchemy\.url = .*$", lambda _: f"sqlalchemy.url = {url}", ini.read_text()))
    # upgrade(): op.create_table("alembic_notes", ...) unqualified: the table lands in
    # tenant_custom (the login's first schema), and so does alembic_version.
    run([alembic, "revision", "-m", "create notes", "--rev-id", "0001"], project)
    fill_upgrade(project / "migrations" / "versions" / "0001_create_notes.py", ALEMBIC_REV_1)
    upgrades = [run([alembic, "upgrade", "head"], project)]
    # end recipe
    run([alembic, "revision", "-m", "add body", "--rev-id", "0002"], project)
    fill_upgrade(project / "migrations" / "versions" / "0002_add_body.py", ALEMBIC_REV_2)
    upgrades.append(run([alembic, "upgrade", "head"], project))
    upgrades.append(run([alembic, "upgrade", "head"], project))
    current = run([alembic, "current"], project)
    tally.set(
        migrate_runs=len(upgrades),
        second_applied="Running upgrade 0001 -> 0002" in upgrades[1],
        last_is_noop="Running upgrade" not in upgrades[2],
        current=[line for line in current.splitlines() if "(head)" in line],
    )
    # Alembic's reads and writes are SQLAlchemy's (sqlalchemy, sqlalchemy_async below).
    tally.report()


# ------------------------------------------------------------------------------ SQLAlchemy

# recipe: SQLAlchemy 2 (psycopg 3)
import sqlalchemy as sa  # noqa: E402
from sqlalchemy.dialects.postgresql import JSONB, insert  # noqa: E402


def sa_url(uri, driver="psycopg"):
    # The revealed URI names no driver; psycopg 3 reads sslmode/sslrootcert from it (libpq).
    return uri.replace("postgresql://", f"postgresql+{driver}://", 1)


person_overrides = sa.Table(
    "person_overrides", sa.MetaData(),
    sa.Column("identity_key", sa.Text, primary_key=True),
    sa.Column("status", sa.Text),
    sa.Column("identity_payload_patch", JSONB),
    sa.Column("raw_payload_patch", JSONB),
    sa.Column("tombstoned", sa.Boolean, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    schema="dl_override",
)


def upsert_statement(key, status, patch, raw):
    """The seed's upsert: INSERT ... ON CONFLICT (identity_key) DO UPDATE, patches as jsonb."""
    stmt = insert(person_overrides).values(
        identity_key=key, status=status, identity_payload_patch=patch, raw_payload_patch=raw,
        tombstoned=False, updated_at=sa.func.now())
    return stmt.on_conflict_do_update(
        index_elements=["identity_key"],
        set_={"status": stmt.excluded.status,
              "identity_payload_patch": stmt.excluded.identity_payload_patch,
              "raw_payload_patch": stmt.excluded.raw_payload_patch,
              "tombstoned": False, "updated_at": sa.func.now()})
# end recipe


def resolved_name(conn, key):
    return conn.execute(
        sa.text("SELECT display_name FROM dl_resolved.people WHERE identity_key = :k"), {"k": key}
    ).scalar_one()


def sa_reads(tally, read, fetch, made=0):
    """`fetch(conn)` READS_EACH times on each of CONNECTIONS connections of the engine `read`
    (`made` times fewer on the first, which has made those reads already), every row checked."""
    def client(c):
        with read.connect() as conn:
            for _ in range(READS_EACH - (made if c == 0 else 0)):
                try:
                    tally.rows(fetch(conn))
                except sa.exc.DBAPIError as e:
                    tally.error(e)
                    conn.rollback()

    threads(client)


def sa_finish(tally, read, *engines):
    """The tool's upserted person as the read login resolves it; the engines disposed of; the
    report."""
    with read.connect() as conn:
        tally.set(resolved=resolved_name(conn, f"person:{tally.tool}"))
    for engine in (read, *engines):
        engine.dispose()
    tally.report()


def sqlalchemy_tool():
    tally = Tally("sqlalchemy")
    # recipe: SQLAlchemy 2 engines
    read = sa.create_engine(sa_url(os.environ["DB_URI"]))
    write = sa.create_engine(sa_url(os.environ["DB_OVERRIDE_URI"]))
    # end recipe
    # create_all (checkfirst) as the "migration": a table, then a second one, then a no-op.
    migrate = sa.create_engine(sa_url(os.environ["DB_MIGRATE_URI"]))
    v1 = sa.MetaData()
    sa.Table("sa_segments", v1, sa.Column("id", sa.Text, primary_key=True),
             sa.Column("segment", sa.Text, nullable=False))
    v2 = sa.MetaData()
    for t in v1.tables.values():
        t.to_metadata(v2)
    sa.Table("sa_tags", v2, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("segment_id", sa.Text, sa.ForeignKey("sa_segments.id")))
    for meta in (v1, v2, v2):
        meta.create_all(migrate)
    with migrate.begin() as conn:
        conn.execute(sa.text("INSERT INTO sa_segments VALUES ('acct-1', 'tier-1')"))
        conn.execute(sa.text("INSERT INTO sa_tags (segment_id) VALUES ('acct-1')"))
    migrate.dispose()
    tally.set(migrate_runs=3)

    query = sa.text(READ_QUERY)
    sa_reads(tally, read, lambda conn: conn.execute(query).all())
    for round_ in range(2):
        with write.begin() as conn:
            conn.execute(upsert_statement(*upsert_values("sqlalchemy", round_)))
    sa_finish(tally, read, write)


async def sqlalchemy_async_tool():
    import ssl

    from sqlalchemy.ext.asyncio import create_async_engine

    tally = Tally("sqlalchemy_async")

    # recipe: SQLAlchemy 2 async (asyncpg)
    def asyncpg_engine(uri):
        # The asyncpg dialect hands the URL's query to asyncpg.connect() as keyword arguments,
        # and it takes no sslmode/sslrootcert: the same check (verify-full) as an SSLContext.
        url = sa.engine.make_url(sa_url(uri, "asyncpg"))
        tls = ssl.create_default_context(cafile=url.query["sslrootcert"])
        return create_async_engine(url.difference_update_query(["sslmode", "sslrootcert"]),
                                   connect_args={"ssl": tls})

    read = asyncpg_engine(os.environ["DB_URI"])
    write = asyncpg_engine(os.environ["DB_OVERRIDE_URI"])
    # end recipe
    query = sa.text(READ_QUERY)

    async def client(c):
        async with read.connect() as conn:
            for _ in range(READS_EACH):
                try:
                    tally.rows((await conn.execute(query)).all())
                except sa.exc.DBAPIError as e:
                    tally.error(e)
                    await conn.rollback()

    await asyncio.gather(*(client(c) for c in range(CONNECTIONS)))
    for round_ in range(2):
        async with write.begin() as conn:
            await conn.execute(upsert_statement(*upsert_values("sqlalchemy_async", round_)))
    async with read.connect() as conn:
        tally.set(resolved=await conn.run_sync(resolved_name, "person:sqlalchemy_async"))
    await read.dispose()
    await write.dispose()
    tally.report()


# ---------------------------------------------------------------------------------- pandas

def pandas_tool():
    import pandas as pd

    tally = Tally("pandas")
    frame = pd.DataFrame({"name": ["a", "b", "c"], "score": [1.5, 2.5, 3.5]})
    # recipe: pandas
    # pandas takes a SQLAlchemy engine (psycopg 3: TLS from the URI). to_sql's defaults create
    # the table unqualified: it lands in tenant_custom.
    engine = sa.create_engine(os.environ["DB_OVERRIDE_URI"].replace("postgresql://", "postgresql+psycopg://", 1))
    frame.to_sql("pandas_scores", engine)
    frame.to_sql("pandas_scores", engine, if_exists="append")
    read = sa.create_engine(os.environ["DB_URI"].replace("postgresql://", "postgresql+psycopg://", 1))
    people = pd.read_sql("SELECT identity_key, display_name FROM dl_resolved.people ORDER BY updated_at DESC LIMIT 20", read)
    # end recipe
    tally.rows(people.itertuples(index=False))
    tally.set(migrate_runs=2)
    sa_reads(tally, read, lambda conn: pd.read_sql(READ_QUERY, conn).itertuples(index=False), made=1)

    # recipe: pandas upsert
    # to_sql into the override table with the seed's upsert as its method (pandas' hook for
    # INSERT ... ON CONFLICT); dtype makes the patches jsonb.
    def upsert_rows(table, conn, keys, rows):
        stmt = insert(table.table).values([dict(zip(keys, row)) for row in rows])
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["identity_key"],
            set_={"status": stmt.excluded.status,
                  "identity_payload_patch": stmt.excluded.identity_payload_patch,
                  "raw_payload_patch": stmt.excluded.raw_payload_patch,
                  "tombstoned": False, "updated_at": sa.func.now()}))

    def upsert_frame(frame):
        frame.assign(tombstoned=False).to_sql(
            "person_overrides", engine, schema="dl_override", if_exists="append", index=False,
            method=upsert_rows, dtype={"identity_payload_patch": JSONB, "raw_payload_patch": JSONB})
    # end recipe

    for round_ in range(2):
        key, status, patch, raw = upsert_values("pandas", round_)
        upsert_frame(pd.DataFrame([{"identity_key": key, "status": status,
                                    "identity_payload_patch": patch, "raw_payload_patch": raw}]))
    sa_finish(tally, read, engine)


# --------------------------------------------------------------------------------- asyncpg

async def asyncpg_tool():
    import asyncpg

    tally = Tally("asyncpg")
    key, status, patch, raw = upsert_values("asyncpg", 0)
    # recipe: asyncpg
    # create_pool() with its defaults: sslmode/sslrootcert come from the URI; every query is a
    # prepared statement (the pooler keeps them per client).
    read = await asyncpg.create_pool(os.environ["DB_URI"])
    write = await asyncpg.create_pool(os.environ["DB_OVERRIDE_URI"])
    rows = await read.fetch("SELECT identity_key, display_name FROM dl_resolved.people ORDER BY updated_at DESC LIMIT 20")
    # The seed's upsert as it is ($3::jsonb, $4::jsonb): asyncpg takes jsonb as text.
    await write.execute(UPSERT, key, status, json.dumps(patch), json.dumps(raw))
    # end recipe
    tally.rows(rows)

    async def client(c):
        async with read.acquire() as conn:
            for _ in range(READS_EACH - (1 if c == 0 else 0)):
                try:
                    tally.rows(await conn.fetch(READ_QUERY))
                except asyncpg.PostgresError as e:
                    tally.error(e)

    await asyncio.gather(*(client(c) for c in range(CONNECTIONS)))
    for round_ in range(1, 2):
        key, status, patch, raw = upsert_values("asyncpg", round_)
        await write.execute(UPSERT, key, status, json.dumps(patch), json.dumps(raw))
    tally.set(resolved=await read.fetchval(
        "SELECT display_name FROM dl_resolved.people WHERE identity_key = $1", "person:asyncpg"))
    await read.close()
    await write.close()
    tally.report()


# --------------------------------------------------------------------------------- psycopg

def psycopg_tool():
    import psycopg
    from psycopg.types.json import Jsonb

    tally = Tally("psycopg")
    # psycopg's placeholders for the seed's $1 .. $4.
    upsert_sql = re.sub(r"\$\d", "%s", UPSERT)

    def client(c):
        # recipe: psycopg 3
        # TLS from the URI (libpq); prepares a statement after 5 runs (the pooler keeps it).
        with psycopg.connect(os.environ["DB_URI"]) as conn:
            rows = conn.execute("SELECT identity_key, display_name FROM dl_resolved.people ORDER BY updated_at DESC LIMIT 20").fetchall()
        # end recipe
            tally.rows(rows)
            for _ in range(READS_EACH - 1):
                try:
                    tally.rows(conn.execute(READ_QUERY).fetchall())
                except psycopg.Error as e:
                    tally.error(e)
                    conn.rollback()

    threads(client)
    for round_ in range(2):
        key, status, patch, raw = upsert_values("psycopg", round_)
        # recipe: psycopg 3 upsert
        # The seed's upsert with %s for $1 .. $4, the patches as Jsonb.
        with psycopg.connect(os.environ["DB_OVERRIDE_URI"]) as conn:
            conn.execute(upsert_sql, (key, status, Jsonb(patch), Jsonb(raw)))
        # end recipe
    with psycopg.connect(os.environ["DB_URI"]) as conn:
        tally.set(resolved=conn.execute(
            "SELECT display_name FROM dl_resolved.people WHERE identity_key = %s", ("person:psycopg",)
        ).fetchone()[0])
    tally.report()


TOOLS = {
    "django": django_tool,
    "alembic": alembic_tool,
    "sqlalchemy": sqlalchemy_tool,
    "sqlalchemy_async": lambda: asyncio.run(sqlalchemy_async_tool()),
    "pandas": pandas_tool,
    "asyncpg": lambda: asyncio.run(asyncpg_tool()),
    "psycopg": psycopg_tool,
}

TOOLS[TOOL]()
