"""`cellpaint local up|demo`: the whole stack on this machine. moto (server mode, loopback) is the
AWS API, the resources come from template.yaml, the Lambda handlers run in-process on the events
the stack delivers, Batch jobs run as subprocesses on CPU, and an HTTP webhook receives the SNS
notifications. See docs/local.md."""
