module.exports = class AddTypeormNotesAuthor1796601600002 {
  async up (queryRunner) {
    await queryRunner.query('ALTER TABLE "typeorm_notes" ADD "author" text')
  }

  async down (queryRunner) {
    await queryRunner.query('ALTER TABLE "typeorm_notes" DROP COLUMN "author"')
  }
}
