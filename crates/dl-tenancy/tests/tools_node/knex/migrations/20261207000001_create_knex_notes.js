exports.up = (knex) => knex.schema.createTable('knex_notes', (t) => {
  t.increments('id')
  t.text('body').notNullable()
})
exports.down = (knex) => knex.schema.dropTable('knex_notes')
