// Popular Node.js drivers with their default settings against one revealed URI (see
// python_drivers.py for the environment, the data and the JSON lines printed).
//   node-postgres (pg): parameterized queries (unnamed statements) and named statements
//   postgres.js: tagged templates, prepared (named) by default
import { createRequire } from 'node:module'

const require = createRequire(process.env.DL_NODE_MODULES + '/')
const pg = require('pg')
const postgres = require('postgres')

const URI = process.env.DL_URI
const KEYS = Number(process.env.DL_KEYS)
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

function tally (driver) {
  return {
    driver, queries: 0, errors: 0, wrong: 0, first_error: null,
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
      const { read, error, report, ...out } = this
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
  t.report()
}

async function postgresJs () {
  const t = tally('postgres.js')
  const sql = postgres(URI, { max: CLIENTS, onnotice: () => {} })
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
  t.report()
}

await nodePostgres(false)
await nodePostgres(true)
await postgresJs()
