// TypeORM 1: `typeorm migration:run` twice with the data source (tools_node/typeorm/), then
// the seed's read (repository find) 200 times over a pool of 4 and the seed's upsert
// (Repository.upsert, jsonb columns) through the pooled URIs.
import { checkResolved, main, project, readLoop, report, require, twice, upsertTwice } from './common.mjs'

const TOOL = 'typeorm'
const { DataSource, EntitySchema } = require('typeorm')

await main(TOOL, {
  async migrate () {
    const dir = project(TOOL)
    report({ tool: TOOL, runs: twice(dir, 'typeorm', ['migration:run', '-d', 'data-source.js']) })
  },
  async app () {
    // recipe: TypeORM
    // The contract's table and view as entities (schema-qualified; never synchronized).
    const PersonOverride = new EntitySchema({
      name: 'PersonOverride',
      schema: 'dl_override',
      tableName: 'person_overrides',
      columns: {
        identity_key: { type: 'text', primary: true },
        status: { type: 'text', nullable: true },
        identity_payload_patch: { type: 'jsonb', nullable: true },
        raw_payload_patch: { type: 'jsonb', nullable: true },
        tombstoned: { type: 'boolean', default: false },
        updated_at: { type: 'timestamptz' }
      }
    })
    const Person = new EntitySchema({
      name: 'Person',
      schema: 'dl_resolved',
      tableName: 'people',
      columns: {
        identity_key: { type: 'text', primary: true },
        display_name: { type: 'text', nullable: true },
        status: { type: 'text', nullable: true },
        raw_payload: { type: 'jsonb' },
        updated_at: { type: 'timestamptz' }
      }
    })
    // The app: the pooled URIs (PgBouncer, transaction mode); poolSize at most 10 per process.
    const read = new DataSource({ type: 'postgres', url: process.env.DB_URI, entities: [Person], poolSize: 4 })
    const write = new DataSource({ type: 'postgres', url: process.env.DB_OVERRIDE_URI, entities: [PersonOverride, Person], poolSize: 4 })
    await read.initialize()
    await write.initialize()
    const people = () => read.getRepository(Person).find({
      select: { identity_key: true, display_name: true }, order: { updated_at: 'DESC' }, take: 20
    })
    // INSERT ... ON CONFLICT (identity_key) DO UPDATE; jsonb columns take plain objects
    const upsert = (key, status, identityPatch, rawPatch) => write.getRepository(PersonOverride).upsert({
      identity_key: key,
      status,
      identity_payload_patch: identityPatch,
      raw_payload_patch: rawPatch,
      tombstoned: false,
      updated_at: () => 'now()'
    }, ['identity_key'])
    // end recipe
    const out = await readLoop(() => people())
    const { row, upsertError } = await upsertTwice(TOOL, upsert, async (key) => await write.getRepository(Person).findOne({ where: { identity_key: key } }))
    await read.destroy()
    await write.destroy()
    report({ tool: TOOL, ...out, upsert_ok: checkResolved(TOOL, row, 'reviewed'), upsert_error: upsertError, resolved: row })
  }
})
