#!/usr/bin/env python
"""How long `cellpaint local`'s embedded S3 takes to list one upload folder (ingest's listing,
shared/pipeline/ingest.py Folders.index), with moto as it is and with cellpaint/local/moto_speed.py.

A bucket of --keys keys, --folder of them the uploads of one folder (an image and a mask a pair),
the rest other prefixes (claims, results), written straight into moto's store; the folder is listed
as ingest lists it (ListObjectsV2, Delimiter "/", pages of 1,000). Median of --repeats listings each.

    .venv/bin/python scripts/bench_moto_listing.py --keys 120000 --folder 20000
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import boto3
from moto import mock_aws

ACCOUNT, REGION = "123456789012", "us-east-1"


def listing_s(s3, repeats: int) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="incoming/lab1/day/", Delimiter="/")
        n = sum(len(p.get("Contents", [])) for p in pages)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=120_000)
    ap.add_argument("--folder", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from moto.backends import get_backend
    from moto.s3.models import FakeKey

    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="bench")
        store = get_backend("s3")[ACCOUNT]["global"].buckets["bench"].keys
        for i in range(a.keys):
            k = f"incoming/lab1/day/p{i // 2:06d}{'.png' if i % 2 else '.mask.png'}" if i < a.folder else f"claims/x{i:07d}"
            store[k] = FakeKey(k, b"x", account_id=ACCOUNT, region_name=REGION)
        plain, n = listing_s(s3, a.repeats)
        from cellpaint.local import moto_speed

        moto_speed.apply()
        fast, n_fast = listing_s(s3, a.repeats)
    assert n == n_fast == a.folder
    print(f"{platform.processor() or platform.machine()}; moto listing {n} keys of a {a.keys}-key bucket, median of {a.repeats}:")
    print(f"  moto as it is:    {plain:.2f} s ({1000 * plain / n:.3f} ms a key)")
    print(f"  with moto_speed:  {fast:.2f} s ({1000 * fast / n:.3f} ms a key), {plain / fast:.2f}x")


if __name__ == "__main__":
    main()
