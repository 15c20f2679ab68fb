#!/usr/bin/env bash
# Offline checks of the SAM template and the CDK construct: cfn-lint, `sam validate --lint`,
# `cdk synth` of the construct's test app and of examples/cdk, and the template tests (one suite
# over both templates). Installs pinned aws-sam-cli, cfn-lint and pytest into .venv-infra and the
# CDK tools (package-lock.json) into infra/cdk/node_modules, both git-ignored, idempotently.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/.venv-infra"
PINS=("aws-sam-cli==1.170.0" "cfn-lint==1.58.0" "pytest==8.3.5")
STAMP="$VENV/.streamload-pins"
want=$(printf '%s\n' "${PINS[@]}")
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "install: template tools into .venv-infra (${PINS[*]})"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"
  printf '%s\n' "$want" >"$STAMP"
fi
cd "$ROOT"
export SAM_CLI_TELEMETRY=0
"$VENV/bin/cfn-lint" infra/template.yaml
echo "cfn-lint: infra/template.yaml ok"
"$VENV/bin/sam" validate --lint --region us-east-1 -t infra/template.yaml
# The CDK construct, offline: its test app (stub code, no release build) and the example.
source scripts/cdk-tools.sh
rm -rf infra/cdk/cdk.out examples/cdk/cdk.out
(cd infra/cdk && "$CDK" synth --no-notices --quiet -o cdk.out >/dev/null)
(cd examples/cdk && "$CDK_DIR/node_modules/.bin/tsc" -p . && STREAMLOAD_CODE_STUB=1 "$CDK" synth --no-notices --quiet -o cdk.out >/dev/null)
# W3005: aws-cdk-lib's Function adds a DependsOn on its role beside the GetAtt; redundant, harmless.
"$VENV/bin/cfn-lint" --ignore-checks W3005 -- infra/cdk/cdk.out/*.template.json examples/cdk/cdk.out/*.template.json
echo "cdk synth + cfn-lint: infra/cdk (test app), examples/cdk ok"
# The cost command promises the standard library only: run it with the plain interpreter.
python3 scripts/cost.py --samconfig samconfig.toml --env default --events-per-second 1000 >/dev/null
echo "cost.py: runs on $(python3 --version) without the venv"
"$VENV/bin/python" -m pytest -q tests/infra
