#!/usr/bin/env bash
# make package: the Lambda artifacts SAM deploys — the functions built for arm64
# (provided.al2023) by cargo-lambda with zig, zipped under target/lambda/<function>/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
scripts/install.sh
export PATH="$ROOT/.venv/bin:$PATH"
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
cargo lambda build --release --arm64 --output-format zip -p kinesis-loader -p kafka-loader
# The table committer on its own: its Iceberg, Arrow 58 and opendal crates are never unified
# into the loaders' build.
cargo lambda build --release --arm64 --output-format zip -p table-committer
for f in kinesis-loader kafka-loader table-committer; do
  ls -l "target/lambda/$f/bootstrap.zip"
done
