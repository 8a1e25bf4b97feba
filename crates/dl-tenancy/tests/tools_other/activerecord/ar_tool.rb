# Rails' ActiveRecord (Debian 12: ruby-activerecord, ruby-pg) against a workspace, with its
# defaults: `migrate` runs db/migrate/ through MigrationContext (as `rails db:migrate` does,
# advisory lock on); `app` reads the seed's query 200 times over 4 pooled connections and
# does the seed's upsert through a model. Prints one JSON line.
#
# Env: DATABASE_URL (override login; direct URI for `migrate`), READ_DATABASE_URL (read login),
# DL_KEY (the key the upsert writes).
require "json"
require "active_record"

mode = ARGV.fetch(0)
sql = []
applied = []
ActiveSupport::Notifications.subscribe("sql.active_record") do |*, p|
  sql << p[:sql]
  if p[:sql].start_with?('INSERT INTO "schema_migrations"')
    applied.concat(p[:binds].map { |b| b.value.to_s })
  end
end

if mode == "migrate"
  # recipe: Rails ActiveRecord migrations
  # The override login's DIRECT URI: ActiveRecord holds a session advisory lock while it
  # migrates, and through the transaction pooler another client may share that session.
  # (In a Rails app: config/database.yml `url: <%= ENV["DATABASE_URL"] %>`, `rails db:migrate`.)
  ActiveRecord::Base.establish_connection(ENV.fetch("DATABASE_URL"))
  migrations = ActiveRecord::MigrationContext.new("db/migrate", ActiveRecord::SchemaMigration)
  migrations.migrate
  # end recipe
  after = migrations.get_all_versions
  puts JSON.generate(
    tool: "activerecord", mode: "migrate",
    applied: applied, versions: after.map(&:to_s),
    current_schema: ActiveRecord::Base.connection.select_value("SELECT current_schema()"),
    advisory_lock: sql.any? { |s| s.include?("pg_try_advisory_lock") },
    advisory_unlock: sql.any? { |s| s.include?("pg_advisory_unlock") }
  )
  exit 0
end

if mode == "connect"
  # Only connects (the test points sslrootcert at another CA: this must be refused).
  begin
    ActiveRecord::Base.establish_connection(ENV.fetch("DATABASE_URL"))
    ActiveRecord::Base.connection.select_value("SELECT 1")
    puts JSON.generate(tool: "activerecord", mode: "connect", connected: true)
  rescue StandardError => e
    puts JSON.generate(tool: "activerecord", mode: "connect", connected: false, error: e.message)
  end
  exit 0
end

raise "unknown mode #{mode}" unless mode == "app"

# recipe: Rails ActiveRecord models
# Reads with the read login, overrides with the override login (both pooled URIs; prepared
# statements, ActiveRecord's default, work through the pooler).
class ApplicationRecord < ActiveRecord::Base
  self.abstract_class = true
  establish_connection(ENV.fetch("READ_DATABASE_URL"))
end

class Person < ApplicationRecord
  self.table_name = "dl_resolved.people"
end

class OverrideRecord < ActiveRecord::Base
  self.abstract_class = true
  establish_connection(ENV.fetch("DATABASE_URL"))
end

class PersonOverride < OverrideRecord
  self.table_name = "dl_override.person_overrides"
end

def latest_people
  Person.order(updated_at: :desc).limit(20).pluck(:identity_key, :display_name)
end

def correct_person(key, name)
  PersonOverride.upsert(
    { identity_key: key, status: "verified",
      identity_payload_patch: { display_name: name }, raw_payload_patch: { source: "app" },
      tombstoned: false, updated_at: Time.now },
    unique_by: :identity_key
  )
end
# end recipe

# A row is right when its name is the one the test gave its key: `person:N` -> `Name N`,
# `person:<tool>` -> `Written by <tool>`.
def right?(key, name)
  if (m = /\Aperson:(\d+)\z/.match(key))
    name == "Name #{m[1]}"
  else
    name == "Written by #{key.delete_prefix('person:')}"
  end
end

queries = 0
errors = []
wrong = 0
lock = Mutex.new
threads = 4.times.map do
  Thread.new do
    50.times do
      ApplicationRecord.connection_pool.with_connection do
        rows = latest_people
        bad = rows.length != 20 ? 1 : rows.count { |k, n| !right?(k, n) }
        lock.synchronize { queries += 1; wrong += bad }
      end
    rescue StandardError => e
      lock.synchronize { errors << "#{e.class}: #{e.message}" }
    end
  end
end
threads.each(&:join)
connections = ApplicationRecord.connection_pool.connections.length
prepared_statements = ApplicationRecord.connection.prepared_statements

key = ENV.fetch("DL_KEY")
upsert_error = nil
resolved = nil
begin
  correct_person(key, "Written by draft")
  correct_person(key, "Written by #{key.delete_prefix('person:')}")
  resolved = Person.where(identity_key: key).pick(:display_name, :identity_payload, :status)
rescue StandardError => e
  upsert_error = "#{e.class}: #{e.message}"
end
puts JSON.generate(
  tool: "activerecord", mode: "app", queries: queries, errors: errors.length,
  first_error: errors.first, wrong: wrong, connections: connections, prepared_statements: prepared_statements,
  upsert_error: upsert_error,
  resolved_name: resolved && resolved[0],
  resolved_payload_name: resolved && resolved[1].is_a?(Hash) ? resolved[1]["display_name"] : nil,
  resolved_status: resolved && resolved[2]
)
