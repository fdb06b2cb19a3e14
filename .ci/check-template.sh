#!/usr/bin/env bash
# CI checks of the SAM stack: cfn-lint, sam validate --lint, the checkov scan (template.yaml and its SAM
# expansion, .ci/checkov-skips.yaml), sam build. Exits nonzero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac  # VENV may also be another checkout's
# sam build checks for a python3.12 interpreter on PATH (pyenv shims alone fail that check).
if command -v pyenv >/dev/null 2>&1 && pyenv prefix 3.12.1 >/dev/null 2>&1; then
  PATH="$(pyenv prefix 3.12.1)/bin:$PATH"
fi
export PATH="$VENV/bin:$PATH" SAM_CLI_TELEMETRY=0

echo "== cfn-lint template.yaml"
cfn-lint template.yaml
echo "== sam validate --lint"
sam validate --lint --template-file template.yaml --region us-east-1
echo "== checkov (template.yaml and its SAM expansion)"
SCAN="${SCAN_VENV:-.venv-checkov}"
if [ ! -x "$SCAN/bin/checkov" ] || [ requirements-checkov.txt -nt "$SCAN/bin/checkov" ]; then
  "${PY:-python3}" -m venv "$SCAN"
  "$SCAN/bin/pip" install -q -r requirements-checkov.txt
  touch "$SCAN/bin/checkov"
fi
"$VENV/bin/python" .ci/sam_expand.py template.yaml .aws-sam/checkov/expanded.json >/dev/null
"$SCAN/bin/python" .ci/checkov_scan.py template.yaml .aws-sam/checkov/expanded.json
echo "== sam build"
sam build --template-file template.yaml --build-dir .aws-sam/build --parallel
test -f .aws-sam/build/SharedLayer/python/shared/pipeline/validate.py && test -f .aws-sam/build/SharedLayer/python/shared/imaging/images.py
test -d .aws-sam/build/SharedLayer/python/numpy
test -f .aws-sam/build/IngestFunction/app.py
test -f .aws-sam/build/NotifyFunction/app.py
test -f .aws-sam/build/SweepFunction/app.py
test -f .aws-sam/build/AdaptFunction/app.py
test -f .aws-sam/build/DigestFunction/app.py
if find .aws-sam/build -path '*torch*' -print -quit | grep -q .; then
  echo "torch must not reach the Lambda build" >&2; exit 1
fi
echo "OK: cfn-lint, sam validate --lint, checkov and sam build passed"
