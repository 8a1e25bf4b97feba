// node-postgres (pg): a Pool of 4 with the pooled URIs, the seed's read 200 times and the
// seed's upsert (its own SQL, jsonb parameters). No migration tool of its own.
import { checkResolved, main, readLoop, report, require, upsertTwice } from './common.mjs'

const TOOL = 'node-postgres'
const pg = require('pg')

await main(TOOL, {
  async app () {
    // recipe: node-postgres
    // The pooled URIs (PgBouncer, transaction mode): pg reads sslmode=verify-full and
    // sslrootcert from the URI; max at most 10 per process.
    const read = new pg.Pool({ connectionString: process.env.DB_URI, max: 4 })
    const write = new pg.Pool({ connectionString: process.env.DB_OVERRIDE_URI, max: 4 })
    const latest = async () => (await read.query(
      'SELECT identity_key, display_name FROM dl_resolved.people ORDER BY updated_at DESC LIMIT 20')).rows
    // The seed's upsert; jsonb: pass JSON.stringify(obj) (pg would send a JS array as a PostgreSQL array)
    const upsert = (key, status, identityPatch, rawPatch) => write.query(
      `INSERT INTO dl_override.person_overrides
         (identity_key, status, identity_payload_patch, raw_payload_patch, tombstoned, updated_at)
       VALUES ($1, $2, $3::jsonb, $4::jsonb, false, now())
       ON CONFLICT (identity_key) DO UPDATE
       SET status = EXCLUDED.status,
           identity_payload_patch = EXCLUDED.identity_payload_patch,
           raw_payload_patch = EXCLUDED.raw_payload_patch,
           tombstoned = false,
           updated_at = now()`,
      [key, status, JSON.stringify(identityPatch), JSON.stringify(rawPatch)])
    // end recipe
    const out = await readLoop(() => latest())
    const { row, upsertError } = await upsertTwice(TOOL, upsert, async (key) => (await write.query('SELECT display_name, status, raw_payload FROM dl_resolved.people WHERE identity_key = $1', [key])).rows[0])
    await read.end()
    await write.end()
    report({ tool: TOOL, ...out, upsert_ok: checkResolved(TOOL, row, 'reviewed'), upsert_error: upsertError, resolved: row })
  }
})
