module.exports = class CreateTypeormNotes1796601600001 {
  async up (queryRunner) {
    await queryRunner.query('CREATE TABLE "typeorm_notes" ("id" SERIAL PRIMARY KEY, "body" text NOT NULL)')
  }

  async down (queryRunner) {
    await queryRunner.query('DROP TABLE "typeorm_notes"')
  }
}
