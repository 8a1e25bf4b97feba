// postgres.js: a pool of 4 with the pooled URIs, the seed's read 200 times (tagged templates,
// prepared by default) and the seed's upsert (sql.json parameters). No migration tool.
import { readFileSync } from 'node:fs'
import { checkResolved, main, readLoop, report, require, upsertTwice } from './common.mjs'

const TOOL = 'postgres.js'
const postgres = require('postgres')

await main(TOOL, {
  async app () {
    // recipe: postgres.js
    // postgres.js takes neither sslmode nor sslrootcert from the URI (it would send sslrootcert
    // to the server as a setting): drop both and give the revealed CA and the host to check.
    const connect = (uri) => {
      const url = new URL(uri)
      const ca = readFileSync(url.searchParams.get('sslrootcert'), 'utf8')
      url.searchParams.delete('sslmode')
      url.searchParams.delete('sslrootcert')
      return postgres(url.toString(), { ssl: { ca, host: url.hostname, rejectUnauthorized: true }, max: 4 })
    }
    const read = connect(process.env.DB_URI)
    const write = connect(process.env.DB_OVERRIDE_URI)
    const latest = () => read`SELECT identity_key, display_name FROM dl_resolved.people ORDER BY updated_at DESC LIMIT 20`
    // jsonb: sql.json(obj)
    const upsert = (key, status, identityPatch, rawPatch) => write`
      INSERT INTO dl_override.person_overrides
        (identity_key, status, identity_payload_patch, raw_payload_patch, tombstoned, updated_at)
      VALUES (${key}, ${status}, ${write.json(identityPatch)}, ${write.json(rawPatch)}, false, now())
      ON CONFLICT (identity_key) DO UPDATE
      SET status = EXCLUDED.status,
          identity_payload_patch = EXCLUDED.identity_payload_patch,
          raw_payload_patch = EXCLUDED.raw_payload_patch,
          tombstoned = false,
          updated_at = now()`
    // end recipe
    const out = await readLoop(() => latest())
    const { row, upsertError } = await upsertTwice(TOOL, upsert, async (key) => (await write`SELECT display_name, status, raw_payload FROM dl_resolved.people WHERE identity_key = ${key}`)[0])
    await read.end()
    await write.end()
    report({ tool: TOOL, ...out, upsert_ok: checkResolved(TOOL, row, 'reviewed'), upsert_error: upsertError, resolved: row })
  }
})
