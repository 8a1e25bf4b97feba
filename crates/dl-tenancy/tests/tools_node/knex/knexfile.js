// recipe: knex
// knexfile.js: migrations go through the override login's DIRECT URI (knex's lock row is a
// table, but migrations belong on a real session); node-postgres reads sslmode=verify-full
// and sslrootcert from the URI. knex_migrations and knex_migrations_lock land in
// current_schema(), which is tenant_custom for the override login.
module.exports = {
  client: 'pg',
  connection: process.env.DATABASE_URL,
  migrations: { directory: './migrations' }
}
// end recipe
