// Kysely: Migrator + FileMigrationProvider (its lock: pg_advisory_xact_lock on the direct
// URI), migrateToLatest twice (tools_node/kysely/migrations), then the seed's read 200 times
// over a pool of 4 and the seed's upsert (onConflict doUpdateSet, jsonb) through the pooled URIs.
import { promises as fs } from 'node:fs'
import path from 'node:path'
import { checkResolved, main, project, readLoop, report, require, upsertTwice } from './common.mjs'

const TOOL = 'kysely'
const pg = require('pg')
const { Kysely, PostgresDialect, sql } = require('kysely')
// Kysely 0.29 moved the migrator to kysely/migration.
const { Migrator, FileMigrationProvider } = require('kysely/migration')

await main(TOOL, {
  async migrate () {
    const dir = project(TOOL)
    const runs = []
    for (let i = 0; i < 2; i++) {
      // recipe: Kysely
      // Migrations through the override login's DIRECT URI: Kysely's Migrator takes an advisory
      // lock (kysely_migration and kysely_migration_lock land in tenant_custom, the current
      // schema); node-postgres reads sslmode=verify-full and sslrootcert from the URI.
      const db = new Kysely({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 1 }) }) })
      const migrator = new Migrator({
        db,
        provider: new FileMigrationProvider({ fs, path, migrationFolder: path.join(dir, 'migrations') })
      })
      const { error, results } = await migrator.migrateToLatest()
      await db.destroy()
      // end recipe
      runs.push({ ok: !error, out: error ? String(error.stack || error) : JSON.stringify(results) })
    }
    report({ tool: TOOL, runs })
  },
  async app () {
    // recipe: Kysely
    // The app: the pooled URIs (PgBouncer, transaction mode); max at most 10 per process.
    const connect = (uri) => new Kysely({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: uri, max: 4 }) }) })
    const read = connect(process.env.DB_URI)
    const write = connect(process.env.DB_OVERRIDE_URI)
    const latest = () => read.selectFrom('dl_resolved.people')
      .select(['identity_key', 'display_name']).orderBy('updated_at', 'desc').limit(20).execute()
    // jsonb: pass JSON.stringify(obj) (node-postgres would send a JS array as a PostgreSQL array)
    const upsert = (key, status, identityPatch, rawPatch) => write.insertInto('dl_override.person_overrides')
      .values({
        identity_key: key,
        status,
        identity_payload_patch: JSON.stringify(identityPatch),
        raw_payload_patch: JSON.stringify(rawPatch),
        tombstoned: false,
        updated_at: sql`now()`
      })
      .onConflict((oc) => oc.column('identity_key').doUpdateSet((eb) => ({
        status: eb.ref('excluded.status'),
        identity_payload_patch: eb.ref('excluded.identity_payload_patch'),
        raw_payload_patch: eb.ref('excluded.raw_payload_patch'),
        tombstoned: false,
        updated_at: sql`now()`
      })))
      .execute()
    // end recipe
    const out = await readLoop(() => latest())
    const { row, upsertError } = await upsertTwice(TOOL, upsert, async (key) => await write.selectFrom('dl_resolved.people').selectAll().where('identity_key', '=', key).executeTakeFirst())
    await read.destroy()
    await write.destroy()
    report({ tool: TOOL, ...out, upsert_ok: checkResolved(TOOL, row, 'reviewed'), upsert_error: upsertError, resolved: row })
  }
})
