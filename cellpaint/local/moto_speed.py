"""Costs of moto (5.2) that grow with the work, made constant for `cellpaint local`: the answers
are moto's; only the time changes. Measured with py-spy on folders of 1,000 and 10,000 pairs, where they were most
of the embedded AWS's time.

- SQS SendMessage (each S3 event) builds every attribute of the queue to read one, and three of
  them count the queue's messages: a 10,000-pair upload was N² work. Inside moto a count is kept
  COUNT_TTL_S (only ContentBasedDeduplication is read there); GetQueueAttributes counts afresh.
- SQS ReceiveMessage builds every attribute of the queue, ApproximateNumberOfMessages included
  (a pass over all its messages), for each message it returns, only to read
  MessageRetentionPeriod: with 20,000 upload events waiting, each receive of 10 messages checked
  200,000. Here it reads the queue's retention period directly.
- The server finds each request's service by listing moto's package folder on disk; the list
  does not change while it runs, so it is listed once.
"""
from __future__ import annotations

import time

COUNT_TTL_S = 60.0
COUNTS = ("approximate_number_of_messages", "approximate_number_of_messages_delayed", "approximate_number_of_messages_not_visible")


def _cached(name: str, count):
    def get(queue) -> int:
        cache = queue.__dict__.setdefault("_cellpaint_counts", {})
        hit = cache.get(name)
        if hit is None or time.monotonic() > hit[0]:
            t0 = time.monotonic()
            value = count(queue)
            # kept COUNT_TTL_S, or ten times what counting took (a second, on 20,000 messages)
            cache[name] = hit = (time.monotonic() + max(COUNT_TTL_S, 10 * (time.monotonic() - t0)), value)
        return hit[1]
    return property(get)


def apply() -> None:
    from moto import backends
    from moto.sqs import models
    from moto.sqs.models import SQSBackend

    if not hasattr(SQSBackend, "is_message_valid_based_on_retention_period"):
        return  # another moto: nothing to speed up here

    def is_message_valid_based_on_retention_period(self, queue_name: str, message) -> bool:
        queue = self.get_queue(queue_name)
        return int(queue.message_retention_period) + message.sent_timestamp / 1000 > models.unix_time()  # moto's clock

    SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period
    if not hasattr(SQSBackend.get_queue_attributes, "fresh"):
        plain = SQSBackend.get_queue_attributes

        def get_queue_attributes(self, queue_name: str, attribute_names):
            self.get_queue(queue_name).__dict__.pop("_cellpaint_counts", None)  # the API's answer: counted now
            return plain(self, queue_name, attribute_names)

        get_queue_attributes.fresh = True
        SQSBackend.get_queue_attributes = get_queue_attributes
    for name in COUNTS:
        if isinstance(getattr(models.Queue, name, None), property) and not hasattr(getattr(models.Queue, name).fget, "cached"):
            prop = _cached(name, getattr(models.Queue, name).fget)
            prop.fget.cached = True
            setattr(models.Queue, name, prop)
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
