"""HTTP contracts of the service: one Flask blueprint per client family.

``kkt1c`` is the 1C:Enterprise endpoint (POST/GET /kkt), ``api`` the JSON API, ``compat`` the
atol-kkt-service compatible contract, ``kkmserver`` KKM Server's POST /Execute.
:mod:`.common` and :mod:`.fields` hold what they share:
raw-body JSON reading, marshmallow fields for money, quantity and VAT, and error translation.
Views only parse, validate and translate; device logic lives in :mod:`kktapp.service`.
"""
