#!/usr/bin/env bash
# Synthesizes the example app with the repository's pinned CDK tools:
#   examples/cdk/synth.sh                         # needs `make package` (target/lambda/*/bootstrap.zip)
#   STREAMLOAD_CODE_STUB=1 examples/cdk/synth.sh  # without a release build (a stub stands in)
# Context: -c streamArn=... -c databaseSecretArn=... -c alarmEmail=... (passed through).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$ROOT/scripts/cdk-tools.sh"
cd "$ROOT/examples/cdk"
"$CDK_DIR/node_modules/.bin/tsc" -p .
"$CDK" synth --no-notices --quiet -o "$ROOT/examples/cdk/cdk.out" "$@"
echo "cdk synth: examples/cdk/cdk.out/StreamloadExample.template.json"
