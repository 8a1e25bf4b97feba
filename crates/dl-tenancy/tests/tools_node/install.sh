#!/usr/bin/env bash
# Installs the Node.js migration tools and ORMs tools_node.rs runs, once, into a cache
# directory, and prints the directory. Pinned versions; re-runs reuse what is there.
#   $dir/node/node_modules: knex, TypeORM, sequelize + sequelize-cli, Kysely, drizzle-orm +
#     drizzle-kit, node-postgres (pg) and postgres.js
#   $dir/prisma/node_modules: prisma + @prisma/client + @prisma/adapter-pg, and a client
#     generated from tools_node/prisma/schema.prisma, if that works offline (PRISMA_OK or
#     PRISMA_FAILED in $dir/prisma/status says which, with the reason)
#
# Exits non-zero when the main set cannot be installed (node missing, registry unreachable):
# the Rust test then fails under CI=true and skips loudly elsewhere.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${DL_TENANCY_TOOLS_NODE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dl-tenancy/tools-node-1}"
node_pkgs=(
    "knex@3.3.0" "typeorm@1.1.4" "reflect-metadata@0.2.2" "sequelize@6.37.8"
    "sequelize-cli@6.6.5" "kysely@0.29.9" "drizzle-orm@0.45.4" "drizzle-kit@0.31.11"
    "pg@8.16.3" "postgres@3.4.7"
)
prisma_pkgs=("prisma@7.10.1" "@prisma/client@7.10.1" "@prisma/adapter-pg@7.10.1" "pg@8.16.3")

command -v npm > /dev/null || { echo "tools_node: npm is not installed (scripts/setup installs it)" >&2; exit 1; }
mkdir -p "$dir"
if [ ! -f "$dir/node/installed" ]; then
    echo "tools_node: installing ${node_pkgs[*]} into $dir/node" >&2
    rm -rf "$dir/node"
    mkdir -p "$dir/node"
    (cd "$dir/node" && npm init -y > /dev/null \
        && npm install --silent --no-audit --no-fund --omit=dev --omit=optional "${node_pkgs[@]}" >&2)
    touch "$dir/node/installed"
fi
# A failed npm install is tried again on the next run; a failed generate is kept.
if [ ! -f "$dir/prisma/status" ] || grep -q "^PRISMA_FAILED npm install" "$dir/prisma/status"; then
    echo "tools_node: installing ${prisma_pkgs[*]} into $dir/prisma" >&2
    rm -rf "$dir/prisma"
    mkdir -p "$dir/prisma"
    status=PRISMA_OK
    if ! (cd "$dir/prisma" && npm init -y > /dev/null \
        && npm install --silent --no-audit --no-fund --omit=dev "${prisma_pkgs[@]}" >&2) 2> "$dir/prisma/install.log"; then
        status="PRISMA_FAILED npm install: $(tail -5 "$dir/prisma/install.log" | tr '\n' ' ')"
    else
        cp "$here/prisma/schema.prisma" "$dir/prisma/schema.prisma"
        # The CLI downloads its schema engine (migrate, db pull) from binaries.prisma.sh before
        # any command, which cannot be reached here; generate never runs it (the client's query
        # compiler is Wasm, in the npm package), so any file as the engine's path skips that.
        if ! (cd "$dir/prisma" && PRISMA_SCHEMA_ENGINE_BINARY="$(type -P false)" \
            timeout 120 npx --no-install prisma generate --schema schema.prisma) > "$dir/prisma/generate.log" 2>&1; then
            status="PRISMA_FAILED prisma generate: $(tail -5 "$dir/prisma/generate.log" | tr '\n' ' ')"
        fi
    fi
    echo "$status" > "$dir/prisma/status"
fi
echo "$dir"
