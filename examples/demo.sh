#!/usr/bin/env bash
# The README's demo: starts hello_server on a free port, runs hello_client against it twice,
# then stops the server with SIGINT, as a user would with Ctrl-C. Usage: examples/demo.sh BIN_DIR
set -euo pipefail
bin=${1:-build/default/examples}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$bin/hello_server" --port 0 >"$out" &
server=$!
for _ in $(seq 100); do grep -q '^listening on ' "$out" && break; sleep 0.05; done
endpoint=$(sed -n 's/^listening on //p' "$out")
echo "hello_server: listening on $endpoint"
port=${endpoint##*:}
"$bin/hello_client" --port "$port"
"$bin/hello_client" --port "$port" --message "Hello again, server!"
kill -INT "$server"
wait "$server"
echo "hello_server printed:"
sed 's/^/  /' "$out"
