'use strict'
// As in the first migration: without the schema, addColumn sends ALTER TABLE "public"."...".
const table = { tableName: 'sequelize_notes', schema: 'tenant_custom' }
module.exports = {
  async up (queryInterface, Sequelize) {
    await queryInterface.addColumn(table, 'author', { type: Sequelize.TEXT })
  },
  async down (queryInterface) {
    await queryInterface.removeColumn(table, 'author')
  }
}
