export async function up (db) {
  await db.schema.alterTable('kysely_notes').addColumn('author', 'text').execute()
}

export async function down (db) {
  await db.schema.alterTable('kysely_notes').dropColumn('author').execute()
}
