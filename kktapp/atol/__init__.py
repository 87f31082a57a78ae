"""ATOL protocol v3: framing, task buffer, command table, link and driver (plus the emulator).

Layers, bottom up: :mod:`.codec` (BCD, text), :mod:`.framing` (packets, sans-I/O),
:mod:`.taskbuf` (C1–C5 / A1–B4), :mod:`.commands` (one definition per command),
:mod:`.errors` (device error texts), :mod:`.port` (socket or pyserial), :mod:`.link` (packet I/O), :mod:`.driver`
(:class:`~kktapp.atol.driver.AtolDriver`). Every unverified protocol choice is in :mod:`.model`.
"""
