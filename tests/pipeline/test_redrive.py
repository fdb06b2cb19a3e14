"""Nothing dropped without a trace: dead letters go back where they came from (`cellpaint redrive`)."""
from __future__ import annotations

import json

from shared.pipeline.redrive import redrive


def test_a_functions_dead_letters_go_back_to_its_queue(stack):
    dlq = stack.sqs.create_queue(QueueName="notify-dlq")["QueueUrl"]
    arn = stack.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    src = stack.sqs.create_queue(QueueName="notify-q", Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 5})})["QueueUrl"]
    for i in range(3):
        stack.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"n": i}))
    assert redrive(stack.sqs, stack.sns, dlq) == 3
    back = stack.sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10)["Messages"]
    assert sorted(json.loads(m["Body"])["n"] for m in back) == [0, 1, 2]
    assert "Messages" not in stack.sqs.receive_message(QueueUrl=dlq)


def test_undelivered_notifications_are_published_again(stack):
    from .conftest import inbox

    dlq = stack.sqs.create_queue(QueueName="subs-dlq")["QueueUrl"]
    envelope = {"Type": "Notification", "TopicArn": stack.topic_arn, "Subject": "cellpaint: a is restored",
                "Message": json.dumps({"default": "text", "sqs": json.dumps({"pair": "a"})}),
                "MessageAttributes": {"kind": {"Type": "String", "Value": "pair"}}}
    stack.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(envelope))
    assert redrive(stack.sqs, stack.sns, dlq, stack.topic_arn) == 1
    assert len(inbox(stack)) == 1  # the topic's subscribers have it again
