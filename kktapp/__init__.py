"""kkt — network fiscalisation service for ATOL cash registers (54-ФЗ).

``create_app`` is the Flask application factory used by kkt.wsgi (mod_wsgi) and by
``gunicorn 'kktapp:create_app()'``. Configuration comes from conf.py next to the package,
then from the file named by KKT_SETTINGS, then from ``test_config``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

__version__ = "0.1.0"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The commented defaults: the one place every setting's default value is defined.
CONF_PATH = os.path.join(ROOT, "conf.py")

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the application: config, logging, journal and device service, blueprints."""
    app = Flask(__name__, instance_path=os.path.join(ROOT, "instance"))
    load_config(app, test_config)
    from .logsetup import configure_logging

    configure_logging(app)
    init_service(app)
    register_blueprints(app)
    return app


def load_config(app: Flask, test_config: Mapping[str, Any] | None) -> None:
    """conf.py defaults, then the KKT_SETTINGS site file, then the test mapping."""
    app.config.from_pyfile(CONF_PATH)
    app.config.from_envvar("KKT_SETTINGS", silent=True)
    if test_config:
        app.config.from_mapping(test_config)
    if not app.config.get("JOURNAL_PATH"):
        from .files import make_private_dirs

        make_private_dirs(app.instance_path)
        app.config["JOURNAL_PATH"] = os.path.join(app.instance_path, "journal.sqlite3")


def init_service(app: Flask) -> None:
    """Create the per-process fiscal service and start its device owners.

    Starting here rather than on the first request matters after a restart or an Apache
    reload: queued receipts and receipts with an unknown outcome are settled at once, not
    when the next caller happens to arrive. A process forked later (gunicorn --preload)
    starts its own owners on first use.
    """
    from .service import FiscalService

    service = FiscalService.from_config(app.config)
    app.extensions["kkt"] = service
    service.start()
    from .exchange import init_exchange

    init_exchange(app, service)


def register_blueprints(app: Flask) -> None:
    """One blueprint per contract: the 1C endpoint, the JSON API, the atol-kkt-service compat."""
    from .web import api, apidocs, compat, goods, kkmserver, kkt1c, monitoring, operator  # noqa: F401 - goods adds its route to api.bp

    app.register_blueprint(kkt1c.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(compat.bp)
    app.register_blueprint(kkmserver.bp)
    app.register_blueprint(monitoring.bp)
    app.register_blueprint(operator.bp)
    # Unknown paths and bad path parameters under a contract's prefix: that contract's JSON errors.
    from .web.common import route_errors_by_prefix

    route_errors_by_prefix(app, [("/api/compat/", compat.http_error), ("/api/", api.http_error),
                                 ("/kkt/", kkt1c.http_error), ("/Execute/", kkmserver.http_error)])
    # The same pages under /kkt/: the shipped Apache config passes /kkt/... to the app as is.
    app.register_blueprint(monitoring.bp, url_prefix="/kkt", name="monitoring_kkt")
    app.register_blueprint(operator.bp, url_prefix="/kkt", name="operator_kkt")
    app.register_blueprint(apidocs.bp)
