#!/usr/bin/env bash
# Runs the README's run command as a new user would, from this checkout: the first `cargo run`
# line of README.md, then the walk-through's first steps against it: /healthz, a merchant (the
# same command line with `merchants add` instead of `serve`), a sandbox order, its payment. A
# README whose run command stops working fails CI.
set -euo pipefail
cd "$(dirname "$0")/.."

run_cmd="$(grep -m1 -E '^cargo run( |$)' README.md || true)"
[ -n "$run_cmd" ] || { echo "README.md has no 'cargo run' line" >&2; exit 1; }
case "$run_cmd" in
    *" serve") ;;
    *) echo "README's run command does not end in 'serve': $run_cmd" >&2; exit 1 ;;
esac
cli_cmd="${run_cmd% serve}"   # the same build, another subcommand
echo "README run command: $run_cmd"

# Where the README's walk-through has the server: its default address and the working
# directory's payledger.db, which must not exist before (a fresh clone has none).
base="http://127.0.0.1:8080"
if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
    echo "port 8080 is taken: the README's run command listens there" >&2
    exit 1
fi
[ ! -e payledger.db ] || { echo "payledger.db exists already: this check needs a fresh checkout" >&2; exit 1; }

# The secrets key the run creates beside payledger.db goes with it (one already there is kept).
had_key=0
[ ! -e payledger.key ] || had_key=1

log="$(mktemp)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then
        kill -- "-$server_pid" 2>/dev/null || kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -f payledger.db payledger.db-shm payledger.db-wal "$log"
    [ "$had_key" = 1 ] || rm -f payledger.key
}
trap cleanup EXIT

# Build first, so the wait below is for the server, not the compiler.
${cli_cmd} --version
set -m   # the server in its own process group: cargo and the binary stop together
bash -c "exec $run_cmd" >"$log" 2>&1 &
server_pid=$!
set +m
for _ in $(seq 1 150); do
    curl -fsS "$base/healthz" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; echo "the README's run command exited" >&2; exit 1; }
    sleep 0.2
done
curl -fsS "$base/healthz" >/dev/null || { cat "$log" >&2; echo "no /healthz from the README's run command" >&2; exit 1; }

json() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
key="$(${cli_cmd} merchants add readme_check | json test_api_key)"
order="$(curl -fsS -X POST "$base/v1/orders" \
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    -d '{"out_trade_no":"A-1001","amount":1999,"currency":"CNY","channel":"sandbox","subject":"Coffee beans 1kg"}')"
status="$(json status <<<"$order")"
pay_url="$(json pay_url <<<"$order")"
[ "$status" = awaiting_payment ] || { echo "the first order is $status: $order" >&2; exit 1; }
paid="$(curl -fsS -X POST "$pay_url" -H 'Content-Type: application/json' -d '{"result":"success"}')"
[ "$(json order_status <<<"$paid")" = paid ] || { echo "the sandbox payment did not pay: $paid" >&2; exit 1; }
echo "README run command: /healthz, merchant, sandbox order and its payment all work"
