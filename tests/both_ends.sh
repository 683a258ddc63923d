#!/usr/bin/env bash
# The test suite at both ends of the supported LiteLLM range (README, "Supported LiteLLM versions"):
#
#   1. the whole suite in the current environment, which `pip install -e '.[test,proxy,metrics]'`
#      gives the newest supported LiteLLM;
#   2. the integration tests (Router, budgets and scopes, when:, failover, proxy, conformance, trust boundary) on the oldest supported
#      LiteLLM, in their own venv (.venv-litellm-oldest, made on first use and in the background while
#      step 1 runs): that LiteLLM is installed first, then this checkout with pip, and the step fails
#      if pip replaced the LiteLLM that was there -- which is what a team that already runs an older
#      LiteLLM does when it installs the plugin.
#
# Usage: tests/both_ends.sh [pytest options...]   (the options go to both runs)
# Both runs use pytest-xdist: PAYG_TEST_WORKERS processes (default 2, the cores CI has), a test file
# on one worker (--dist loadfile: a module's proxies and fixtures start once). `-n 0` runs serially.
# Exit status: non-zero if either run fails, pytest's "no tests collected" (5) included.
set -uo pipefail
cd "$(dirname "$0")/.."

OLDEST_LITELLM="1.100.0"  # the floor of pyproject's range (litellm_payg/adapter/litellm_versions.py: OLDEST)
OLDEST_VENV="${PAYG_OLDEST_VENV:-.venv-litellm-oldest}"
INTEGRATION=(tests/test_routing.py tests/test_budget_enforcement.py tests/test_failover.py
             tests/test_proxy.py tests/test_conformance_spend.py
             tests/test_trust_boundary_router.py tests/test_trust_boundary.py
             tests/test_scopes.py tests/test_when.py tests/test_when_proxy.py tests/test_runs.py tests/test_runs_proxy.py tests/test_runs_mint_proxy.py
             tests/test_runs_control.py tests/test_runs_control_proxy.py
             tests/test_refusals.py tests/test_refusals_proxy.py
             tests/test_routes_proxy.py tests/test_bounded_state_proxy.py
             tests/test_differential.py tests/test_differential_proxy.py tests/test_feasibility.py)
export LITELLM_LOCAL_MODEL_COST_MAP="${LITELLM_LOCAL_MODEL_COST_MAP:-True}"  # offline
export PIP_DISABLE_PIP_VERSION_CHECK=1

PYTHON="${PYTHON:-python3}"
newest=$(python -c "from litellm_payg.adapter import litellm_versions as v; print(v.litellm_version())") || {
  echo "both_ends: litellm_payg is not installed in this environment: pip install -e '.[test,proxy,metrics]' first"
  exit 1
}

make_oldest_venv() {
  # LiteLLM first, then the plugin from this checkout: pip must keep the LiteLLM it found.
  if [ ! -x "$OLDEST_VENV/bin/python" ]; then
    "$PYTHON" -m venv "$OLDEST_VENV" || return 1
    "$OLDEST_VENV/bin/python" -m pip install -q "litellm==$OLDEST_LITELLM" || return 1
  fi
  "$OLDEST_VENV/bin/python" -m pip install -q -e '.[test,proxy,metrics]' || return 1
  local got
  got=$("$OLDEST_VENV/bin/python" -c "from importlib.metadata import version; print(version('litellm'))") || return 1
  if [ "$got" != "$OLDEST_LITELLM" ]; then
    echo "both_ends: installing litellm-payg replaced LiteLLM $OLDEST_LITELLM with $got"
    return 1
  fi
  echo "both_ends: installing litellm-payg kept LiteLLM $got in place"
}

started=$(date +%s)
log=$(mktemp)
make_oldest_venv >"$log" 2>&1 &
venv_pid=$!

XDIST=(-n "${PAYG_TEST_WORKERS:-2}" --dist loadfile)

echo "== the whole suite on LiteLLM $newest (the newest supported release)"
pytest "${XDIST[@]}" "$@"
newest_status=$?
[ "$newest_status" -eq 5 ] && echo "both_ends: pytest collected no tests: that is a failure here"
echo "== whole suite: exit $newest_status after $(( $(date +%s) - started )) s"

wait "$venv_pid"
venv_status=$?
grep -v "^WARNING: Location" "$log"
rm -f "$log"
oldest_status=1
if [ "$venv_status" -ne 0 ]; then
  echo "both_ends: could not make the LiteLLM $OLDEST_LITELLM venv ($OLDEST_VENV)"
else
  echo "== the integration tests on LiteLLM $OLDEST_LITELLM (the oldest supported release)"
  old_started=$(date +%s)
  # --tb=short: pytest's default traceback can crash parsing LiteLLM 1.100's 13,000-line router.py
  PATH="$PWD/$OLDEST_VENV/bin:$PATH" "$OLDEST_VENV/bin/python" -m pytest --tb=short "${XDIST[@]}" "$@" "${INTEGRATION[@]}"
  oldest_status=$?
  [ "$oldest_status" -eq 5 ] && echo "both_ends: pytest collected no tests: that is a failure here"
  echo "== integration tests on $OLDEST_LITELLM: exit $oldest_status after $(( $(date +%s) - old_started )) s"
fi

echo "== both ends: newest (LiteLLM $newest) exit $newest_status, oldest (LiteLLM $OLDEST_LITELLM) exit $oldest_status, $(( $(date +%s) - started )) s in all"
[ "$newest_status" -eq 0 ] && [ "$oldest_status" -eq 0 ]
