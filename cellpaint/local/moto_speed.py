"""Two costs of moto (5.2) that grow with the work, made constant for `cellpaint local`. Both give
the answers moto gives; only the time changes. Measured on a 1,000-pair folder (py-spy): the
first was a quarter of the embedded AWS's time, the second a fifth.

- SQS ReceiveMessage builds every attribute of the queue, ApproximateNumberOfMessages included
  (a pass over all its messages), for each message it returns, only to read
  MessageRetentionPeriod: with 20,000 upload events waiting, each receive of 10 messages checked
  200,000. Here it reads the queue's retention period directly.
- The server finds each request's service by listing moto's package folder on disk; the list
  does not change while it runs, so it is listed once.
"""
from __future__ import annotations


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
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
