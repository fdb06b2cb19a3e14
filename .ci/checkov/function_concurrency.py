"""CKV_CELLPAINT_1, in place of CKV_AWS_115: a function's concurrency is bounded either by
ReservedConcurrentExecutions or, for a function fed by SQS, by ScalingConfig.MaximumConcurrency on
every SQS event (what Lambda recommends for SQS: reserved concurrency throttles deliveries, and a
throttled delivery counts as a receive towards the dead-letter queue). Loaded by checkov from
--external-checks-dir for template.yaml itself, where each function has its events beside it."""
from checkov.cloudformation.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult


class FunctionConcurrencyBounded(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(name="Lambda concurrency is bounded (ReservedConcurrentExecutions or SQS ScalingConfig.MaximumConcurrency)",
                         id="CKV_CELLPAINT_1", categories=[CheckCategories.GENERAL_SECURITY],
                         supported_resources=["AWS::Serverless::Function", "AWS::Lambda::Function"])

    def scan_resource_conf(self, conf: dict) -> CheckResult:
        props = conf.get("Properties") or {}
        if props.get("ReservedConcurrentExecutions") is not None:
            return CheckResult.PASSED
        sqs = [e.get("Properties") or {} for e in (props.get("Events") or {}).values() if isinstance(e, dict) and e.get("Type") == "SQS"]
        if sqs and all((e.get("ScalingConfig") or {}).get("MaximumConcurrency") for e in sqs):
            return CheckResult.PASSED
        return CheckResult.FAILED


check = FunctionConcurrencyBounded()
