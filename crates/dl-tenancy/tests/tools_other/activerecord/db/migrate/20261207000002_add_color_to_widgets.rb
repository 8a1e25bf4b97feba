# The second migration: a column more.
class AddColorToWidgets < ActiveRecord::Migration[6.1]
  def change
    add_column :widgets, :color, :string
  end
end
