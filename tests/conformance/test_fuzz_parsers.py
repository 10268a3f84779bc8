"""Property-based fuzzing (hypothesis) of every parser that takes a user's bytes: label
selectors, `continue` tokens, If-Match, JSON and YAML bodies, kubeconfigs, chart archives.
Each either accepts its input or refuses it with its documented error (a 4xx, or the
ValueError its service turns into a 422), and never raises anything else.

`FUZZ_EXAMPLES` sets the depth (CI default below; raise it locally for a deep run)."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import tarfile
from collections.abc import Callable
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.catalog.charts import InvalidChart, inspect_chart
from app.clusters.address_guard import EndpointRefused
from app.clusters.kubeconfig import InvalidKubeconfig, parse_kubeconfig
from app.errors import AppError
from app.kit.body import decode_json, decode_yaml
from app.kit.etag import check_write_preconditions
from app.kit.paging import encode_token, page_request
from app.kit.selectors import parse_selector

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,  # no .hypothesis folder in the work tree; failures print their example
)
DEEP = "[" * 100_000  # nesting far past Python's recursion limit


def refused_as_documented(call: Callable[[], Any], *documented: type[Exception]) -> None:
    refusal: AppError | None = None
    try:
        call()
    except AppError as error:
        refusal = error
    except documented:
        return
    if refusal is not None:
        assert 400 <= refusal.status < 500, f"{type(refusal).__name__} {refusal.status}: {refusal}"


SELECTOR_ALPHABET = "abz09-_./=!,() \t" + "in" + "notex" + "é\x00"


@FUZZ
@given(st.text(alphabet=SELECTOR_ALPHABET, max_size=80) | st.text(max_size=80))
@example("tier in (a,b),!legacy,env!=prod")
@example("a in (" + "b," * 10_000 + ")")
def test_label_selectors(text: str) -> None:
    refused_as_documented(lambda: parse_selector(text))


@FUZZ
@given(
    st.text(max_size=200)
    | st.binary(max_size=200).map(lambda raw: base64.urlsafe_b64encode(raw).decode())
    | st.builds(
        lambda after, q, v: base64.urlsafe_b64encode(
            json.dumps({"v": v, "after": after, "q": q}).encode()
        ).decode(),
        st.none() | st.integers() | st.text(max_size=20) | st.floats() | st.lists(st.integers()),
        st.text(max_size=20) | st.integers(),
        st.integers(-2, 3),
    )
)
@example(encode_token("name\x00", "x"))
def test_continue_tokens(token: str) -> None:
    refused_as_documented(lambda: page_request(10, token, None))


@FUZZ
@given(st.text(max_size=120))
@example('"5", W/"6"')
@example("*")
def test_if_match(header: str) -> None:
    refused_as_documented(lambda: check_write_preconditions(header, 5))


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
@example(DEEP.encode())
@example(b'{"a": 1, "a": 2}')
@example(b"\xff\xfe")
def test_json_bodies(raw: bytes) -> None:
    refused_as_documented(lambda: decode_json(raw))


yaml_like = st.text(alphabet="ab:-[]{}&*!|>'\"#,? \n\t0", max_size=200)


@FUZZ
@given(st.binary(max_size=300) | yaml_like.map(str.encode))
@example(DEEP.encode())
@example(b"a: &x [1]\nb: *x\n")
@example(b"--- 1\n--- 2\n")
@example(b"!!python/object/apply:os.system ['true']")
def test_yaml_bodies(raw: bytes) -> None:
    refused_as_documented(lambda: decode_yaml(raw))


SERVERS = st.sampled_from(
    ["https://127.0.0.1:6443", "http://127.0.0.1", "https://[::1]:1", "https://10.0.0.1",
     "ftp://127.0.0.1", "https://", "", "https://127.0.0.1:99999", "https://user@127.0.0.1"]
)  # fmt: skip
scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=12)


@st.composite
def kubeconfigs(draw: st.DrawFn) -> str:
    """Mostly well-formed kubeconfigs with fuzzed fields (server addresses are literals:
    a fuzzed host name would go to DNS)."""
    name = draw(st.sampled_from(["edge", "", "x"]) | st.text(max_size=8))
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": draw(st.sampled_from(["Config", "Other"])),
        "current-context": draw(st.sampled_from([name, "missing"]) | scalars),
        "clusters": [{"name": name, "cluster": {
            "server": draw(SERVERS),
            "certificate-authority-data": draw(st.sampled_from(["", "!!", "Zm9v"]) | scalars),
            "insecure-skip-tls-verify": draw(st.booleans() | scalars),
        }}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": draw(
            st.sampled_from([name, "nobody"]) | scalars)}}],
        "users": [{"name": name, "user": draw(st.fixed_dictionaries({}, optional={
            "token": scalars, "client-certificate-data": scalars, "client-key-data": scalars,
            "exec": st.dictionaries(st.text(max_size=5), scalars, max_size=2),
            "username": scalars, "password": scalars,
        }))}],
    }  # fmt: skip
    for section in draw(st.lists(st.sampled_from(["clusters", "contexts", "users"]), max_size=2)):
        document[section] = draw(scalars | st.lists(scalars, max_size=2))
    text = yaml.safe_dump(document)
    return base64.b64encode(text.encode()).decode() if draw(st.booleans()) else text


@FUZZ
@given(kubeconfigs() | st.text(max_size=200) | yaml_like)
@example(DEEP)
@example("a" * 600_000)
def test_kubeconfigs(text: str) -> None:
    for allow in (True, False):
        refused_as_documented(
            lambda allow=allow: parse_kubeconfig(text, allow_private=allow, allow_insecure=allow),
            InvalidKubeconfig, EndpointRefused,
        )  # fmt: skip


def tgz(members: list[tuple[str, bytes, bytes]]) -> bytes:
    out = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=out, mode="wb") as zipped,
        tarfile.open(fileobj=zipped, mode="w") as archive,
    ):
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return out.getvalue()


member_names = st.sampled_from(
    ["demo/Chart.yaml", "demo/values.yaml", "../evil", "/abs", "demo/../../x", "other/Chart.yaml",
     "demo/templates/a.yaml", "Chart.yaml", "demo"]
) | st.text(max_size=20)  # fmt: skip
chart_yaml = st.one_of(
    st.binary(max_size=100),
    st.fixed_dictionaries({}, optional={
        "apiVersion": st.sampled_from(["v1", "v2", "v3"]) | scalars,
        "name": st.sampled_from(["demo", "Demo!", ""]) | scalars,
        "version": st.sampled_from(["1.0.0", "x", "1.0.0+build"]) | scalars,
        "appVersion": scalars, "description": scalars,
    }).map(lambda d: yaml.safe_dump(d).encode()),
)  # fmt: skip


@FUZZ
@given(
    st.lists(
        st.tuples(
            member_names,
            st.sampled_from([tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE,
                             tarfile.CHRTYPE, tarfile.FIFOTYPE]),
            chart_yaml,
        ),
        max_size=4,
    ).map(tgz)
    | st.binary(max_size=200)
    | st.binary(max_size=200).map(lambda raw: b"\x1f\x8b" + raw)
)  # fmt: skip
def test_chart_archives(archive: bytes) -> None:
    refused_as_documented(lambda: inspect_chart(archive), InvalidChart)
