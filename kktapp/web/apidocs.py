"""The API page for people: Swagger UI over /api/v1/openapi.json, served at /api/v1/docs.

Swagger UI's files come from the flask-swagger-ui wheel (requirements.txt) and are served by the
application itself: the page works on a server with no internet access, and a browser loads
nothing from elsewhere (validatorUrl is off too: Swagger UI would send the description to an
outside validator). Only that wheel's ``dist`` directory is used, located without importing the
package, and only the listed files are served from it. The page is public, like the description
it shows; trying a request needs the user's login (HTTP Basic, the Authorize button).
"""

from __future__ import annotations

import importlib.util
import os

from flask import Blueprint, Response, abort, render_template, send_from_directory, url_for

import kktapp

bp = Blueprint("apidocs", __name__, url_prefix="/api/v1/docs", template_folder="../templates")

#: The files of Swagger UI the page uses; nothing else in the wheel is reachable.
ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"})
#: A day: the files change only with the wheel's version, and the page itself is not cached.
ASSET_MAX_AGE = 86400

# A file, not an inline script, so the page keeps working under a Content-Security-Policy
# without 'unsafe-inline'.
_INIT_JS = """\
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-spec-url"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    persistAuthorization: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""


def dist_dir() -> str:
    """The ``dist`` directory of the installed flask-swagger-ui wheel."""
    spec = importlib.util.find_spec("flask_swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("flask-swagger-ui не установлен: pip install -r requirements.txt")
    return os.path.join(list(spec.submodule_search_locations)[0], "dist")


@bp.get("", endpoint="page")
@bp.get("/", endpoint="page_slash")
def page() -> str:
    """The interactive description of the JSON API."""
    return render_template("apidocs.html", version=kktapp.__version__, spec_url=url_for("api.openapi_json"))


@bp.get("/init.js")
def init_js() -> Response:
    """Starts Swagger UI on the page's description URL."""
    return Response(_INIT_JS, mimetype="text/javascript")


@bp.get("/assets/<name>")
def asset(name: str) -> Response:
    """One of Swagger UI's files, from the installed wheel."""
    if name not in ASSETS:
        abort(404)
    return send_from_directory(dist_dir(), name, max_age=ASSET_MAX_AGE)
