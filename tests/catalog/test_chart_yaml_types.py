"""Chart.yaml as Helm reads it: YAML's own types (dates, numbers and booleans where Helm wants
text, lists where it wants text) are either read as the text written or refused with a 422
that names the field, never a 500, and never stored in a shape that stops Helm reading the
repository's index."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.catalog.charts import InvalidChart, inspect_chart
from tests.support.chartrepo import upload
from tests.support.charts import chart_archive
from tests.support.problems import assert_problem

HEAD = "apiVersion: v2\nname: demo\nversion: 1.0.0\n"


def with_chart_yaml(text: str) -> bytes:
    """The test chart `demo`, whose Chart.yaml is `text` exactly as written."""
    return chart_archive("demo", files={"demo/Chart.yaml": text.encode()})


async def test_a_created_date_is_accepted_as_text(api: httpx.AsyncClient) -> None:
    # Unquoted, YAML reads this as a date; Helm knows no such Chart.yaml field and ignores it.
    response = await upload(api, with_chart_yaml(HEAD + "created: 2020-01-01\nappVersion: '2'\n"))
    assert response.status_code == 201, response.text

    entry = (await api.get("/chartrepo/api/charts/demo/1.0.0")).json()
    assert entry["appVersion"] == "2"
    assert entry["created"].endswith("Z")  # the repository's upload time, as Helm expects
    index = yaml.safe_load((await api.get("/chartrepo/index.yaml")).text)
    assert index["entries"]["demo"][0]["version"] == "1.0.0"


async def test_numbers_and_booleans_in_text_fields_keep_the_text_written(
    api: httpx.AsyncClient,
) -> None:
    chart_yaml = HEAD + (
        "appVersion: 1.10\n"  # a float to YAML: 1.1
        "description: 2020-01-01\n"
        "kubeVersion: 1.30\n"
        "keywords: [1.10, true, edge]\n"
        "annotations: {replicas: 3, since: 2020-01-01}\n"
        "maintainers: [{name: 007, email: null}]\n"
        "deprecated: false\n"
    )
    assert (await upload(api, with_chart_yaml(chart_yaml))).status_code == 201

    for entry in (
        (await api.get("/chartrepo/api/charts/demo/1.0.0")).json(),
        yaml.safe_load((await api.get("/chartrepo/index.yaml")).text)["entries"]["demo"][0],
    ):
        assert entry["appVersion"] == "1.10"
        assert entry["description"] == "2020-01-01"
        assert entry["kubeVersion"] == "1.30"
        assert entry["keywords"] == ["1.10", "true", "edge"]
        assert entry["annotations"] == {"replicas": "3", "since": "2020-01-01"}
        assert entry["maintainers"] == [{"name": "007", "email": None}]
        assert entry["deprecated"] is False


async def test_fields_helm_does_not_know_are_kept_as_json(api: httpx.AsyncClient) -> None:
    chart_yaml = HEAD + (
        "x-built: 2020-01-01T10:00:00Z\n"
        "x-ratio: .nan\n"
        "x-huge: 1.0e400\n"  # a float to YAML: infinity
        "x-blob: !!binary aGVsbG8=\n"
        "x-set: !!set {a, b}\n"
        "x-count: 3\n"
    )
    assert (await upload(api, with_chart_yaml(chart_yaml))).status_code == 201
    entry = (await api.get("/chartrepo/api/charts/demo/1.0.0")).json()
    assert entry["x-built"] == "2020-01-01T10:00:00Z"
    assert entry["x-ratio"] == ".nan"
    assert entry["x-huge"] == "1.0e400"
    assert entry["x-blob"] == "aGVsbG8="
    assert entry["x-set"] == {"a": None, "b": None}
    assert entry["x-count"] == 3


REFUSED = [
    ("appVersion: [1, 2]\n", "appVersion must be text"),
    ("description: {text: x}\n", "description must be text"),
    ("keywords: edge\n", "keywords must be a list"),
    ("maintainers: [null]\n", "maintainers[0] must be a mapping"),
    ("maintainers: [{name: [a]}]\n", "maintainers[0].name must be text"),
    ("annotations: [a]\n", "annotations must be a mapping"),
    ("deprecated: 'yes'\n", "deprecated must be true or false"),
    ("dependencies: [{name: db, enabled: 1}]\n", "dependencies[0].enabled must be true or false"),
    ("appVersion: " + "9" * 129 + "\n", "appVersion is longer than 128 characters"),
    ('x-note: "a\\0b"\n', "x-note holds a NUL character"),
    ('x-note: "\\ud800"\n', "x-note holds a lone UTF-16 surrogate"),
    ("x-map: {? [a, b] : c}\n", "x-map has a key that is not text"),
    ("<<: {x: 1}\n", "merge keys"),
    ("x-deep: " + "[" * 50_000 + "\n", "nested too deeply"),
]


@pytest.mark.parametrize(("extra", "fragment"), REFUSED, ids=[f for _, f in REFUSED])
async def test_shapes_helm_cannot_read_are_422(
    api: httpx.AsyncClient, extra: str, fragment: str
) -> None:
    response = await upload(api, with_chart_yaml(HEAD + extra))
    assert_problem(response, 422, fragment)
    assert (await api.get("/chartrepo/api/charts/demo/1.0.0")).status_code == 404


async def test_a_version_yaml_reads_as_a_number_is_refused_as_not_semver(
    api: httpx.AsyncClient,
) -> None:
    chart_yaml = "apiVersion: v2\nname: demo\nversion: 1.10\n"
    assert_problem(await upload(api, with_chart_yaml(chart_yaml)), 422, "'1.10' is not SemVer")
    long_version = "1.0.0-" + "a" * 130
    assert_problem(
        await upload(api, chart_archive("demo", long_version)), 422, "longer than 128 characters"
    )


async def test_a_directory_name_that_is_not_utf8_is_a_readable_422(api: httpx.AsyncClient) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", errors="surrogateescape") as tar:
        tar.addfile(tarfile.TarInfo("d\udcffmo/values.yaml"), io.BytesIO(b""))
    response = await upload(api, gzip.compress(buffer.getvalue()))
    assert_problem(response, 422, "no d\\\\udcffmo/Chart.yaml")


# Hypothesis: whatever Chart.yaml holds, an accepted chart's metadata is plain JSON that
# PostgreSQL stores (no NaN, no NUL, no lone surrogate) and a refused one is an InvalidChart.
TRICKY_SCALARS = [
    "2020-01-01", "2020-01-01T10:00:00Z", "1.10", "1.0e400", ".nan", "-.inf", "0x1F", "1:30",
    "yes", "~", "null", "true", "''", '"\\0"', '"\\ud800"', "!!binary aGVsbG8=", "!!bool x",
    "!!int x", "!!float x", "!!timestamp 2001-12-14", "!custom x", "9" * 5000, "[]", "{}",
]  # fmt: skip
FIELDS = ["appVersion", "description", "keywords", "maintainers", "annotations", "deprecated",
          "dependencies", "x-unknown", "tags", "home"]  # fmt: skip
yaml_values = st.recursive(
    st.sampled_from(TRICKY_SCALARS),
    lambda inner: st.lists(inner, max_size=3).map(lambda items: f"[{', '.join(items)}]")
    | st.dictionaries(st.sampled_from(["name", "email", "enabled", "tags", "1", "k"]), inner,
                      max_size=3).map(
        lambda d: "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"
    ),
    max_leaves=6,
)  # fmt: skip


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
@given(st.dictionaries(st.sampled_from(FIELDS), yaml_values, max_size=4))
def test_accepted_chart_yaml_is_always_storable_json(fields: dict[str, str]) -> None:
    text = HEAD + "".join(f"{name}: {value}\n" for name, value in fields.items())
    try:
        info = inspect_chart(with_chart_yaml(text))
    except InvalidChart as refusal:
        str(refusal).encode()  # the message itself goes into a JSON answer
        return
    rendered = json.dumps(info.metadata, allow_nan=False)
    assert "\\u0000" not in rendered
    rendered.encode()  # no lone surrogate
    for field in ("appVersion", "description"):
        assert info.metadata.get(field) is None or isinstance(info.metadata[field], str)
