'use strict'
// sequelize's queryInterface names public.<table> for a plain table name in addColumn,
// removeColumn, changeColumn, ... (createTable alone goes unqualified): give tenant_custom.
const table = { tableName: 'sequelize_notes', schema: 'tenant_custom' }
module.exports = {
  async up (queryInterface, Sequelize) {
    await queryInterface.createTable(table, {
      id: { type: Sequelize.INTEGER, autoIncrement: true, primaryKey: true, allowNull: false },
      body: { type: Sequelize.TEXT, allowNull: false }
    })
  },
  async down (queryInterface) {
    await queryInterface.dropTable(table)
  }
}
