// sequelize 6 + sequelize-cli: `sequelize-cli db:migrate` twice (tools_node/sequelize/), then
// the seed's read (Model.findAll) 200 times over a pool of 4 and the seed's upsert
// (Model.upsert, JSONB) through the pooled URIs.
import { readFileSync } from 'node:fs'
import { checkResolved, main, project, readLoop, report, require, twice, upsertTwice } from './common.mjs'

const TOOL = 'sequelize'
const { Sequelize, DataTypes } = require('sequelize')

await main(TOOL, {
  async migrate () {
    const dir = project(TOOL)
    report({ tool: TOOL, runs: twice(dir, 'sequelize-cli', ['db:migrate']) })
  },
  async app () {
    // recipe: sequelize
    // The app: the pooled URIs (PgBouncer, transaction mode); pool.max at most 10 per process.
    // sequelize drops the URI's query string: TLS (verify-full) from the revealed CA file.
    const connect = (uri) => new Sequelize(uri, {
      logging: false,
      pool: { max: 4 },
      dialectOptions: { ssl: { ca: readFileSync(new URL(uri).searchParams.get('sslrootcert'), 'utf8'), rejectUnauthorized: true } }
    })
    const read = connect(process.env.DB_URI)
    const write = connect(process.env.DB_OVERRIDE_URI)
    const person = {
      identity_key: { type: DataTypes.TEXT, primaryKey: true },
      display_name: DataTypes.TEXT,
      status: DataTypes.TEXT,
      raw_payload: DataTypes.JSONB,
      updated_at: DataTypes.DATE
    }
    const options = { schema: 'dl_resolved', tableName: 'people', timestamps: false }
    const Person = read.define('Person', person, options)
    const WrittenPerson = write.define('Person', person, options)
    const PersonOverride = write.define('PersonOverride', {
      identity_key: { type: DataTypes.TEXT, primaryKey: true },
      status: DataTypes.TEXT,
      identity_payload_patch: DataTypes.JSONB,
      raw_payload_patch: DataTypes.JSONB,
      tombstoned: DataTypes.BOOLEAN,
      updated_at: DataTypes.DATE
    }, { schema: 'dl_override', tableName: 'person_overrides', timestamps: false })
    const people = () => Person.findAll({
      attributes: ['identity_key', 'display_name'], order: [['updated_at', 'DESC']], limit: 20, raw: true
    })
    // INSERT ... ON CONFLICT (identity_key) DO UPDATE; JSONB attributes take plain objects
    const upsert = (key, status, identityPatch, rawPatch) => PersonOverride.upsert({
      identity_key: key,
      status,
      identity_payload_patch: identityPatch,
      raw_payload_patch: rawPatch,
      tombstoned: false,
      updated_at: write.fn('now')
    })
    // end recipe
    const out = await readLoop(() => people())
    const { row, upsertError } = await upsertTwice(TOOL, upsert, async (key) => await WrittenPerson.findByPk(key, { raw: true }))
    await read.close()
    await write.close()
    report({ tool: TOOL, ...out, upsert_ok: checkResolved(TOOL, row, 'reviewed'), upsert_error: upsertError, resolved: row })
  }
})
