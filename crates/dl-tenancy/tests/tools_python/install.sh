#!/usr/bin/env bash
# Installs the Python tools the tools_python test runs, once, into a cache directory, and
# prints the directory: a venv with Django, Alembic, SQLAlchemy 2, pandas, psycopg 3 and
# asyncpg at pinned versions (the drivers the driver test pins, the tools on top). Re-runs
# reuse what is there.
#
# Exits non-zero when something cannot be installed (python3-venv missing, registry
# unreachable): the Rust test then fails under CI=true and skips loudly elsewhere.
set -euo pipefail
dir="${DL_TENANCY_TOOLS_PYTHON_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dl-tenancy/tools-python-1}"
pkgs=(
    "psycopg[binary]==3.2.13" "asyncpg==0.30.0" "sqlalchemy==2.0.44"
    "django==5.2.20" "alembic==1.17.2" "pandas==2.3.3" "numpy==2.3.5"
)

mkdir -p "$dir"
if ! "$dir/venv/bin/python" -c 'import psycopg, asyncpg, sqlalchemy, django, alembic, pandas' 2>/dev/null; then
    echo "tools_python: installing ${pkgs[*]} into $dir/venv" >&2
    rm -rf "$dir/venv"
    python3 -m venv "$dir/venv" >&2
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: "${pkgs[@]}" >&2
fi
echo "$dir"
