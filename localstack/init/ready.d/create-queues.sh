#!/bin/bash
# LocalStack ready hook: the queue, its DLQ and the redrive policy, as
# `manage.py create_sqs_queues` makes them (questions/sqs/queues.py). Idempotent.
set -euo pipefail

queue=${SQS_QUEUE_NAME:-questions}
dlq=${SQS_DLQ_NAME:-questions-dlq}
visibility_timeout=${SQS_VISIBILITY_TIMEOUT:-60}
max_receive_count=${SQS_MAX_RECEIVE_COUNT:-10}

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
