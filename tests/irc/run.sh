#!/usr/bin/env bash
# irctest's RFC 1459/2812 selection against chatnet (or ngIRCd, for comparison).
# Not part of `make test` or CI: it needs an irctest checkout and a venv for it.
#
#   tests/irc/run.sh               # chatnet (launcher.py --no-web --no-thermometer --no-openai per test)
#   tests/irc/run.sh ngircd        # ngIRCd (/usr/sbin/ngircd) on the same selection
#   tests/irc/run.sh chatnet -k Whois -x   # extra pytest arguments after the target
#
# IRCTEST (default /work/irctest): a checkout of github.com/progval/irctest.
# IRCTEST_VENV (default /work/irctest-venv): a venv with `pip install -r $IRCTEST/requirements.txt`.
# CHATNET_ROOT=/some/copy runs that copy of the tree (e.g. a snapshot: cp -a chatnet *.py there).
# CHATNET_IRCTEST_KEEP=1 keeps each test's DATA_DIR and logs (the path is printed).
# The JUnit report goes to $IRCTEST_REPORT (default /tmp/irctest-<target>.xml).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
IRCTEST="${IRCTEST:-/work/irctest}"
IRCTEST_VENV="${IRCTEST_VENV:-/work/irctest-venv}"
target="${1:-chatnet}"
[ $# -gt 0 ] && shift
case "$target" in
  chatnet) controller=chatnet_controller ;;
  ngircd) controller=irctest.controllers.ngircd; export PATH="$PATH:/usr/sbin" ;;
  *) echo "usage: $0 [chatnet|ngircd] [pytest args...]" >&2; exit 2 ;;
esac
SELECTION="(RFC1459 or RFC2812) and not services and not implementation-specific and not deprecated and not strict"
cd "$IRCTEST"
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$IRCTEST_VENV/bin/python" -m pytest \
  --controller "$controller" -m "$SELECTION" \
  -p no:cacheprovider -rfEs --junitxml="${IRCTEST_REPORT:-/tmp/irctest-$target.xml}" "$@"
