# /etc/kkt/site.py — настройки сервера kkt (образец). Здесь только то, что отличается от conf.py;
# полный список параметров с пояснениями — в conf.py и в README («Настройки»).
# Файл читает kkt.wsgi (Apache) или gunicorn через переменную окружения KKT_SETTINGS.
# Права: владелец root, группа www-data, chmod 640 — в файле хеши паролей.
#
# Example site settings for a real ATOL 55F; copy to /etc/kkt/site.py and edit.

# Касса по сети (Ethernet/Wi-Fi, порт 5555) или по USB (/dev/ttyACM0, пользователь в группе dialout).
DEVICE_URL = "socket://192.168.1.50:5555"
# DEVICE_URL = "/dev/ttyACM0"

ACCESS_PASSWORD = "0000"
OPERATOR_PASSWORD = "30"

# Интернет-продажи: оплата картой, кассир не указывается.
DEFAULT_PAYMENT = "electronic"
TAXATION = None  # как зарегистрирована ККТ; или "osn", "usnIncome", "usnIncomeOutcome", "patent"
# Оплата с сайта — расчёт в интернете (с 01.09.2025 теги 1125, 1187 и 1008): адрес сайта и
# признак; 1С тогда обязана присылать CustomerContact.
# ONEC_INTERNET = True
# ONEC_SETTLEMENT_PLACE = "https://shop.example.ru"

# Журнал чеков и лог — в каталогах, куда может писать www-data.
JOURNAL_PATH = "/var/lib/kkt/journal.sqlite3"
LOG_FILE = "/var/log/kkt/kkt.log"
LOG_LEVEL = "INFO"

# 1С из исходного скрипта не шлёт логин и пароль: POST /kkt без пароля — только с этих адресов.
ONEC_ALLOWED_ADDRESSES = ["127.0.0.1", "::1", "192.168.1.10"]

# Пользователи JSON API. Хеш пароля: /opt/kkt/venv/bin/python -m kktapp.passwd kassa1 --role cashier
AUTH_REQUIRED = True
USERS = {
    # "kassa1": {"password_hash": "scrypt:32768:8:1$...", "role": "cashier"},
    # "admin": {"password_hash": "scrypt:32768:8:1$...", "role": "admin"},
}
