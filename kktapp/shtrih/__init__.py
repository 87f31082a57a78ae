"""Shtrih-M cash registers: protocol v1/v2 framing, commands, driver, emulator and probe.

Shaped like :mod:`kktapp.atol`; every layout cites shtrih-protocol.md and its sources, and
every unverified choice lives in :mod:`.model`.
"""
