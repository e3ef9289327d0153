#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time each (default 600 s), one after the
# other, starting from the committed seeds in fuzz/seeds/<target> plus whatever corpus
# earlier runs left in fuzz/corpus/<target> (not committed).
#
#   scripts/fuzz.sh            # 10 minutes per target
#   scripts/fuzz.sh 60 data    # one target for a minute
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). A crash
# stops the script and leaves the input in fuzz/artifacts/<target>/; turn it into a
# unit test next to the code it broke, then fix the code.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-600}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t: ${seconds}s"
  cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
    -print_final_stats=1 2>&1 | grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|Done)|panicked|ERROR" || true
  if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
    echo "!! $t found a failing input: fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "all targets ran ${seconds}s without a failure"
