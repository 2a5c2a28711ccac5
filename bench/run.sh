#!/usr/bin/env bash
# The payledger benchmark: builds the release binaries, checks PostgreSQL and pgbench, runs
# payledger-bench (PostgreSQL at several concurrencies with pgbench beside each, half peak, NATS
# mode at the best concurrency, the embedded SQLite default), prints the tables and writes
# bench/results.json.
#
#   bench/run.sh            # 4,8,16,32 clients, 20 s each: about 4–5 minutes
#   bench/run.sh --quick    # smoke test: 4 and 16 clients, 3 s each, about 30–60 s
#   bench/run.sh -- --concurrency 8 --duration 60s   # anything after -- goes to payledger-bench
#
# PostgreSQL: PAYLEDGER_BENCH_PG (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable),
# a server on which the benchmark may create and drop databases; it should run with
# synchronous_commit=on (the report says when it does not). NATS: PAYLEDGER_BENCH_NATS (default
# nats://127.0.0.1:4222, JetStream on; the NATS phase is skipped with a note when unreachable).
# CARGO_TARGET_DIR is honoured.
set -euo pipefail

cd "$(dirname "$0")/.."
pg="${PAYLEDGER_BENCH_PG:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}"
target="${CARGO_TARGET_DIR:-target}"
nats="${PAYLEDGER_BENCH_NATS:-nats://127.0.0.1:4222}"

args=(--concurrency 4,8,16,32 --duration 20s --warmup 3s --sqlite)
case "${1:-}" in
  --quick) args=(--concurrency 4,16 --duration 3s --warmup 1s --merchants 4 --sqlite); shift ;;
  --help | -h) sed -n '2,15p' "$0"; exit 0 ;;
esac
[[ "${1:-}" == "--" ]] && shift

for tool in pgbench psql; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (install the PostgreSQL client)" >&2; exit 1; }
done
if ! psql "$pg" -Atqc 'select 1' >/dev/null; then
  echo "run.sh: PostgreSQL is not reachable at $pg (set PAYLEDGER_BENCH_PG)" >&2
  exit 1
fi
sync_commit="$(psql "$pg" -Atqc 'show synchronous_commit')"
[[ "$sync_commit" == on ]] || echo "run.sh: warning: synchronous_commit=$sync_commit, not on" >&2

cargo build --release --locked -p payledger-command-api -p payledger-bench --bin payledger --bin payledger-bench
exec "$target/release/payledger-bench" --pg-admin-url "$pg" --payledger "$target/release/payledger" \
  --json bench/results.json --nats-url "$nats" "${args[@]}" "$@"
