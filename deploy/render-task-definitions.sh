#!/usr/bin/env bash
# Fills the ${...} placeholders of deploy/ecs/*-task-definition.json with the outputs of a
# deployed stack of deploy/cloudformation.yaml, ready for
#   aws ecs register-task-definition --cli-input-json file://OUT_DIR/ingest-task-definition.json
#   deploy/render-task-definitions.sh STACK_NAME [OUT_DIR]      # OUT_DIR defaults to ./rendered
#   deploy/render-task-definitions.sh --outputs FILE [OUT_DIR]  # FILE: describe-stacks Outputs JSON
# Needs python3, and the aws CLI (credentials and region of the stack) unless --outputs is given.
# Every placeholder is a stack output of the same name; a missing one stops the script.
set -euo pipefail

usage() { echo "usage: $0 STACK_NAME [OUT_DIR] | $0 --outputs FILE [OUT_DIR]" >&2; exit 2; }
[ $# -ge 1 ] || usage
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "$1" = "--outputs" ]; then
  [ $# -ge 2 ] || usage
  outputs="$(cat "$2")"
  shift 2
else
  outputs="$(aws cloudformation describe-stacks --stack-name "$1" --query 'Stacks[0].Outputs' --output json)"
  shift
fi
out="${1:-rendered}"
mkdir -p "$out"

for template in "$here"/ecs/*-task-definition.json; do
  target="$out/$(basename "$template")"
  OUTPUTS="$outputs" python3 - "$template" >"$target" <<'PYEOF'
import json, os, re, sys

values = {o["OutputKey"]: o["OutputValue"] for o in json.loads(os.environ["OUTPUTS"])}

def fill(match):
    name = match.group(1)
    if name not in values:
        sys.exit(f"{sys.argv[1]}: the stack has no output {name}")
    return json.dumps(values[name])[1:-1]  # escaped for a JSON string

text = re.sub(r"\$\{([A-Za-z0-9]+)\}", fill, open(sys.argv[1]).read())
json.loads(text)  # still valid JSON
print(text, end="")
PYEOF
  echo "$target"
done
