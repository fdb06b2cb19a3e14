"""Write template.yaml as CloudFormation sees it after the SAM transform (what `sam deploy`
creates), for the checkov scan in .ci/check-template.sh and tests/test_template.py.

    python .ci/sam_expand.py template.yaml OUT.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellpaint.local.template import samconfig  # noqa: E402


def expand(template: Path) -> dict:
    import boto3
    from cfnlint.decode import cfn_yaml
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator
    from samtranslator.utils.py27hash_fix import to_py27_compatible_template, undo_mark_unicode_str_in_template

    doc = json.loads(json.dumps(cfn_yaml.load(str(template))))
    for logical_id, resource in doc["Resources"].items():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):  # local folders until `sam package`; the transform wants S3
            if isinstance(props.get(key), str):
                props[key] = f"s3://placeholder/{logical_id}.zip"
    # The region fills in the pseudo parameters. Managed policies are looked up by name only for
    # `Policies: [SomeName]`, which the template does not use.
    # As samtranslator.translator.transform.transform does, so generated ids are SAM's own.
    to_py27_compatible_template(doc, {})
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=samconfig()["region"]))
    return undo_mark_unicode_str_in_template(translator.translate(doc, parameter_values={}, get_managed_policy_map=lambda: {}))


if __name__ == "__main__":
    out = Path(sys.argv[2])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(expand(Path(sys.argv[1])), indent=1))
    print(out)
