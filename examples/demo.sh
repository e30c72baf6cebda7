#!/usr/bin/env bash
# The README's demo: starts hello_server on a free port, runs hello_client against it twice,
# then stops the server with SIGINT, as a user would with Ctrl-C.
# Usage: examples/demo.sh            builds the two examples (preset default, build/default) and runs them
#        examples/demo.sh BIN_DIR    runs the examples already built in BIN_DIR
set -euo pipefail
if (($# == 0)); then
  cd "$(dirname "$0")/.."
  cmake --preset default >/dev/null
  cmake --build --preset default --target hello_server hello_client
  bin=build/default/examples
else
  bin=$1
fi
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
