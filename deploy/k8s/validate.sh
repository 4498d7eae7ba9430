#!/usr/bin/env bash
# Validates deploy/k8s: every manifest against the Kubernetes schemas (and
# KEDA's), the jobs ConfigMap and checksums against jobs/ (render.sh --check),
# the config against the worker's keys. Exit status non-zero on any error.
# What each check is: deploy/k8s/validate.py's docstring.
#
# The validators come from PyPI, pinned, into a virtualenv under
# ${DISTILL_WATCH_CACHE:-$HOME/.cache/distill-watch}, made on the first run
# (about 10 s) and reused. Needs python3 with its venv module (Debian:
# python3-venv) and PyPI.
set -euo pipefail
cd "$(dirname "$0")/../.."

# kubernetes-validate bundles the JSON schemas of Kubernetes 1.25-1.37;
# cloudcoil-models-keda 2.16.1.0 is the last built for Python < 3.14 and is
# generated from KEDA 2.16.1's CRDs. Changing a pin makes a new virtualenv.
readonly REQUIREMENTS="kubernetes-validate==1.37.0 cloudcoil==0.6.0 cloudcoil-models-keda==2.16.1.0"

CACHE_DIR="${DISTILL_WATCH_CACHE:-${HOME:?HOME is not set}/.cache/distill-watch}"
VENV="$CACHE_DIR/k8s-validate-$(printf '%s' "$REQUIREMENTS" | sha256sum | cut -c1-12)"

# The marker is written last: an interrupted install is made again, not used.
if [[ ! -f "$VENV/.complete" ]]; then
    echo "validate.sh: installing $REQUIREMENTS into $VENV"
    rm -rf "$VENV"
    mkdir -p "$CACHE_DIR"
    python3 -m venv "$VENV" || {
        echo "validate.sh: python3 -m venv failed (on Debian: apt-get install python3-venv)" >&2
        exit 1
    }
    # shellcheck disable=SC2086 # one word per requirement
    "$VENV/bin/pip" install --quiet --disable-pip-version-check $REQUIREMENTS
    touch "$VENV/.complete"
fi

status=0
deploy/k8s/render.sh --check || status=1
"$VENV/bin/python" deploy/k8s/validate.py || status=1
# The dashboard is imported by hand; at least it must be JSON.
"$VENV/bin/python" -m json.tool deploy/grafana/distill-watch.json >/dev/null || status=1
exit "$status"
