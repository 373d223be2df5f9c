"""GitHub's published OpenAPI description (npm @octokit/openapi), used to keep the fake honest.

Every request the tool sends to the fake is validated against the operation's
requestBody schema, and every response the fake sends against the operation's
response schema for that status.
"""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import referencing
from openapi_schema_validator import OAS30Validator
from referencing.jsonschema import DRAFT4

OCTOKIT_OPENAPI = "23.0.2"
SPEC_NAME = "api.github.com.json"


def fetch_spec(cache_dir: Path) -> Path:
    """The spec file, fetched once from the npm registry into llamapin's cache."""
    dest = cache_dir / "tools" / f"octokit-openapi-{OCTOKIT_OPENAPI}"
    spec = dest / SPEC_NAME
    if spec.is_file():
        return spec
    dest.mkdir(parents=True, exist_ok=True)
    # A folder of this run's own: two test sessions sharing the cache may fetch at once
    # (the same package file name, the same temporary name); the last rename wins, and
    # both renames put the same bytes in place.
    with tempfile.TemporaryDirectory(dir=dest, prefix=".fetch-") as work:
        out = subprocess.run(
            ["npm", "pack", "--silent", f"@octokit/openapi@{OCTOKIT_OPENAPI}"],
            cwd=work,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]
        with tarfile.open(Path(work) / out) as tar:
            member = tar.getmember(f"package/generated/{SPEC_NAME}")
            handle = tar.extractfile(member)
            assert handle is not None
            tmp = Path(work) / SPEC_NAME
            tmp.write_bytes(handle.read())
            tmp.replace(spec)
    return spec


class Spec:
    def __init__(self, path: Path) -> None:
        self.doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        resource = referencing.Resource.from_contents(self.doc, default_specification=DRAFT4)
        self.registry: referencing.Registry[Any] = referencing.Registry().with_resource(
            "spec", resource
        )
        self.paths: list[tuple[re.Pattern[str], str]] = []
        for template in self.doc["paths"]:
            regex = re.sub(
                r"\\\{([^}]+)\\\}",
                lambda m: ".+" if m.group(1) in ("ref", "path", "basehead") else "[^/]+",
                re.escape(template),
            )
            self.paths.append((re.compile(f"^{regex}$"), template))
        # Most literal characters first, so /git/ref/tags/x beats /git/ref/{ref}.
        self.paths.sort(key=lambda p: -len(re.sub(r"\{[^}]+\}", "", p[1])))

    def template(self, path: str) -> str | None:
        for regex, template in self.paths:
            if regex.match(path):
                return template
        return None

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        template = self.template(path)
        if template is None:
            return None
        op = self.doc["paths"][template].get(method.lower())
        return None if op is None else (template, op)

    def example(self, name: str) -> Any:
        return json.loads(json.dumps(self.doc["components"]["examples"][name]["value"]))

    def _schema_errors(self, schema: dict[str, Any], instance: Any) -> list[str]:
        validator = _validator(self, json.dumps(schema, sort_keys=True))
        return [
            f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"[:300]
            for e in validator.iter_errors(instance)
        ]

    def request_errors(self, method: str, path: str, body: Any) -> list[str]:
        found = self.operation(method, path)
        if found is None:
            return [f"{method} {path} is not in GitHub's API"]
        _, op = found
        content = op.get("requestBody", {}).get("content", {}).get("application/json")
        if content is None:
            return []
        return self._schema_errors(content["schema"], body)

    def response_errors(self, method: str, path: str, status: int, body: Any) -> list[str]:
        found = self.operation(method, path)
        if found is None:
            return [f"{method} {path} is not in GitHub's API"]
        template, op = found
        response = op["responses"].get(str(status))
        if response is None and status in (401, 403, 429):
            # Auth and rate-limit errors can answer any operation; GitHub documents
            # their body once, as basic-error.
            return self._schema_errors({"$ref": "#/components/schemas/basic-error"}, body)
        if response is None:
            return [f"{method} {template} documents no {status} response"]
        if "$ref" in response:
            response = self.resolve(response["$ref"])
        content = response.get("content", {}).get("application/json")
        if content is None:
            return [] if body is None else [f"{status} has no body in the spec"]
        return self._schema_errors(content["schema"], body)

    def response_headers(self, method: str, path: str, status: int) -> list[str]:
        """The headers the description documents for this answer (e.g. Location on 201)."""
        found = self.operation(method, path)
        response = None if found is None else found[1]["responses"].get(str(status))
        if response is None:
            return []
        if "$ref" in response:
            response = self.resolve(response["$ref"])
        return list(response.get("headers", {}))

    def resolve(self, ref: str) -> Any:
        node: Any = self.doc
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        return node


@cache
def _validator(spec: Spec, schema_json: str) -> OAS30Validator:
    # A discriminator's mapping names schemas by reference too (GET /user's oneOf).
    rooted = schema_json.replace('"$ref": "#/', '"$ref": "spec#/')
    schema = json.loads(rooted.replace('"#/components/schemas/', '"spec#/components/schemas/'))
    return OAS30Validator(schema, registry=spec.registry)
