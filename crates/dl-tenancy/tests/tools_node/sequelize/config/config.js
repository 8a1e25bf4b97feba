// recipe: sequelize-cli
// config/config.js (with .sequelizerc pointing here): the override login's DIRECT URI for
// `npx sequelize-cli db:migrate`. SequelizeMeta lands in current_schema() = tenant_custom.
const { readFileSync } = require('fs')
const url = new URL(process.env.DATABASE_URL)
module.exports = {
  development: {
    url: process.env.DATABASE_URL,
    dialect: 'postgres',
    // sequelize drops the URI's query string (sslmode, sslrootcert): give TLS here, with
    // the revealed CA file (sslrootcert) as ca; node then checks the host name too.
    dialectOptions: { ssl: { ca: readFileSync(url.searchParams.get('sslrootcert'), 'utf8'), rejectUnauthorized: true } }
  }
}
// end recipe
