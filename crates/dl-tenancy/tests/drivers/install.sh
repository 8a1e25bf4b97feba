#!/usr/bin/env bash
# Installs the client drivers the driver tests use, once, into a cache directory, and prints
# the directory: a Python venv with psycopg 3, asyncpg and SQLAlchemy 2, and node_modules with
# node-postgres (pg) and postgres.js. Pinned versions; re-runs reuse what is there.
#
# Exits non-zero when something cannot be installed (python3-venv or node missing, registry
# unreachable): the Rust test then fails under CI=true and skips loudly elsewhere.
set -euo pipefail
dir="${DL_TENANCY_DRIVERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dl-tenancy/drivers-1}"
python_pkgs=("psycopg[binary]==3.2.13" "asyncpg==0.30.0" "sqlalchemy==2.0.44")
node_pkgs=("pg@8.16.3" "postgres@3.4.7")

mkdir -p "$dir"
if ! "$dir/venv/bin/python" -c 'import psycopg, asyncpg, sqlalchemy' 2>/dev/null; then
    echo "drivers: installing ${python_pkgs[*]} into $dir/venv" >&2
    rm -rf "$dir/venv"
    python3 -m venv "$dir/venv" >&2
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check "${python_pkgs[@]}" >&2
fi
if [ ! -d "$dir/node/node_modules/pg" ] || [ ! -d "$dir/node/node_modules/postgres" ]; then
    command -v npm > /dev/null || { echo "drivers: npm is not installed (scripts/setup installs it)" >&2; exit 1; }
    echo "drivers: installing ${node_pkgs[*]} into $dir/node" >&2
    mkdir -p "$dir/node"
    (cd "$dir/node" && npm init -y > /dev/null && npm install --silent --no-audit --no-fund "${node_pkgs[@]}" >&2)
fi
echo "$dir"
