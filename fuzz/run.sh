#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time: `fuzz/run.sh <seconds per target>` (default 60).
# Works on the stable toolchain with `--sanitizer none` (libFuzzer's coverage-guided mutation, no
# AddressSanitizer: safe Rust needs none). A crash stops the script with the reproducer's path under
# fuzz/artifacts/<target>/; turn it into a regression test in the normal suite before fixing it.
# Set FUZZ_REQUEST_JSON=1 to include the request-JSON target (it builds all of command-api).
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")/.."
targets=(statement callback_sandbox callback_wechatpay callback_alipay)
features=()
if [[ "${FUZZ_REQUEST_JSON:-0}" == 1 ]]; then
  targets+=(request_json)
  features=(--features request-json)
fi
for target in "${targets[@]}"; do
  echo "== $target: ${seconds}s"
  mkdir -p "fuzz/corpus/$target"
  cargo fuzz run --sanitizer none "${features[@]}" "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -print_final_stats=1
done
