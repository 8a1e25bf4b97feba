// knex 3: `knex migrate:latest` twice with the knexfile (tools_node/knex/), then the seed's
// read (query builder) 200 times over a pool of 4 and the seed's upsert with jsonb.
import { checkResolved, keyOf, main, patches, project, readLoop, report, require, twice } from './common.mjs'

const TOOL = 'knex'
const Knex = require('knex')

await main(TOOL, {
  async migrate () {
    const dir = project(TOOL)
    // recipe: knex
    // npx knex migrate:latest   (DATABASE_URL = the override login's direct URI)
    // end recipe
    report({ tool: TOOL, runs: twice(dir, 'knex', ['migrate:latest']) })
  },
  async app () {
    // recipe: knex
    // The app: the pooled URIs (PgBouncer, transaction mode); a pool of at most 10 per process.
    const read = Knex({ client: 'pg', connection: process.env.DB_URI, pool: { min: 0, max: 4 } })
    const write = Knex({ client: 'pg', connection: process.env.DB_OVERRIDE_URI, pool: { min: 0, max: 4 } })
    const people = () => read('dl_resolved.people')
      .select('identity_key', 'display_name').orderBy('updated_at', 'desc').limit(20)
    // jsonb: pass JSON.stringify(obj) (node-postgres would send a JS array as a PostgreSQL array)
    const upsert = (key, status, identityPatch, rawPatch) => write('dl_override.person_overrides')
      .insert({
        identity_key: key,
        status,
        identity_payload_patch: JSON.stringify(identityPatch),
        raw_payload_patch: JSON.stringify(rawPatch),
        tombstoned: false,
        updated_at: write.fn.now()
      })
      .onConflict('identity_key')
      .merge(['status', 'identity_payload_patch', 'raw_payload_patch', 'tombstoned', 'updated_at'])
    // end recipe
    const out = await readLoop(() => people())
    const p = patches(TOOL)
    await upsert(keyOf(TOOL), 'verified', p.identity, p.raw)
    await upsert(keyOf(TOOL), 'reviewed', p.identity, p.raw)
    const row = await write('dl_resolved.people').where({ identity_key: keyOf(TOOL) })
      .first('display_name', 'status', 'raw_payload')
    await read.destroy()
    await write.destroy()
    report({ tool: TOOL, ...out, upsert_ok: checkResolved(TOOL, row, 'reviewed'), resolved: row })
  }
})
