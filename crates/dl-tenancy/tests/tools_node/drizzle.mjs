// drizzle-kit + drizzle-orm: `drizzle-kit migrate` twice (tools_node/drizzle/, migrations
// made by `drizzle-kit generate`), then the seed's read (query builder) 200 times over a pool
// of 4 and the seed's upsert (onConflictDoUpdate, jsonb columns) through the pooled URIs.
// Also: drizzle-kit's default migrations schema ("drizzle") is refused, as documented.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { cli, checkResolved, main, project, readLoop, report, require, twice, upsertTwice } from './common.mjs'

const TOOL = 'drizzle'
const pg = require('pg')
const { drizzle } = require('drizzle-orm/node-postgres')
const { pgSchema, text, jsonb, boolean, timestamp } = require('drizzle-orm/pg-core')
const { desc, eq, sql } = require('drizzle-orm')

await main(TOOL, {
  async migrate () {
    const dir = project(TOOL)
    // Without `migrations.schema`: drizzle-kit's own default.
    writeFileSync(join(dir, 'default.config.js'),
      "module.exports = { dialect: 'postgresql', schema: './schema.js', out: './migrations', dbCredentials: { url: process.env.DATABASE_URL } }\n")
    const withDefault = cli(dir, 'drizzle-kit', ['migrate', '--config', 'default.config.js'])
    const runs = twice(dir, 'drizzle-kit', ['migrate'])
    report({ tool: TOOL, runs, default_schema_run: withDefault })
  },
  async app () {
    // recipe: drizzle-orm
    // The contract's table and view (schema-qualified), for queries only (not in schema.js).
    const personOverrides = pgSchema('dl_override').table('person_overrides', {
      identity_key: text('identity_key').primaryKey(),
      status: text('status'),
      identity_payload_patch: jsonb('identity_payload_patch'),
      raw_payload_patch: jsonb('raw_payload_patch'),
      tombstoned: boolean('tombstoned').notNull().default(false),
      updated_at: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow()
    })
    const people = pgSchema('dl_resolved').table('people', {
      identity_key: text('identity_key'),
      display_name: text('display_name'),
      status: text('status'),
      raw_payload: jsonb('raw_payload'),
      updated_at: timestamp('updated_at', { withTimezone: true })
    })
    // The app: the pooled URIs (PgBouncer, transaction mode); max at most 10 per process.
    const read = drizzle(new pg.Pool({ connectionString: process.env.DB_URI, max: 4 }))
    const write = drizzle(new pg.Pool({ connectionString: process.env.DB_OVERRIDE_URI, max: 4 }))
    const latest = () => read.select({ identity_key: people.identity_key, display_name: people.display_name })
      .from(people).orderBy(desc(people.updated_at)).limit(20)
    // INSERT ... ON CONFLICT (identity_key) DO UPDATE; jsonb columns take plain objects
    const upsert = (key, status, identityPatch, rawPatch) => write.insert(personOverrides)
      .values({ identity_key: key, status, identity_payload_patch: identityPatch, raw_payload_patch: rawPatch, tombstoned: false })
      .onConflictDoUpdate({
        target: personOverrides.identity_key,
        set: {
          status: sql`excluded.status`,
          identity_payload_patch: sql`excluded.identity_payload_patch`,
          raw_payload_patch: sql`excluded.raw_payload_patch`,
          tombstoned: false,
          updated_at: sql`now()`
        }
      })
    // end recipe
    const out = await readLoop(() => latest())
    const { row, upsertError } = await upsertTwice(TOOL, upsert, async (key) => (await write.select().from(people).where(eq(people.identity_key, key)))[0])
    await read.$client.end()
    await write.$client.end()
    report({ tool: TOOL, ...out, upsert_ok: checkResolved(TOOL, row, 'reviewed'), upsert_error: upsertError, resolved: row })
  }
})
