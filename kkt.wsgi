# mod_wsgi entry point: WSGIScriptAlias /kkt /var/www/kkt/kkt.wsgi
#
# Apache's SetEnv does not reach os.environ, so the site settings file is named here.
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

os.environ.setdefault("KKT_SETTINGS", "/etc/kkt/site.py")

from kktapp import create_app  # noqa: E402

application = create_app()
