"""The local Lambda event source (cellpaint/local/runner.py) long-polls as Lambda's does: a batch
gathered over the window goes to one invocation, and what a poll brings in while the stack stops
goes back to the queue at once instead of waiting out its visibility timeout."""
from __future__ import annotations

import io
import threading

import pytest


@pytest.fixture
def stack(monkeypatch):
    from cellpaint.local.stack import create_stack, start_moto

    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    server, endpoint = start_moto(0)
    try:
        yield create_stack(endpoint, "http://127.0.0.1:9/sns")
    finally:
        server.stop()


def source(stack, stop: threading.Event, **changes):
    from cellpaint.local.runner import Console, SqsEventSource

    spec = next(f for f in stack.functions if f.logical_id == "NotifyFunction")
    src = SqsEventSource(stack, spec, {**spec.sqs_sources[0], **changes}, Console(io.StringIO()), stop)
    src.sqs.purge_queue(QueueUrl=src.source["url"])  # the bucket's s3:TestEvent
    src.calls = []
    src.handler = lambda event, context: src.calls.append([r["body"] for r in event["Records"]]) or {"batchItemFailures": []}
    return src


def test_one_poll_gathers_the_window_into_one_invocation(stack):
    src = source(stack, threading.Event(), batch_size=3, window=5)
    for i in range(3):
        src.sqs.send_message(QueueUrl=src.source["url"], MessageBody=f'{{"n": {i}}}')
    src.poll_once()  # the batch is full before the window ends: no waiting it out
    assert [sorted(c) for c in src.calls] == [['{"n": 0}', '{"n": 1}', '{"n": 2}']]
    assert not src.sqs.receive_message(QueueUrl=src.source["url"], WaitTimeSeconds=0).get("Messages")  # deleted


def test_a_message_received_while_stopping_goes_back_at_once(stack):
    stop = threading.Event()
    src = source(stack, stop)
    src.sqs.send_message(QueueUrl=src.source["url"], MessageBody='{"n": 1}')
    stop.set()
    src.poll_once()
    assert src.calls == [] and not src.busy
    [back] = src.sqs.receive_message(QueueUrl=src.source["url"], WaitTimeSeconds=0)["Messages"]  # visible again now
    assert back["Body"] == '{"n": 1}'


def test_stop_does_not_wait_for_an_idle_long_poll(stack):
    from cellpaint.local.runner import LONG_POLL_S

    stop = threading.Event()
    src = source(stack, stop)
    src.start()
    joined = threading.Event()
    threading.Thread(target=lambda: (stop.set(), src.finish(), joined.set()), daemon=True).start()  # as LocalStack.stop
    assert joined.wait(LONG_POLL_S / 2)
    src.sqs.send_message(QueueUrl=src.source["url"], MessageBody='{"n": 2}')  # the poll returns with it ...
    src.join(timeout=LONG_POLL_S)
    assert not src.is_alive() and src.calls == []  # ... and hands it back, uninvoked
    assert src.sqs.receive_message(QueueUrl=src.source["url"], WaitTimeSeconds=2)["Messages"][0]["Body"] == '{"n": 2}'
