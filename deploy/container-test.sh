#!/usr/bin/env bash
# Build the image from deploy/Dockerfile and run it against the local AgentMail sandbox.
#
#   make container-test          (or: bash deploy/container-test.sh)
#
# Checks, in order: the image runs as a non-root user without a compiler and with the
# shipped templates; the container registers its webhook with the sandbox; an email
# injected as a duplicate storm is replied to exactly once; /metrics shows the reply;
# the image's HEALTHCHECK passes; `podman stop` (SIGTERM) ends the container cleanly
# (exit code 0) within 10 s. Each phase prints its duration.
#
# Uses podman (rootful, runc, chroot builds) as ../shared/notes/containers.md describes
# for machines without a Docker engine or a reachable registry: podman, runc and
# debootstrap are installed with apt-get when missing, and the debian:bookworm-slim base
# image is made with debootstrap when it is not there yet. Where a Docker engine answers
# (`docker info`), docker is used instead and pulls the base image; CONTAINER_ENGINE=podman
# or =docker forces the choice.
#
# Settings (environment): IMAGE (default autoreply:test), VENV (default .venv),
# REMOVE_IMAGE=1 removes the image afterwards (kept by default: rebuilds reuse its layers).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-autoreply:test}
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
AUTOREPLY="$VENV/bin/autoreply"
BASE_IMAGE=docker.io/library/debian:bookworm-slim
# docker when a Docker engine answers, else podman (installed if missing).
if [[ -n "${CONTAINER_ENGINE:-}" ]]; then
  ENGINE=$CONTAINER_ENGINE
elif command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
  ENGINE=docker
else
  ENGINE=podman
fi
NAME="autoreply-test-$$"
WORK=$(mktemp -d)
SANDBOX_PID=""
STOP_LIMIT=10

declare -a PHASES=()
current_phase=""
phase_start=0
now_ms() { echo $(($(date +%s%N) / 1000000)); }
seconds() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); } # milliseconds -> "s.mmm"
phase() { # phase NAME: end the running phase (if any) and start NAME
  local now
  now=$(now_ms)
  if [[ -n "$current_phase" ]]; then
    PHASES+=("$(printf '%-26s %8s s' "$current_phase" "$(seconds $((now - phase_start)))")")
  fi
  current_phase=$1
  phase_start=$now
  if [[ -n "$1" ]]; then echo "==> $1"; fi
}
summary() {
  phase ""
  echo "--- container test: phase durations"
  printf '  %s\n' "${PHASES[@]}"
}
fail() {
  echo "container test FAILED: $*" >&2
  echo "--- container log (last 60 lines)" >&2
  $ENGINE logs "$NAME" >"$WORK/container.log" 2>&1 || true
  tail -n 60 "$WORK/container.log" >&2
  echo "--- podman's own messages" >&2
  grep -v 'systemd connection' "$WORK/run.err" >&2 2>/dev/null || true
  echo "--- sandbox log" >&2
  tail -n 30 "$WORK/sandbox.log" >&2 2>/dev/null || true
  exit 1
}
cleanup() {
  local code=$?
  if [[ "$ENGINE" == podman ]]; then
    podman rm -f -v -t 0 "$NAME" >/dev/null 2>&1 || true
  else
    $ENGINE rm -f -v "$NAME" >/dev/null 2>&1 || true
  fi
  if [[ -n "$SANDBOX_PID" ]] && kill -0 "$SANDBOX_PID" 2>/dev/null; then
    kill "$SANDBOX_PID" 2>/dev/null || true
    wait "$SANDBOX_PID" 2>/dev/null || true
  fi
  if [[ "${REMOVE_IMAGE:-0}" == 1 ]]; then $ENGINE rmi -f "$IMAGE" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
  exit "$code"
}
trap cleanup EXIT
trap 'echo "container test interrupted" >&2; exit 130' INT TERM

# Run options for podman on our machines (containers.md); docker needs none of them.
RUN_OPTS=()
GLOBAL_OPTS=()
ONE_OFF=()
if [[ "$ENGINE" == podman ]]; then
  GLOBAL_OPTS=(--runtime runc)
  RUN_OPTS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
  ONE_OFF=(--health-cmd=none) # no healthcheck timer for short runs (podman asks systemd)
fi
engine() { $ENGINE "${GLOBAL_OPTS[@]}" "$@"; }

# -- helpers (HTTP and JSON through the venv's Python: no curl or jq needed) ----------

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# wait_until SECONDS DESCRIPTION PYTHON-EXPRESSION: poll until the expression is true.
wait_until() {
  local timeout=$1 what=$2 expr=$3
  "$PY" - "$timeout" "$expr" <<'EOF' || fail "timed out after $timeout s waiting for: $what"
import sys, time, json, httpx
timeout, expr = float(sys.argv[1]), sys.argv[2]
def get(url, **kw):
    try:
        return httpx.get(url, timeout=2.0, **kw)
    except httpx.HTTPError:
        return None
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    if eval(expr, {"get": get, "json": json}):
        sys.exit(0)
    time.sleep(0.2)
sys.exit(1)
EOF
}
# metric NAME{LABELS}: the value of one sample on the container's /metrics.
metric() {
  "$PY" - "$SERVICE_URL/metrics" "$1" <<'EOF'
import sys, httpx
from prometheus_client.parser import text_string_to_metric_families
url, wanted = sys.argv[1], sys.argv[2]
name, _, labels = wanted.partition("{")
want = dict(p.split("=", 1) for p in labels.rstrip("}").split(",") if p)
want = {k: v.strip('"') for k, v in want.items()}
for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
    for sample in family.samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in want.items()):
            print(int(sample.value) if sample.value.is_integer() else sample.value)
            sys.exit(0)
print("absent")
EOF
}

# -- 1. tools ---------------------------------------------------------------------------

phase "install tools"
[[ -x "$AUTOREPLY" ]] || make install
if [[ "$ENGINE" == podman ]]; then
  missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# -- 2. base image ------------------------------------------------------------------------

phase "base image"
if [[ "$ENGINE" == podman ]] && ! podman image exists "$BASE_IMAGE"; then
  rootfs="$WORK/rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
  # Like the published slim image: no downloaded packages or package lists.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  echo "    made $BASE_IMAGE with debootstrap"
else
  echo "    $BASE_IMAGE already there"
fi

# -- 3. build -------------------------------------------------------------------------------

phase "build image"
if [[ "$ENGINE" == podman ]]; then
  # --format docker keeps the HEALTHCHECK (the OCI image format has no field for it).
  podman build --pull=never --isolation=chroot --format docker \
    --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro \
    --build-arg PIP_CERT=/run/host-ca.crt \
    -f deploy/Dockerfile -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log" >&2; fail "image build"; }
else
  docker build -f deploy/Dockerfile -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log" >&2; fail "image build"; }
fi
echo "    $IMAGE: $($ENGINE image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"

# -- 4. what is in the image -----------------------------------------------------------------

phase "inspect image"
user=$($ENGINE image inspect --format '{{.Config.User}}' "$IMAGE")
[[ -n "$user" && "$user" != root && "$user" != 0 && "$user" != 0:* ]] \
  || fail "image runs as root (User=$user)"
health=$($ENGINE image inspect --format '{{.Config.Healthcheck}}' "$IMAGE")
[[ "$health" == *healthz* ]] || fail "image has no HEALTHCHECK on /healthz ($health)"
entry=$($ENGINE image inspect --format '{{json .Config.Entrypoint}}' "$IMAGE")
[[ "$entry" == '["autoreply"]' ]] || fail "entrypoint is $entry, want [\"autoreply\"]"
uid=$(engine run --rm "${RUN_OPTS[@]}" "${ONE_OFF[@]}" --entrypoint id "$IMAGE" -u 2>>"$WORK/run.err")
[[ "$uid" != 0 ]] || fail "the container's user is root"
engine run --rm "${RUN_OPTS[@]}" "${ONE_OFF[@]}" --entrypoint sh "$IMAGE" -c \
  'for c in cc gcc g++ make pip pip3; do command -v $c && exit 1; done; ! python3 -c "import setuptools"' \
  >/dev/null 2>>"$WORK/run.err" || fail "a compiler or pip/setuptools is in the final image"
engine run --rm "${RUN_OPTS[@]}" "${ONE_OFF[@]}" "$IMAGE" templates preview --from 'Jane <jane@example.com>' \
  --subject 'Container check' >"$WORK/preview.txt" 2>&1 \
  || { cat "$WORK/preview.txt" >&2; fail "the shipped templates do not render in the image"; }
grep -q "Container check" "$WORK/preview.txt" || fail "preview did not render the subject"
echo "    user $user (uid $uid), no compiler or pip, entrypoint $entry, shipped templates render"

# -- 5. run against the sandbox -------------------------------------------------------------

phase "start sandbox + container"
SANDBOX_PORT=$(free_port)
SANDBOX_URL="http://127.0.0.1:$SANDBOX_PORT"
"$AUTOREPLY" sandbox --port "$SANDBOX_PORT" >"$WORK/sandbox.log" 2>&1 &
SANDBOX_PID=$!
wait_until 30 "sandbox on $SANDBOX_URL" "(r := get('$SANDBOX_URL/_sandbox/info')) is not None and r.status_code == 200"
SERVICE_PORT=$(free_port)
SERVICE_URL="http://127.0.0.1:$SERVICE_PORT"
engine run -d --name "$NAME" --network host "${RUN_OPTS[@]}" \
  -e AGENTMAIL_API_KEY=am_sandbox \
  -e AGENTMAIL_BASE_URL="$SANDBOX_URL" \
  -e AUTOREPLY_PUBLIC_URL="$SERVICE_URL" \
  -e AUTOREPLY_LOG_LEVEL=INFO \
  "$IMAGE" serve --port "$SERVICE_PORT" >/dev/null 2>"$WORK/run.err" \
  || { cat "$WORK/run.err" >&2; fail "podman run"; }
# (Without systemd, podman logs to run.err that it cannot schedule the healthcheck
# timer: harmless; the check itself runs below with `podman healthcheck run`.)
wait_until 60 "the container's /readyz" "(r := get('$SERVICE_URL/readyz')) is not None and r.status_code == 200"

phase "webhook registered"
wait_until 10 "a webhook for $SERVICE_URL/webhooks/agentmail in the sandbox" \
  "(r := get('$SANDBOX_URL/v0/webhooks', headers={'Authorization': 'Bearer am_sandbox'})) is not None and ['$SERVICE_URL/webhooks/agentmail'] == [w['url'] for w in r.json()['webhooks']]"
echo "    one webhook: $SERVICE_URL/webhooks/agentmail"

phase "reply exactly once"
"$AUTOREPLY" sandbox send --url "$SANDBOX_URL" --json --copies 3 \
  --from 'Jane Doe <jane@example.com>' --to demo@agentmail.to \
  --subject 'Hello from the container test' --text 'Is anyone there?' >"$WORK/sent.json"
MESSAGE_ID=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["message_id"])' "$WORK/sent.json")
wait_until 60 "the reply, and all 3 deliveries recorded" \
  "(r := get('$SERVICE_URL/metrics')) is not None and 'autoreply_replies_sent_total 1.0' in r.text and 'autoreply_jobs{state=\"done\"} 1.0' in r.text and sum(int(float(l.rsplit(' ', 1)[1])) for l in r.text.splitlines() if l.startswith('autoreply_deliveries_total{')) >= 3"
replies=$("$PY" -c '
import sys, httpx
sent = httpx.get(sys.argv[1] + "/_sandbox/sent", timeout=5).json()
print(sum(1 for e in sent if e.get("in_reply_to") == sys.argv[2]))' "$SANDBOX_URL" "$MESSAGE_ID")
[[ "$replies" == 1 ]] || fail "$replies replies to $MESSAGE_ID, want exactly 1"
echo "    $MESSAGE_ID: 3 deliveries, 1 reply"

phase "metrics"
for sample in 'autoreply_replies_sent_total' 'autoreply_jobs{state="done"}' \
  'autoreply_deliveries_total{outcome="accepted",status="202"}' \
  'autoreply_delivery_to_reply_seconds_count' 'autoreply_webhook_registration{state="registered"}'; do
  value=$(metric "$sample")
  [[ "$value" == 1 ]] || fail "$sample is $value on /metrics, want 1"
  echo "    $sample $value"
done
duplicates=$(metric 'autoreply_deliveries_total{outcome="duplicate",status="200"}')
[[ "$duplicates" == 2 ]] || fail "duplicate deliveries on /metrics: $duplicates, want 2"
echo "    autoreply_deliveries_total{outcome=\"duplicate\",status=\"200\"} $duplicates"

if [[ "$ENGINE" == podman ]]; then
  phase "healthcheck"
  # On the container's own port (not 8000): the check follows `serve --port`.
  podman healthcheck run "$NAME" >/dev/null 2>>"$WORK/run.err" || fail "the image's HEALTHCHECK failed"
  echo "    podman healthcheck run: healthy (port $SERVICE_PORT)"
fi

phase "SIGTERM stop"
started=$(now_ms)
$ENGINE stop -t 30 "$NAME" >/dev/null 2>>"$WORK/run.err"
took=$(($(now_ms) - started))
code=$($ENGINE inspect --format '{{.State.ExitCode}}' "$NAME")
echo "    stopped in $(seconds "$took") s with exit code $code"
[[ "$code" == 0 ]] || fail "exit code $code after SIGTERM, want 0 (143 = died of the signal, 137 = killed)"
((took < STOP_LIMIT * 1000)) || fail "SIGTERM took $(seconds "$took") s, limit $STOP_LIMIT s"
$ENGINE logs "$NAME" >"$WORK/container.log" 2>&1 || true
grep -q '"worker_stopped"' "$WORK/container.log" || fail "no worker_stopped line: the drain did not run"
grep -q '"Finished server process' "$WORK/container.log" || fail "uvicorn did not finish cleanly"

summary
echo "container test passed"
