#!/usr/bin/env bash
# Run a command with the background training run (pid in runs/train.pid) paused, and always resume
# it afterwards. On 2 cores two torch processes at once are each >10x slower, so paused commands
# also wait for each other (a lock), one at a time.
here="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$here/runs"
exec 9>"$here/runs/.paused.lock"
flock 9
pid=$(cat "$here/runs/train.pid" 2>/dev/null || true)
# The pid and everything under it: `(cd X && nohup python ...) &` records a shell whose child
# trains, and stopping only the shell once left training running beside an evaluation.
tree() { echo "$1"; for c in $(pgrep -P "$1"); do tree "$c"; done; }
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  pids=$(tree "$pid")
  kill -STOP $pids
  trap 'kill -CONT $pids' EXIT INT TERM
fi
"$@"
