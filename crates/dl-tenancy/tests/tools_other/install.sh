#!/usr/bin/env bash
# Installs what tests/tools_other.rs runs, once, and prints the cache directory: Debian 12's
# packages for Rails' ActiveRecord (ruby, ruby-pg, ruby-activerecord), Go with pgx v4
# (golang-go, golang-github-jackc-pgx-v4-dev, built in GOPATH mode: no module proxy), JDBC
# (openjdk-17-jdk-headless, libpostgresql-jdbc-java) and PHP PDO (php-cli, php-pgsql); then
# builds the Go and Java programs of this directory into the cache (again only when their
# source changed). Versions are Debian 12's (pinned by the release); apt-get update runs only
# when a package is missing.
#
# Exits non-zero when something cannot be installed: the Rust test then fails under CI=true
# and skips loudly elsewhere.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${DL_TENANCY_TOOLS_OTHER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dl-tenancy/tools-other-1}"
pkgs=(ruby ruby-pg ruby-activerecord golang-go golang-github-jackc-pgx-v4-dev
      openjdk-17-jdk-headless libpostgresql-jdbc-java php-cli php-pgsql)

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo > /dev/null || { echo "tools_other: not root and no sudo to install ${missing[*]}" >&2; exit 1; }
        sudo=(sudo -n)
    fi
    echo "tools_other: installing ${missing[*]}" >&2
    # Other installs may hold dpkg's lock: wait for it rather than fail.
    lock=(-o DPkg::Lock::Timeout=600)
    "${sudo[@]}" apt-get "${lock[@]}" update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get "${lock[@]}" install -y -qq \
        --no-install-recommends "${missing[@]}" >&2
fi

mkdir -p "$dir"
# Go: pgx v4 from Debian's source packages in /usr/share/gocode, GOPATH mode.
go_src="$here/pgx_tool.go"
go_sum="$(sha256sum "$go_src" | cut -d' ' -f1)"
if [ ! -x "$dir/pgx_tool" ] || [ "$(cat "$dir/pgx_tool.sha256" 2>/dev/null)" != "$go_sum" ]; then
    echo "tools_other: building pgx_tool" >&2
    mkdir -p "$dir/gopath/src/pgx_tool" "$dir/gocache"
    cp "$go_src" "$dir/gopath/src/pgx_tool/main.go"
    (cd "$dir/gopath/src/pgx_tool" && GO111MODULE=off GOPROXY=off \
        GOPATH="/usr/share/gocode:$dir/gopath" GOCACHE="$dir/gocache" \
        go build -o "$dir/pgx_tool" . >&2)
    echo "$go_sum" > "$dir/pgx_tool.sha256"
fi
# Java: pgjdbc from /usr/share/java.
java_src="$here/JdbcTool.java"
java_sum="$(sha256sum "$java_src" | cut -d' ' -f1)"
if [ ! -f "$dir/java/JdbcTool.class" ] || [ "$(cat "$dir/java.sha256" 2>/dev/null)" != "$java_sum" ]; then
    echo "tools_other: compiling JdbcTool.java" >&2
    rm -rf "$dir/java" && mkdir -p "$dir/java"
    javac -d "$dir/java" -cp /usr/share/java/postgresql.jar "$java_src" >&2
    echo "$java_sum" > "$dir/java.sha256"
fi
ruby -e 'require "pg"; require "active_record"' >&2
php -r 'exit(in_array("pgsql", PDO::getAvailableDrivers()) ? 0 : 1);' \
    || { echo "tools_other: PHP has no pdo_pgsql" >&2; exit 1; }
echo "$dir"
