// The app's own tables (tenant_custom), for drizzle-kit generate; migrations/ holds what it
// generated: 0000 the table, 0001 the author column.
const { pgTable, serial, text } = require('drizzle-orm/pg-core')

exports.drizzleNotes = pgTable('drizzle_notes', {
  id: serial('id').primaryKey(),
  body: text('body').notNull(),
  author: text('author')
})
