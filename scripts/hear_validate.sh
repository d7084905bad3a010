#!/usr/bin/env bash
# Run the HEAR 2021 validator (hearvalidator on PyPI) on cavmae.hear with one model.
#
#   scripts/hear_validate.sh MODEL [DEVICE]      MODEL: a cavmae model directory or a public CAV-MAE .pth
#
# The validator imports tensorflow at module level, but for a torch model it only uses `tf.Module` in an
# isinstance check. So that neither CI nor the project's environment gets tensorflow, the validator is installed
# without its dependencies into a scratch folder (HEAR_VALIDATOR_DIR, default a new temp folder), next to a stub
# `tensorflow` package holding an empty `Module` class; both are on PYTHONPATH for this run only. torch and cavmae
# come from the current Python environment.
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 MODEL [DEVICE]   (MODEL: a cavmae model directory or a public CAV-MAE .pth)" >&2
  exit 2
fi
model=$1
device=${2:-cpu}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${HEAR_VALIDATOR_DIR:-$(mktemp -d)}
python=${PYTHON:-python}

if [[ ! -d "$work/site/hearvalidator" ]]; then
  "$python" -m pip install --quiet --no-deps --target "$work/site" hearvalidator
fi
mkdir -p "$work/stub/tensorflow"
cat > "$work/stub/tensorflow/__init__.py" <<'PY'
"""Stub for hearvalidator's module-level `import tensorflow`: a torch model is never a tf.Module."""


class Module:
    pass
PY
echo "hearvalidator $("$python" -c 'import importlib.metadata as m, sys; sys.path.insert(0, sys.argv[1]); print(m.version("hearvalidator"))' "$work/site" 2>/dev/null || echo '?') from $work/site"
PYTHONPATH="$work/site:$work/stub:$repo${PYTHONPATH:+:$PYTHONPATH}" \
  "$python" -m hearvalidator.validate cavmae.hear -m "$model" -d "$device"
