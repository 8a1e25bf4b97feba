# The first migration: a table of the app's own, created unqualified (it lands in
# tenant_custom, the first schema of the override login's search_path).
class CreateWidgets < ActiveRecord::Migration[6.1]
  def change
    create_table :widgets do |t|
      t.string :name, null: false
      t.timestamps
    end
  end
end
