"""The contract in the code: the rules the API enforces on a name, a label or a version are in
the OpenAPI document too (pattern, maxLength), so generated SDKs and schema-driven fuzzers know
them, and the API answers by them: a name the document allows is not refused for its form, one
it does not is refused with a 422 naming metadata.name in words (not a regex)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import StringConstraints, TypeAdapter, ValidationError

from app.main import create_app
from tests.support.platform import make_settings
from tests.support.problems import assert_problem
from tests.support.tenancy import PASSWORD, create_workspace

Body = Callable[[str], dict[str, Any]]
WS = "team-a"


def _object(spec: dict[str, Any]) -> Body:
    return lambda name: {"metadata": {"name": name}, "spec": spec}


def _application_version(name: str) -> dict[str, Any]:
    application, _, version = name.rpartition("-v")
    if not (application and re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+(-[0-9a-z.]+)?", version)):
        application, version = "web", "1.0.0"
    workload = {"deployments": [{"name": "web", "spec": {"template": {"spec": {
        "containers": [{"name": "web", "image": "nginx:1.27"}]}}}}]}  # fmt: skip
    spec = {"application": application, "version": version, "workload": workload}
    return {"metadata": {"name": name}, "spec": spec}


# The kinds a client creates: operationId, path, a body around a name, and whether a valid
# name alone makes the create succeed (the others refer to objects this test does not make:
# what matters there is that the name is not what is refused).
KINDS: dict[str, tuple[str, Body, bool]] = {
    "createRegion": ("/api/v1/regions", _object({}), True),
    "createCluster": ("/api/v1/clusters", _object({"region": "nowhere"}), False),
    "createWorkspace": ("/api/v1/workspaces", _object({}), True),
    "createApplication": ("/api/v1/applications", _object({}), True),
    "createApplicationVersion": ("/api/v1/applicationversions", _application_version, False),
    "createApplicationDeployment": (
        f"/api/v1/workspaces/{WS}/applicationdeployments",
        _object({"applicationVersionRef": "web-v1.0.0", "targets": [{"region": "nowhere"}]}),
        False,
    ),
    "createConfigSync": (
        f"/api/v1/workspaces/{WS}/configsyncs",
        _object({"data": {"a": "1"}, "targets": [{"region": "nowhere"}]}),
        False,
    ),
    "createVCluster": (
        f"/api/v1/workspaces/{WS}/vclusters", _object({"cluster": "nowhere"}), False,
    ),
    "createUser": ("/api/v1/users", _object({"password": PASSWORD}), True),
    "createServiceAccount": (
        "/api/v1/serviceaccounts", _object({"role": "platform-regular"}), True,
    ),
    "createWorkspaceServiceAccount": (
        f"/api/v1/workspaces/{WS}/serviceaccounts", _object({"role": "viewer"}), False,
    ),
}  # fmt: skip
DOTTED = {"createApplicationVersion"}  # names that carry a version: '.' allowed

VALID = ["a", "0", "a-b", "web-2", "1abc", "a" * 63]
VALID_DOTTED = ["web-v1.0.0", "monitoring-stack-v2.0.0-rc.1", "a-v0.0.1", "x" * 55 + "-v1.2.3"]
INVALID = ["", "A", "Web", "-a", "a-", "a_b", "a b", "a\n", "é", "a" * 64, "a/b"]
INVALID_DOTTED = ["a..b", "a.", ".a", "a.-", "A-v1.0.0", "x" * 57 + "-v1.2.3"]


@functools.cache
def document() -> dict[str, Any]:
    return create_app(make_settings("postgresql://unused/db")).openapi()


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = document()["components"]["schemas"][name]
    return schema


def string_branch(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema of the value itself, out of `anyOf: [{...}, {type: null}]`."""
    for branch in schema.get("anyOf", [schema]):
        if resolve(branch).get("type") != "null":
            return resolve(branch)
    raise AssertionError(f"no value schema in {schema}")


def operation(operation_id: str) -> dict[str, Any]:
    for operations in document()["paths"].values():
        for op in operations.values():
            if op.get("operationId") == operation_id:
                return dict(op)
    raise AssertionError(f"no operation {operation_id}")


def metadata_schema(operation_id: str) -> dict[str, Any]:
    content = operation(operation_id)["requestBody"]["content"]
    assert {"application/json", "application/yaml"} <= content.keys()
    body = resolve(content["application/json"]["schema"])
    return resolve(body["properties"]["metadata"])


def allows(schema: dict[str, Any], text: str) -> bool:
    """Whether a string schema allows `text`, read as a client reads it: the pattern is an
    ECMA-262 regex searched in the text (anchored by its own ^...$; in ECMA, as in Rust, `$` is
    the end of the text, which Python spells `\\Z`), and lengths."""
    if len(text) > schema.get("maxLength", len(text)) or len(text) < schema.get("minLength", 0):
        return False
    pattern = schema.get("pattern", "")
    return re.search(re.sub(r"\$$", r"\\Z", pattern), text) is not None


def assert_rule(schema: dict[str, Any], allowed: list[str], refused: list[str]) -> None:
    for text in allowed:
        assert allows(schema, text), (schema, text)
    for text in refused:
        assert not allows(schema, text), (schema, text)


@pytest.mark.parametrize("operation_id", [*KINDS, "createNodeGroup"])
def test_every_create_body_says_the_rule_of_metadata_name(operation_id: str) -> None:
    name = string_branch(metadata_schema(operation_id)["properties"]["name"])
    assert name["type"] == "string"
    assert name["maxLength"] == 63
    if operation_id in DOTTED:
        assert_rule(name, VALID + VALID_DOTTED, INVALID + INVALID_DOTTED)
    else:
        assert_rule(name, VALID, [*INVALID, "a.b", "web-v1.0.0"])


def test_labels_and_annotations_say_the_rule_of_their_keys() -> None:
    metadata = metadata_schema("createRegion")["properties"]
    labels, annotations = string_branch(metadata["labels"]), string_branch(metadata["annotations"])
    for keys in (labels["propertyNames"], annotations["propertyNames"]):
        assert keys["maxLength"] == 253 + 1 + 63
        assert_rule(keys, ["app.kubernetes.io/name", "tier"], ["bad key!", "/x", "", "A.b/c"])
    # Every key must match (patternProperties would leave the others free).
    assert "patternProperties" not in labels
    value = labels["additionalProperties"]
    assert value["maxLength"] == 63
    assert_rule(value, ["", "v1.2_b"], ["bad value!", "-a", "v" * 64])


def test_versions_namespaces_and_data_keys_say_their_rules() -> None:
    schemas = document()["components"]["schemas"]
    helm = schemas["HelmSource"]["properties"]
    assert helm["chart"]["maxLength"] == 63
    assert_rule(helm["chart"], ["ingress-nginx"], ["Ingress", "a_b"])
    assert_rule(helm["version"], ["1.2.3", "1.2.3+build.1"], ["1.2", "v1.2.3", "01.2.3"])
    version = string_branch(schemas["ApplicationVersionSpec"]["properties"]["version"])
    assert_rule(version, ["2.0.0", "2.0.0-rc.1"], ["2.0.0+build", "2.0"])
    vcluster = schemas["VClusterSpec"]["properties"]["chartVersion"]
    assert_rule(vcluster, ["0.30.1"], ["v0.30.1"])
    for spec in ("DeploymentSpec", "ConfigSyncSpec"):
        namespace = string_branch(schemas[spec]["properties"]["namespace"])
        assert namespace["maxLength"] == 63
        assert_rule(namespace, ["ws-team-a"], ["Kube_System", "a.b"])
    config = schemas["ConfigSyncSpec"]["properties"]
    assert_rule(config["data"]["propertyNames"], ["a", ".env", "config.yaml"], ["..", ".", "a/b"])
    assert_rule(config["binaryData"]["additionalProperties"], ["", "AA==", "AAA="], ["%%%", "A"])
    clusters = schemas["WorkspaceSpec"]["properties"]["clusters"]
    assert clusters["uniqueItems"] is True
    assert clusters["items"]["maxLength"] == 63


def patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            elif key == "patternProperties":
                yield from value
            yield from patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from patterns(item)


# What Python's `re` (schemathesis, this test), Rust's regex (pydantic-core, which enforces the
# patterns) and ECMA-262 (the document's dialect: SDKs, browsers, fuzzers) read differently or
# not at all: named groups, lookaround, atomic groups, possessive quantifiers, inline flags,
# \A \Z \z, and \d \w \b (Unicode in Python and Rust, ASCII in ECMA).
NOT_PORTABLE = re.compile(r"\(\?P|\(\?<|\(\?=|\(\?!|\(\?>|[*+?}]\+|\(\?[aiLmsux]|\\[AZzdwbDWB]")
DOCUMENT_PATTERNS = sorted(set(patterns(document())))


def test_the_document_has_patterns_every_engine_reads_alike() -> None:
    assert len(DOCUMENT_PATTERNS) >= 8, DOCUMENT_PATTERNS
    for pattern in DOCUMENT_PATTERNS:
        assert re.fullmatch(r"\^.*\$", pattern), pattern
        assert not NOT_PORTABLE.search(pattern), pattern


@functools.cache
def enforced(pattern: str) -> TypeAdapter[str]:
    return TypeAdapter(Annotated[str, StringConstraints(pattern=pattern)])


ALPHABET = "azAZ09-_./+=@ \n\t" + "é\u0661"  # ARABIC-INDIC ONE: Python's \d, not ECMA's


@pytest.mark.parametrize("pattern", DOCUMENT_PATTERNS)
@settings(max_examples=150, deadline=None, database=None)
@given(data=st.data())
def test_pydantic_enforces_each_pattern_as_python_reads_it(pattern: str, data: Any) -> None:
    """A fuzzer decides with Python's `re` whether its input should be accepted; the API decides
    with pydantic-core's Rust regex: the two agree on every pattern of the document."""
    text = data.draw(
        st.from_regex(pattern, fullmatch=True)
        | st.text(alphabet=ALPHABET, max_size=12)
        | st.from_regex(pattern, fullmatch=True).map(lambda s: s + "\n")
    )
    try:
        enforced(pattern).validate_python(text)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == (re.fullmatch(pattern, text) is not None), (pattern, text)


def field_errors(response: httpx.Response) -> dict[str, str]:
    return {e["field"]: e["message"] for e in response.json().get("errors", [])}


async def test_the_api_answers_names_as_the_document_says(api: httpx.AsyncClient) -> None:
    await create_workspace(api, WS)
    for operation_id, (path, body, created_alone) in KINDS.items():
        name_schema = string_branch(metadata_schema(operation_id)["properties"]["name"])
        dotted = operation_id in DOTTED
        valid = VALID_DOTTED if dotted else VALID
        invalid = INVALID + (INVALID_DOTTED if dotted else ["a.b"])
        for name in valid:
            assert allows(name_schema, name)
            response = await api.post(path, json=body(name))
            if created_alone:
                assert response.status_code == 201, (operation_id, name, response.text)
            else:
                assert "metadata.name" not in field_errors(response), (operation_id, response.text)
        for name in invalid:
            assert not allows(name_schema, name)
            response = await api.post(path, json=body(name))
            assert_problem(response, 422)
            message = field_errors(response).get("metadata.name")
            assert message is not None, (operation_id, name, response.text)
            # In words, naming the name: not pydantic's "String should match pattern '^...'".
            assert "pattern" not in message, (operation_id, name, message)
            assert repr(name) in message, (operation_id, name, message)
