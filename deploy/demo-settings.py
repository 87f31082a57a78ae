# Демо-настройки для `make run`: вместо кассы — встроенный эмулятор АТОЛ 55Ф,
# журнал чеков и лог — в папке var/ рядом с проектом. Для настоящей кассы возьмите за образец
# deploy/site.example.py, а не этот файл.
#
# Demo settings for `make run` (KKT_SETTINGS): the built-in emulator, journal and log under var/.
# Flask loads only UPPER-CASE names from this file; __file__ is this file's path.
import os

from werkzeug.security import generate_password_hash

_VAR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "var")

# make run starts the emulator on this port (EMULATOR_PORT) and passes its address here.
DEVICE_URL = os.environ.get("KKT_DEMO_DEVICE_URL", "socket://127.0.0.1:5555")
# make run SHTRIH=1: the Shtrih-M emulator is register 2 (protocol "shtrih").
if os.environ.get("KKT_DEMO_SHTRIH_URL"):
    DEVICES = [
        {"number": 1, "name": "АТОЛ (эмулятор)", "url": DEVICE_URL},
        {"number": 2, "name": "Штрих-М (эмулятор)", "url": os.environ["KKT_DEMO_SHTRIH_URL"], "protocol": "shtrih"},
    ]
JOURNAL_PATH = os.path.join(_VAR, "journal.sqlite3")
LOG_FILE = os.path.join(_VAR, "kkt.log")
LOG_LEVEL = "INFO"

# POST /kkt from this machine needs no password (as 1C sends none); the JSON API does:
# demo login "demo", password "demodemo" — for the demo on 127.0.0.1 only.
AUTH_REQUIRED = True
ONEC_ALLOWED_ADDRESSES = ["127.0.0.1", "::1"]
USERS = {"demo": {"password_hash": generate_password_hash("demodemo"), "role": "admin"}}
