// Prisma 7 client with @prisma/adapter-pg (client generated offline from prisma/schema.prisma
// by install.sh), the seed's read 200 times over a pool of 4 and the seed's upsert (native
// INSERT ... ON CONFLICT, Json fields) through the pooled URIs. No migrations: `prisma
// migrate` needs the schema engine binary, which only binaries.prisma.sh serves.
import { createRequire } from 'node:module'
import { checkResolved, main, readLoop, report, upsertTwice } from './common.mjs'

const TOOL = 'prisma'
const require = createRequire(process.env.DL_PRISMA_MODULES + '/')
const { PrismaClient } = require('@prisma/client')
const { PrismaPg } = require('@prisma/adapter-pg')

await main(TOOL, {
  async app () {
    // recipe: Prisma
    // The app: the pooled URIs (PgBouncer, transaction mode) through node-postgres (it reads
    // sslmode=verify-full and sslrootcert from the URI); max at most 10 per process.
    const read = new PrismaClient({ adapter: new PrismaPg({ connectionString: process.env.DB_URI, max: 4 }) })
    const write = new PrismaClient({ adapter: new PrismaPg({ connectionString: process.env.DB_OVERRIDE_URI, max: 4 }) })
    const latest = () => read.person.findMany({
      select: { identity_key: true, display_name: true }, orderBy: { updated_at: 'desc' }, take: 20
    })
    // Json fields take plain objects; an upsert on the primary key alone runs as
    // INSERT ... ON CONFLICT (identity_key) DO UPDATE
    const upsert = (key, status, identityPatch, rawPatch) => {
      const values = { status, identity_payload_patch: identityPatch, raw_payload_patch: rawPatch, tombstoned: false, updated_at: new Date() }
      return write.personOverride.upsert({ where: { identity_key: key }, create: { identity_key: key, ...values }, update: values })
    }
    // end recipe
    const out = await readLoop(() => latest())
    const { row, upsertError } = await upsertTwice(TOOL, upsert, async (key) => await write.person.findUnique({ where: { identity_key: key } }))
    await read.$disconnect()
    await write.$disconnect()
    report({ tool: TOOL, ...out, upsert_ok: checkResolved(TOOL, row, 'reviewed'), upsert_error: upsertError, resolved: row })
  }
})
