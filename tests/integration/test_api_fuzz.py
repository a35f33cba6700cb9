"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis strategies).

Whatever a caller sends, within or outside the documented shapes, the API answers without a server
error, and every error is a problem document (Open311's routes answer with the errors its specification
defines: a list of code and description, in JSON or XML). Runs as an administrator (the widest access), except
logout, which would end the shared session. (schemathesis' own pytest plugin does not run under
pytest 9, so its per-operation Hypothesis strategies are driven here directly.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

pytestmark = pytest.mark.integration
SKIP = {("POST", "/api/v1/auth/logout")}


def _send(app_client, case, token):
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers={"Authorization": f"Bearer {token}"})
    request = {key: kwargs[key] for key in ("method", "url", "headers", "params", "cookies") if kwargs.get(key)}
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        request["content"] = data if isinstance(data, (bytes, str)) else str(data)
    return app_client.request(**request)


def assert_open311_error(response, where):
    import xml.etree.ElementTree as ET

    content_type = response.headers["content-type"]
    if content_type.startswith("text/xml"):
        root = ET.fromstring(response.content)
        assert root.tag == "errors" and root.find("error/code").text == str(response.status_code), where
        assert root.find("error/description").text, where
    else:
        assert content_type.startswith("application/json"), f"{where}: {content_type}"
        body = response.json()
        assert body[0]["code"] == response.status_code and body[0]["description"], f"{where}: {body}"


def test_no_server_error_and_errors_are_problem_documents(app_client, tokens):
    schema = schemathesis.openapi.from_dict(app_client.get("/api/openapi.json").json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    app_client.cookies.clear()
    for operation in operations:
        if (operation.method.upper(), operation.path) in SKIP:
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            response = _send(app_client, case, tokens["admin"])
            where = f"{case.method} {case.formatted_path}"
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:500]}"
            if response.status_code >= 400 and operation.path.startswith("/open311/"):
                assert_open311_error(response, where)
            elif response.status_code >= 400:
                assert response.headers["content-type"].startswith("application/problem+json"), f"{where}: {response.text[:300]}"
                body = response.json()
                assert body["status"] == response.status_code and body["detail"], f"{where}: {body}"

        check()
        app_client.cookies.clear()
