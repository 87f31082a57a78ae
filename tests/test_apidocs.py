"""The API page /api/v1/docs: Swagger UI from the installed wheel, nothing from the internet."""

from __future__ import annotations

import re

import pytest

PAGE = "/api/v1/docs"


def test_page_is_served_without_login_and_names_the_description(api_config, request):
    testapp = request.getfixturevalue("testapp")  # api_config: HTTP Basic on, like a server
    for url in (PAGE, PAGE + "/"):
        page = testapp.get(url, status=200)
        assert page.content_type == "text/html"
        assert 'lang="ru"' in page.text
        assert 'data-spec-url="/api/v1/openapi.json"' in page.text
    # The description it reads is the one the API serves.
    assert testapp.get("/api/v1/openapi.json", status=200).json["openapi"].startswith("3.")


def test_everything_the_page_loads_comes_from_the_service(testapp):
    page = testapp.get(PAGE, status=200).text
    # No absolute URL to another host: the server may have no internet, the browser neither.
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)
    urls = re.findall(r"""(?:src|href)=["'](/[^"']+)["']""", page)
    assert {u.rsplit("/", 1)[-1] for u in urls} >= {"swagger-ui.css", "swagger-ui-bundle.js", "init.js"}
    for url in urls:
        if url.startswith("/api/v1/openapi.json"):
            continue
        answer = testapp.get(url, status=200)
        assert len(answer.body) > 50, url
        if url.endswith(".js"):
            assert "javascript" in answer.content_type, url
        if url.endswith(".css"):
            assert answer.content_type == "text/css", url
    init = testapp.get(PAGE + "/init.js").text
    assert "validatorUrl: null" in init  # Swagger UI would otherwise send the spec to an outside validator
    assert "SwaggerUIBundle" in testapp.get(PAGE + "/assets/swagger-ui-bundle.js").text


@pytest.mark.parametrize("name", ["../../../conf.py", "swagger-ui.js.map", "index.html", "oauth2-redirect.html", "x"])
def test_only_the_listed_assets_are_served(testapp, name):
    testapp.get(f"{PAGE}/assets/{name}", status=404)
