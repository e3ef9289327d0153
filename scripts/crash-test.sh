#!/usr/bin/env bash
# Crash test for queue mode: submit continuously, kill -9 Postern at varied moments,
# restart, repeat; then check that every message answered 250 arrived, that every
# duplicate follows a kill inside the window after its first delivery, and that none
# arrived three times. Prints the duplicate rate and the 250-to-removal window that
# Postern measured (postern_spool_removal_seconds, read before each kill).
# Loopback only. Bounded: ROUNDS kill cycles (default 100, at most 500), each a few
# seconds. Usage: scripts/crash-test.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-100}"
CRASH_ROUNDS="$rounds" cargo test --release --test crash -- --nocapture 2>&1 |
    grep -E "crash test:|removal window|test result|panicked|lost|times|duplicated although"
