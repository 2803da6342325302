#!/bin/bash
# LocalStack ready hook: the job queue and the webhook delivery queue, each with its DLQ and
# redrive policy, as `manage.py create_sqs_queues` makes them (questions/sqs/queues.py).
# Idempotent.
set -euo pipefail

visibility_timeout=${SQS_VISIBILITY_TIMEOUT:-60}

create() { # queue dlq max_receive_count
  local queue=$1 dlq=$2 max_receive_count=$3 dlq_url dlq_arn queue_url attributes
  dlq_url=$(awslocal sqs create-queue --queue-name "$dlq" \
    --attributes MessageRetentionPeriod=1209600 --query QueueUrl --output text)
  dlq_arn=$(awslocal sqs get-queue-attributes --queue-url "$dlq_url" \
    --attribute-names QueueArn --query Attributes.QueueArn --output text)

  attributes=$(mktemp)
  cat >"$attributes" <<JSON
{
  "VisibilityTimeout": "$visibility_timeout",
  "MessageRetentionPeriod": "345600",
  "RedrivePolicy": "{\"deadLetterTargetArn\":\"$dlq_arn\",\"maxReceiveCount\":\"$max_receive_count\"}"
}
JSON
  if queue_url=$(awslocal sqs get-queue-url --queue-name "$queue" --query QueueUrl --output text 2>/dev/null); then
    awslocal sqs set-queue-attributes --queue-url "$queue_url" --attributes "file://$attributes"
  else
    queue_url=$(awslocal sqs create-queue --queue-name "$queue" \
      --attributes "file://$attributes" --query QueueUrl --output text)
  fi
  rm -f "$attributes"
  echo "SQS ready: $queue_url (DLQ $dlq_arn, maxReceiveCount $max_receive_count)"
}

create "${SQS_QUEUE_NAME:-questions}" "${SQS_DLQ_NAME:-questions-dlq}" "${SQS_MAX_RECEIVE_COUNT:-10}"
create "${SQS_WEBHOOK_QUEUE_NAME:-questions-webhooks}" "${SQS_WEBHOOK_DLQ_NAME:-questions-webhooks-dlq}" \
  "${SQS_WEBHOOK_MAX_RECEIVE_COUNT:-100}"
