#!/usr/bin/env bash
# Crash test for queue mode: submit continuously, kill -9 Postern at varied moments,
# restart, repeat; then check that every message answered 250 arrived exactly once.
# Loopback only. Bounded: ROUNDS kill cycles (default 100, at most 500), each a few
# seconds. Usage: scripts/crash-test.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-100}"
CRASH_ROUNDS="$rounds" cargo test --release --test crash -- --nocapture 2>&1 | grep -E "crash test:|test result|panicked|lost|twice"
