#!/usr/bin/env bash
# The CDK tools, pinned by infra/cdk/package-lock.json, installed once into infra/cdk/node_modules
# (git-ignored), then the construct compiled. Sourced by infra-check.sh and examples/cdk/synth.sh.
set -euo pipefail
CDK_DIR="$ROOT/infra/cdk"
STAMP="$CDK_DIR/node_modules/.streamload-lock"
lock=$(sha256sum "$CDK_DIR/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$lock" ]; then
  echo "install: CDK tools into infra/cdk/node_modules (aws-cdk-lib, aws-cdk, typescript: package-lock.json)"
  (cd "$CDK_DIR" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null)
  echo "$lock" >"$STAMP"
fi
# The construct as a package the example resolves (`import ... from "streamload-cdk"`).
ln -sfn .. "$CDK_DIR/node_modules/streamload-cdk"
"$CDK_DIR/node_modules/.bin/tsc" -p "$CDK_DIR"
export CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=true NODE_PATH="$CDK_DIR/node_modules"
CDK="$CDK_DIR/node_modules/.bin/cdk"
