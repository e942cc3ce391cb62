#!/usr/bin/env bash
# Optional CI job: depo_client.verl against real verl classes on CPU, one venv per verl version
# (verl's pins clash with TRL's and with each other): torch's CPU wheel first, then verl, then the
# project and the client. Each venv is built once and rebuilt when a pyproject changes.
#   0.7.1 (.venv-verl):   create_rl_sampler / RLHFDataset / StatefulDataLoader  (tests/clients/test_verl.py)
#   0.9.1 (.venv-verl09): data.custom_cls + trainer.v1 custom_sampler over a real TransferQueue
#                         on a local Ray                                        (tests/clients/test_verl09.py)
# `bash .ci/verl.sh 0.9.1` runs one version only. No PostgreSQL/Redis needed: the tests start
# `python -m service serve` on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python3}
VERSIONS=${1:-"0.7.1 0.9.1"}

build() {  # VENV, then the pip requirements of that verl version
  local venv=$1 stamp=$1/.installed t0=$SECONDS
  shift
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ clients/pyproject.toml -nt "$stamp" ]; then
    test -x "$venv/bin/python" || "$PY" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q torch==2.13.0
    "$venv/bin/pip" install -q "$@" 'pytest>=8' pytest-asyncio
    "$venv/bin/pip" install -q -e . -e ./clients
    "$venv/bin/python" -c "import torch, verl; assert torch.__version__.startswith('2.13.0'), torch.__version__; print('torch', torch.__version__, 'verl', verl.__version__)"
    touch "$stamp"
    echo "built $venv in $((SECONDS - t0))s"
  fi
}

for version in $VERSIONS; do
  case "$version" in
    0.7.1)
      build "${VERL_VENV:-.venv-verl}" verl==0.7.1 'pyarrow>=19,<22'
      DEPO_TEST_BACKENDS=embedded HF_HUB_OFFLINE=1 "${VERL_VENV:-.venv-verl}/bin/pytest" -q tests/clients/test_verl.py
      ;;
    0.9.1)
      build "${VERL09_VENV:-.venv-verl09}" verl==0.9.1 TransferQueue==0.1.11 cachetools  # verl 0.9.1 imports cachetools without declaring it
      DEPO_TEST_BACKENDS=embedded HF_HUB_OFFLINE=1 RAY_DISABLE_DOCKER_CPU_WARNING=1 \
        "${VERL09_VENV:-.venv-verl09}/bin/pytest" -q tests/clients/test_verl09.py
      ;;
    *) echo "unknown verl version $version (0.7.1 or 0.9.1)" >&2; exit 2 ;;
  esac
done
