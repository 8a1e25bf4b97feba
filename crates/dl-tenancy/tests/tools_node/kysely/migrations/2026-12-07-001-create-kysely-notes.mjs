export async function up (db) {
  await db.schema.createTable('kysely_notes')
    .addColumn('id', 'serial', (c) => c.primaryKey())
    .addColumn('body', 'text', (c) => c.notNull())
    .execute()
}

export async function down (db) {
  await db.schema.dropTable('kysely_notes').execute()
}
