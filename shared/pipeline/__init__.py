"""The pipeline's plumbing: the bucket layout and versioned S3 reads, upload events, validation
of uploads, exactly-once leases, job manifests, notifications and the sweeper. boto3, and the
image operations of shared.imaging; no torch."""
