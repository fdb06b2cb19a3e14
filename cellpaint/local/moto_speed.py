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
- S3 ListObjectVersions deep-copies every version in the bucket, its bytes included, for each
  page, whatever the prefix: a status or digest check of a 10,000-pair folder copied the bucket
  twenty times. Here it copies only the versions under the prefix, and shallowly (the listing
  marks a copy as latest; the bytes are only read).
- S3 ListObjectsV2 scans and sorts the whole bucket for each page, whatever the prefix: ingest's
  listing of a 10,000-pair folder (20 pages) read a bucket of 60,000 keys twenty times, once per
  invocation of 100 events. Here the bucket keeps its key names sorted, and a page is read from
  the prefix's place in them: the cost is the page's, not the bucket's.
- SQS DeleteMessageBatch passes over the whole queue twice for each message it deletes: 20,000
  upload events waiting made deleting them N². Here one pass deletes the batch.
- SQS ReceiveMessage lists every visible message of the queue before it takes the first ten
  (moto's own TODO): with 20,000 upload events waiting, each receive checked all of them (a fifth
  of the server's time in a 10,000-pair run). Here the visible messages are read lazily, in the
  same order, so a receive stops after the messages it returns.
- The server finds each request's service by listing moto's package folder on disk; the list
  does not change while it runs, so it is listed once.
"""
from __future__ import annotations

import bisect
import threading
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


_listing = threading.local()  # the prefix of the ListObjectVersions this thread is in, if any
_names_lock = threading.RLock()  # the server's threads list and write at once: a page reads a still list


_LISTED: dict[type, type] = {}


def _listed(cls: type) -> type:
    """A version's class as a listing copies it: sharing the original's bytes, so it must not close
    them when it is collected (moto's FakeKey.__del__ does)."""
    if cls not in _LISTED:
        _LISTED[cls] = type(cls.__name__, (cls,), {"__del__": lambda self: None})
    return _LISTED[cls]


class _Versions(list):
    """A key's versions as one listing sees them: copied without their bytes."""

    def __deepcopy__(self, memo):
        out = []
        for v in self:
            clone = object.__new__(_listed(type(v)))
            clone.__dict__.update(v.__dict__)
            out.append(clone)
        return out


def _speed_up_listing() -> None:
    from moto.s3.models import S3Backend
    from moto.s3.utils import _VersionedKeyStore

    if hasattr(S3Backend.list_object_versions, "fast") or not hasattr(_VersionedKeyStore, "iterlists"):
        return
    plain_lists, plain_list = _VersionedKeyStore.iterlists, S3Backend.list_object_versions

    def iterlists(self):
        prefix = getattr(_listing, "prefix", None)
        for key, versions in plain_lists(self):
            if prefix is None:
                yield key, versions
            elif key.startswith(prefix):
                yield key, _Versions(versions)

    def list_object_versions(self, bucket_name, delimiter=None, key_marker=None, max_keys=1000, prefix="", version_id_marker=None):
        _listing.prefix = prefix or ""
        try:
            return plain_list(self, bucket_name, delimiter=delimiter, key_marker=key_marker, max_keys=max_keys,
                              prefix=prefix, version_id_marker=version_id_marker)
        finally:
            _listing.prefix = None

    list_object_versions.fast = True
    _VersionedKeyStore.iterlists = _VersionedKeyStore.lists = iterlists
    S3Backend.list_object_versions = list_object_versions


def _names(store) -> list[str]:
    """The store's key names, sorted; built once, then kept in step by the store's own methods."""
    names = store.__dict__.get("_cellpaint_names")
    if names is None:
        names = store.__dict__["_cellpaint_names"] = sorted(dict.keys(store))
    return names


def _keep_sorted(cls: type) -> None:
    """The key store's methods that add or remove a name keep the sorted names in step; any other
    change of its names drops them (rebuilt at the next listing)."""
    def adding(plain):
        def method(self, key, value):
            with _names_lock:
                names = self.__dict__.get("_cellpaint_names")
                if names is not None and not dict.__contains__(self, key):
                    bisect.insort(names, key)
                return plain(self, key, value)
        return method

    def pop(self, key, *default):
        with _names_lock:
            names = self.__dict__.get("_cellpaint_names")
            if names is not None and dict.__contains__(self, key):
                del names[bisect.bisect_left(names, key)]
            return plain_pop(self, key, *default)

    def dropping(plain):
        def method(self, *args, **kwargs):
            with _names_lock:
                self.__dict__.pop("_cellpaint_names", None)
                return plain(self, *args, **kwargs)
        return method

    plain_pop = cls.pop
    cls.__setitem__, cls.setlist, cls.pop = adding(cls.__setitem__), adding(cls.setlist), pop
    for name in ("__delitem__", "clear", "update", "setdefault", "popitem"):
        setattr(cls, name, dropping(getattr(cls, name)))


def _after(name: str) -> str:
    """The least string above every string that starts with `name`."""
    return name[:-1] + chr(ord(name[-1]) + 1)


def _speed_up_key_listing() -> None:
    from moto.s3.models import FakeDeleteMarker, FakeTableStorageBucket, S3Backend
    from moto.s3.utils import _VersionedKeyStore

    if hasattr(S3Backend.list_objects_v2, "fast") or not hasattr(S3Backend, "_truncate_result"):
        return
    plain = S3Backend.list_objects_v2

    def list_objects_v2(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys):
        if isinstance(bucket, FakeTableStorageBucket) or (continuation_token and continuation_token not in self._pagination_tokens):
            return plain(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys)
        with _names_lock:
            return _page(self, bucket.keys, prefix or "", delimiter,
                         self._pagination_tokens[continuation_token] if continuation_token else start_after, max_keys)

    def _page(self, store, prefix, delimiter, limit, max_keys):
        names = _names(store)
        i = bisect.bisect_left(names, prefix)
        if limit:
            i = max(i, bisect.bisect_right(names, limit))
        items = []  # as moto's: keys (delete markers left out) and folders, in name order, after the limit
        while i < len(names) and names[i].startswith(prefix) and len(items) <= max_keys:
            name = names[i]
            cut = name.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:  # a folder: moto lists it whatever its keys are, deleted ones too
                folder = name[:cut + len(delimiter)]
                if not limit or folder > limit:
                    items.append(folder)
                i = bisect.bisect_left(names, _after(folder), i)
                continue
            versions = store.getlist(name)
            if versions and not isinstance(versions[-1], FakeDeleteMarker):
                items.append(versions[-1])
            i += 1
        return self._truncate_result(items, max_keys)

    list_objects_v2.fast = True
    _keep_sorted(_VersionedKeyStore)
    S3Backend.list_objects_v2 = list_objects_v2


class _Visible:
    """A queue's visible, undelayed messages, as moto's Queue.messages lists them, but read lazily:
    ReceiveMessage stops iterating once it has its messages. len() counts them all, as before."""

    def __init__(self, messages: list):
        self._messages = messages

    def __iter__(self):
        return (m for m in self._messages if m.visible and not m.delayed)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _speed_up_receives() -> None:
    from moto.sqs.models import Queue

    if getattr(Queue.messages.fget, "lazy", False):
        return

    def messages(self) -> _Visible:
        return _Visible(self._messages)

    messages.lazy, messages.plain = True, Queue.messages
    Queue.messages = property(messages)


def _speed_up_deletes() -> None:
    from moto.sqs.models import SQSBackend

    if hasattr(SQSBackend.delete_message_batch, "fast"):
        return

    def delete_message_batch(self, queue_name: str, receipts: list[dict]):
        queue = self.get_queue(queue_name)
        handles = {r["ReceiptHandle"] for r in receipts} - queue.deleted_messages
        if handles:
            keep = []
            for m in queue._messages:
                if m.receipt_handle in handles or handles.intersection(m._old_receipt_handles):
                    queue.pending_messages.discard(m)
                    queue.deleted_messages.update(m.all_receipt_handles)
                else:
                    keep.append(m)
            queue._messages = keep
        success, errors = [], []
        for r in receipts:  # as moto answers: a handle deleted before (in this batch too) is a success
            if r["ReceiptHandle"] in queue.deleted_messages:
                success.append(r["Id"])
            else:
                errors.append({"Id": r["Id"], "SenderFault": True, "Code": "ReceiptHandleIsInvalid",
                               "Message": f'The input receipt handle "{r["ReceiptHandle"]}" is not a valid receipt handle.'})
        return success, errors

    delete_message_batch.fast = True
    SQSBackend.delete_message_batch = delete_message_batch


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
    _speed_up_listing()
    _speed_up_key_listing()
    _speed_up_deletes()
    _speed_up_receives()
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
