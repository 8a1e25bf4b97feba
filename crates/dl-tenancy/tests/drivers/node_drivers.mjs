// Popular Node.js drivers with their default settings against one revealed URI (see
// python_drivers.py for the environment, the data and the JSON lines printed).
//   node-postgres (pg): parameterized queries (unnamed statements) and named statements
//   postgres.js: tagged templates, prepared (named) by default
// TLS: node-postgres reads sslmode and sslrootcert from the revealed URI; postgres.js takes
// neither (it would send sslrootcert to the server as a setting), so they are moved into its
// `ssl` option (postgresJsArgs). Each driver is also given DL_FOREIGN_CA as the CA once and
// must be refused.
import { createRequire } from 'node:module'
import { readFileSync } from 'node:fs'

const require = createRequire(process.env.DL_NODE_MODULES + '/')
const pg = require('pg')
const postgres = require('postgres')

const URI = process.env.DL_URI
const KEYS = Number(process.env.DL_KEYS)
const FOREIGN_CA = process.env.DL_FOREIGN_CA
const CLIENTS = 4
const READS = 120
const POINT_READ = 'SELECT identity_key, display_name FROM dl_resolved.people WHERE identity_key = $1'

// The same fixed-seed key sequence per client on every run (a small LCG).
function keysFor (client) {
  let x = client + 1
  return Array.from({ length: READS }, () => {
    x = (x * 1103515245 + 12345) % 2147483648
    return x % KEYS
  })
}

// The revealed URI with another CA file as sslrootcert.
function withForeignCa (uri) {
  const url = new URL(uri)
  url.searchParams.set('sslrootcert', FOREIGN_CA)
  return url.toString()
}

// postgres.js: the URI without sslmode/sslrootcert, and the `ssl` option that checks the same:
// the chain to the revealed CA, and the host. postgres.js gives Node no name to check when the
// host is an IP address (Node would check "localhost"), hence `host`.
function postgresJsArgs (uri) {
  const url = new URL(uri)
  const ca = readFileSync(url.searchParams.get('sslrootcert'), 'utf8')
  if (url.searchParams.get('sslmode') !== 'verify-full') throw new Error('expected verify-full')
  url.searchParams.delete('sslmode')
  url.searchParams.delete('sslrootcert')
  return [url.toString(), { ssl: { ca, host: url.hostname, rejectUnauthorized: true } }]
}

// How a connection with the foreign CA ends: null when it got in, else the error.
async function foreignCaError (connectOnce) {
  try {
    await connectOnce(withForeignCa(URI))
    return null
  } catch (e) {
    return e
  }
}

function tally (driver) {
  return {
    driver, queries: 0, errors: 0, wrong: 0, first_error: null, foreign_ca_refused: null,
    foreignCa (e) {
      this.foreign_ca_refused = e !== null && /certificate/i.test(String(e))
      if (e !== null && !this.foreign_ca_refused) this.first_error ??= 'foreign CA: ' + String(e).slice(0, 300)
    },
    read (i, row) {
      this.queries++
      if (!row || row.identity_key !== `person:${i}` || row.display_name !== `Name ${i}`) this.wrong++
    },
    error (e) {
      this.queries++
      this.errors++
      this.first_error ??= String(e).slice(0, 300)
    },
    report () {
      const { read, error, report, foreignCa, ...out } = this
      console.log(JSON.stringify(out))
    }
  }
}

async function nodePostgres (named) {
  const t = tally(named ? 'node-postgres named' : 'node-postgres')
  const pool = new pg.Pool({ connectionString: URI, max: CLIENTS })
  await Promise.all(Array.from({ length: CLIENTS }, async (_, c) => {
    for (const i of keysFor(c)) {
      try {
        const query = named
          ? { name: 'point-read', text: POINT_READ, values: [`person:${i}`] }
          : { text: POINT_READ, values: [`person:${i}`] }
        const { rows } = await pool.query(query)
        t.read(i, rows[0])
      } catch (e) {
        t.error(e)
      }
    }
  }))
  await pool.end()
  t.foreignCa(await foreignCaError(async (uri) => {
    const client = new pg.Client({ connectionString: uri })
    await client.connect()
    await client.end()
  }))
  t.report()
}

async function postgresJs () {
  const t = tally('postgres.js')
  const [url, options] = postgresJsArgs(URI)
  const sql = postgres(url, { ...options, max: CLIENTS, onnotice: () => {} })
  await Promise.all(Array.from({ length: CLIENTS }, async (_, c) => {
    for (const i of keysFor(c)) {
      try {
        const rows = await sql`SELECT identity_key, display_name FROM dl_resolved.people WHERE identity_key = ${`person:${i}`}`
        t.read(i, rows[0])
      } catch (e) {
        t.error(e)
      }
    }
  }))
  await sql.end()
  t.foreignCa(await foreignCaError(async (uri) => {
    const [url, options] = postgresJsArgs(uri)
    const other = postgres(url, { ...options, max: 1, onnotice: () => {} })
    try {
      await other`SELECT 1`
    } finally {
      await other.end()
    }
  }))
  t.report()
}

await nodePostgres(false)
await nodePostgres(true)
await postgresJs()
