"""template.yaml as data: parsed with cfn-lint's YAML loader, intrinsics (Ref, Fn::Sub, Fn::GetAtt,
Fn::If and the condition functions) resolved against parameters, pseudo parameters and the
physical ids of the resources created so far. Nothing here knows the stack's wiring."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
NO_VALUE = object()  # AWS::NoValue: the property (or list item) is left out


class Unresolved(KeyError):
    """A Ref/GetAtt to a resource that does not exist yet: create it first."""


def samconfig(root: Path = ROOT) -> dict:
    """stack_name and region of samconfig.toml's default environment (as `sam deploy` uses them)."""
    doc = tomllib.loads((root / "samconfig.toml").read_text())["default"]
    return {"stack_name": doc["global"]["parameters"]["stack_name"], "region": doc["deploy"]["parameters"]["region"]}


class Template:
    def __init__(self, path: Path, params: dict, stack_name: str, region: str, account: str):
        self.doc = cfn_yaml.load(str(path))
        self.params = {}
        for name, spec in self.doc.get("Parameters", {}).items():
            value = params.get(name, spec.get("Default"))
            if value is None:
                continue
            if spec.get("AllowedPattern") and not re.fullmatch(spec["AllowedPattern"], str(value)):
                raise ValueError(f"parameter {name}={value!r} does not match {spec['AllowedPattern']}")
            self.params[name] = value.split(",") if spec["Type"] == "CommaDelimitedList" or spec["Type"].startswith("List<") else value
        self.pseudo = {"AWS::StackName": stack_name, "AWS::Region": region, "AWS::AccountId": account,
                       "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": NO_VALUE}
        self.refs: dict[str, str] = {}  # logical id -> what Ref returns
        self.atts: dict[str, dict] = {}  # logical id -> {attribute: value}

    @property
    def resources(self) -> dict:
        return self.doc["Resources"]

    def globals_for(self, kind: str) -> dict:
        return self.doc.get("Globals", {}).get(kind, {})

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.doc["Conditions"][name]))

    def enabled(self, logical_id: str) -> bool:
        cond = self.resources[logical_id].get("Condition")
        return cond is None or self.condition(cond)

    def register(self, logical_id: str, ref: str, **atts: str) -> None:
        self.refs[logical_id] = ref
        self.atts[logical_id] = atts

    def ref(self, name: str):
        for table in (self.pseudo, self.params, self.refs):
            if name in table:
                return table[name]
        raise Unresolved(name)

    def getatt(self, name: str, attr: str):
        try:
            return self.atts[name][attr]
        except KeyError:
            raise Unresolved(f"{name}.{attr}") from None

    def sub(self, arg) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def one(m: re.Match) -> str:
            name = m.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                return str(self.getatt(*name.split(".", 1)))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def resolve(self, v):
        if isinstance(v, dict):
            if len(v) == 1:
                (fn, a), = v.items()
                if fn == "Ref":
                    return self.ref(a)
                if fn == "Fn::GetAtt":
                    return self.getatt(*(a if isinstance(a, list) else a.split(".", 1)))
                if fn == "Fn::Sub":
                    return self.sub(a)
                if fn == "Fn::If":
                    return self.resolve(a[1] if self.condition(a[0]) else a[2])
                if fn == "Fn::Equals":
                    return self.resolve(a[0]) == self.resolve(a[1])
                if fn == "Fn::Not":
                    return not self.resolve(a[0])
                if fn == "Fn::And":
                    return all(self.resolve(x) for x in a)
                if fn == "Fn::Or":
                    return any(self.resolve(x) for x in a)
                if fn == "Condition":
                    return self.condition(a)
                if fn == "Fn::Select":
                    return self.resolve(a[1])[int(self.resolve(a[0]))]
                if fn == "Fn::Split":
                    return self.resolve(a[1]).split(a[0])
                if fn == "Fn::Join":
                    return a[0].join(str(x) for x in self.resolve(a[1]))
            out = {k: self.resolve(x) for k, x in v.items()}
            return {k: x for k, x in out.items() if x is not NO_VALUE}
        if isinstance(v, list):
            return [x for x in (self.resolve(x) for x in v) if x is not NO_VALUE]
        return v


def camel(v):
    """CloudFormation's PascalCase properties -> the API's camelCase (Batch, for example)."""
    if isinstance(v, dict):
        return {k[:1].lower() + k[1:]: camel(x) for k, x in v.items()}
    if isinstance(v, list):
        return [camel(x) for x in v]
    return v
