"""Write template.yaml as CloudFormation sees it after the SAM transform (what `sam deploy`
creates), for the checkov scan in scripts/check-template.sh.

    python scripts/sam_expand.py template.yaml OUT.json
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellpaint.local.template import samconfig  # noqa: E402


class NoManagedPolicies:
    """The transform looks managed policies up by name only for `Policies: [SomeName]`; we have none."""

    def load(self) -> dict:
        return {}


def expand(template: Path) -> dict:
    from cfnlint.decode import cfn_yaml
    from samtranslator.translator.transform import transform

    os.environ.setdefault("AWS_DEFAULT_REGION", samconfig()["region"])  # the transform's pseudo parameters
    doc = json.loads(json.dumps(cfn_yaml.load(str(template))))
    for logical_id, resource in doc["Resources"].items():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):  # local folders until `sam package`; the transform wants S3
            if isinstance(props.get(key), str):
                props[key] = f"s3://placeholder/{logical_id}.zip"
    return transform(doc, {}, NoManagedPolicies())


if __name__ == "__main__":
    out = Path(sys.argv[2])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(expand(Path(sys.argv[1])), indent=1))
    print(out)
