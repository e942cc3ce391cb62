#!/usr/bin/env bash
# Optional CI job: depo_client.verl against verl 0.7.1's real create_rl_sampler / RLHFDataset /
# StatefulDataLoader. verl pins numpy<2 and needs pyarrow<22 and ray, so it gets its own venv
# (.venv-verl), built once: torch's CPU wheel first, then verl, then the project and the client.
# No PostgreSQL/Redis needed: the tests start `python -m service serve` on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python3}
VENV=${VERL_VENV:-.venv-verl}
STAMP="$VENV/.installed"

if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ clients/pyproject.toml -nt "$STAMP" ]; then
  test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q torch==2.13.0
  "$VENV/bin/pip" install -q verl==0.7.1 'pyarrow>=19,<22' 'pytest>=8' pytest-asyncio
  "$VENV/bin/pip" install -q -e . -e ./clients
  "$VENV/bin/python" -c "import torch, verl; assert torch.__version__.startswith('2.13.0'), torch.__version__; print('torch', torch.__version__, 'verl', verl.__version__)"
  touch "$STAMP"
fi

DEPO_TEST_BACKENDS=embedded HF_HUB_OFFLINE=1 "$VENV/bin/pytest" -q tests/clients/test_verl.py
