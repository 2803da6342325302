#!/usr/bin/env bash
# `make run`: the whole service on this machine, no Docker, no cloud account, no API key.
# SQLite (unless DATABASE_URL is set), a local SQS server (moto) unless AWS_ENDPOINT_URL_SQS
# points elsewhere, the offline demo model unless OPENAI_API_KEY / OPENAI_BASE_URL is set.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f .env ]; then set -a; . ./.env; set +a; fi
export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-config.settings.local}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
export AWS_REGION=${AWS_REGION:-us-east-1}
PORT=${PORT:-8000}
SQS_PORT=${SQS_PORT:-9324}
PY=.venv/bin/python
mkdir -p .run

# Children run in their own sessions (setsid) so that Ctrl-C reaches only this script, which
# then sends each one SIGTERM, newest first: a graceful stop (README "Stopping and deploying").
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "Stopping..."
  # Newest first: the worker finishes its jobs while the SQS server is still up.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap cleanup INT TERM EXIT

if [ -z "${AWS_ENDPOINT_URL_SQS:-}" ]; then
  export AWS_ENDPOINT_URL_SQS="http://127.0.0.1:$SQS_PORT"
  echo "Starting a local SQS server (moto) on $AWS_ENDPOINT_URL_SQS (log: .run/sqs.log)"
  setsid .venv/bin/moto_server -H 127.0.0.1 -p "$SQS_PORT" >.run/sqs.log 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    curl -s -o /dev/null "$AWS_ENDPOINT_URL_SQS" && break
    sleep 0.1
  done
fi

$PY manage.py migrate --noinput
$PY manage.py create_sqs_queues
$PY manage.py create_demo_user --username admin --password admin-password --staff >/dev/null
token_line=$($PY manage.py create_demo_user --username demo --password demo-password | tail -1)
token=${token_line#API token: }

setsid $PY manage.py runserver "127.0.0.1:$PORT" --noreload &
pids+=($!)
# One worker process: SQLite takes one writer at a time.
setsid $PY manage.py run_sqs_worker --processes 1 --concurrency 4 --wait-time 5 &
pids+=($!)
# Webhook deliveries: the same worker on their own queue (README "Webhooks").
setsid $PY manage.py run_sqs_worker --processes 1 --concurrency 4 --wait-time 5 \
  --queue "${SQS_WEBHOOK_QUEUE_NAME:-questions-webhooks}" \
  --dlq "${SQS_WEBHOOK_DLQ_NAME:-questions-webhooks-dlq}" --requeue-interval 0 &
pids+=($!)

cat <<MSG

  The question service is running.
    Web page:   http://127.0.0.1:$PORT/           (log in as demo / demo-password)
    Admin:      http://127.0.0.1:$PORT/admin/     (admin / admin-password)
    API docs:   http://127.0.0.1:$PORT/api/docs/
    API token:  $token

  Try it:
    curl -s -X POST http://127.0.0.1:$PORT/api/questions/ \\
      -H "Authorization: Token $token" -H "Content-Type: application/json" \\
      -d '{"question": "What is SQS?"}'
    curl -s http://127.0.0.1:$PORT/api/questions/ -H "Authorization: Token $token"

  Ctrl-C stops everything.

MSG
wait -n "${pids[@]}"
