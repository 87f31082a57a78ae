"""Exchange with 1C through files in the "Штрих-М: Кассир 5" format (file-exchange.md).

1C treats each register as a "ККМ Offline": it writes a goods file per register and, after each
Z report, loads the register's report file. Here: :mod:`.goods` reads goods files, :mod:`.catalogue`
keeps each store's goods, :mod:`.report` writes report blocks, :mod:`.ledger` knows which shifts
are closed and exported, :mod:`.poller` does the work in a thread, :mod:`.settings` reads the
configuration, :mod:`.loading` and :mod:`.export` do the two jobs, :mod:`.status` keeps what the
operator sees. :func:`init_exchange` wires it to the fiscal service.
"""

from __future__ import annotations

import logging
from typing import Any

from .poller import Exchange
from .settings import ExchangeSettings, load_settings

__all__ = ["EXTENSION", "Exchange", "ExchangeSettings", "exchange_of", "init_exchange"]

log = logging.getLogger(__name__)

#: Key of the exchange in ``app.extensions`` (absent when no register takes part).
EXTENSION = "kkt_exchange"


def init_exchange(app: Any, service: Any) -> Exchange | None:
    """Create and start the exchange when any register in DEVICES has a store or exchange files."""
    settings = load_settings(app.config)
    if not settings.enabled:
        return None
    for store in settings.stores.values():
        if store.warning:
            log.warning("обмен с 1С: %s", store.warning)
    exchange = Exchange(settings, service)
    service.shift_observers.append(exchange.shift_closed)
    app.extensions[EXTENSION] = exchange
    exchange.start()
    return exchange


def exchange_of(app: Any) -> Exchange | None:
    """The app's exchange (started in this process), or None when it is not configured."""
    exchange = app.extensions.get(EXTENSION)
    if exchange is not None:
        exchange.start()
    return exchange
