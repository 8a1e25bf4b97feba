exports.up = (knex) => knex.schema.alterTable('knex_notes', (t) => {
  t.text('author')
})
exports.down = (knex) => knex.schema.alterTable('knex_notes', (t) => {
  t.dropColumn('author')
})
