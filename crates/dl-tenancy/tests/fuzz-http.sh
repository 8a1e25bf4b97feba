#!/usr/bin/env bash
# Property-based fuzzing of a running `dl-tenancy serve` against its OpenAPI document with
# schemathesis (bounded and repeatable: deterministic generation, a fixed number of examples
# per operation, a time limit).
#
#   DL_TENANCY_FUZZ_URL=http://127.0.0.1:8080 DL_TENANCY_FUZZ_TOKEN=dlt_... \
#       crates/dl-tenancy/tests/fuzz-http.sh
#
# The token's workspace should be provisioned (then every valid request can succeed). Run by
# `cargo test -p dl-tenancy --test http schemathesis` (which starts a server for it). Every
# check is on: no 5xx, statuses/headers/bodies as documented, auth enforced, 405 for
# undocumented methods, invalid input rejected, valid input accepted.
#
# schemathesis is installed from PyPI into a venv under ~/.cache/dl-tenancy (once). When
# python3 or the install is unavailable: under CI (CI=true) exits 1, elsewhere exits 0 after a
# loud "SKIP fuzz-http: ..." line on stderr. Exits 1 when a check fails.
set -euo pipefail

# Cannot run: a failure under CI, a loud skip elsewhere.
cannot_run() {
    if [ "${CI:-}" = "true" ]; then
        echo "FAIL fuzz-http: $1 (CI=true: a missing tool or dependency is a failure)" >&2
        exit 1
    fi
    echo "SKIP fuzz-http: $1" >&2
    echo "fuzz-http: schemathesis did NOT run; with CI=true this fails instead." >&2
    exit 0
}

: "${DL_TENANCY_FUZZ_URL:?set DL_TENANCY_FUZZ_URL to the server, e.g. http://127.0.0.1:8080}"
: "${DL_TENANCY_FUZZ_TOKEN:?set DL_TENANCY_FUZZ_TOKEN to a token (dl-tenancy tokens create)}"
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
MAX_EXAMPLES="${DL_TENANCY_FUZZ_MAX_EXAMPLES:-100}"
# A hard limit of the whole run (schemathesis itself stops after MAX_EXAMPLES per operation).
TIME_LIMIT="${DL_TENANCY_FUZZ_TIME_LIMIT:-300}"
VENV="${DL_TENANCY_FUZZ_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/dl-tenancy/schemathesis-$SCHEMATHESIS_VERSION}"

if ! command -v python3 >/dev/null 2>&1; then
    cannot_run "python3 is not installed (apt-get install python3 python3-venv)"
fi
st="$VENV/bin/schemathesis"
if ! "$st" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    echo "fuzz-http: installing schemathesis $SCHEMATHESIS_VERSION into $VENV" >&2
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    if ! python3 -m venv "$VENV" >&2 \
        || ! "$VENV/bin/pip" install --quiet --disable-pip-version-check \
            "schemathesis==$SCHEMATHESIS_VERSION" >&2; then
        rm -rf "$VENV"
        cannot_run "cannot install schemathesis $SCHEMATHESIS_VERSION from PyPI (python3-venv missing or offline)"
    fi
fi

report_dir="${DL_TENANCY_FUZZ_REPORT_DIR:-$(mktemp -d)}"
echo "fuzz-http: schemathesis $SCHEMATHESIS_VERSION against $DL_TENANCY_FUZZ_URL ($MAX_EXAMPLES examples per operation, deterministic, at most ${TIME_LIMIT}s); reports in $report_dir" >&2
# schemathesis keeps a cache (.schemathesis/) in the working directory: keep it with the reports.
mkdir -p "$report_dir"
cd "$report_dir"
exec timeout --kill-after=10 "$TIME_LIMIT" "$st" run "$DL_TENANCY_FUZZ_URL/api/v2/openapi.json" \
    --url "$DL_TENANCY_FUZZ_URL" \
    --header "Authorization: Bearer $DL_TENANCY_FUZZ_TOKEN" \
    --checks all \
    --mode all \
    --phases examples,coverage,fuzzing \
    --max-examples "$MAX_EXAMPLES" \
    --generation-deterministic \
    --workers 2 \
    --request-timeout 30 \
    --no-color \
    --output-sanitize true \
    --report junit --report-dir "$report_dir"
