// recipe: TypeORM
// data-source.js for the CLI (`npx typeorm migration:run -d data-source.js`): the override
// login's DIRECT URI (node-postgres reads sslmode=verify-full and sslrootcert from it). The
// "migrations" table lands in current_schema() = tenant_custom. synchronize stays off: the
// contract's schemas are the platform's.
const { DataSource } = require('typeorm')
module.exports = new DataSource({
  type: 'postgres',
  url: process.env.DATABASE_URL,
  synchronize: false,
  migrations: [__dirname + '/migrations/*.js']
})
// end recipe
