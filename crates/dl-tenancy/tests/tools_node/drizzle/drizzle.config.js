// recipe: drizzle-kit
// drizzle.config.js: `npx drizzle-kit migrate` through the override login's DIRECT URI
// (node-postgres reads sslmode=verify-full and sslrootcert from it). Tables of schema.js are
// created unqualified, so they land in tenant_custom (the first schema of the search path).
module.exports = {
  dialect: 'postgresql',
  schema: './schema.js',
  out: './migrations',
  dbCredentials: { url: process.env.DATABASE_URL },
  // drizzle-kit keeps __drizzle_migrations in a schema "drizzle" it creates first; a
  // workspace login may create no schema but tenant_custom, so keep the table there.
  migrations: { schema: 'tenant_custom' }
}
// end recipe
