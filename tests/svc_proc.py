"""A FiscalService in a process of its own, for the cross-process tests.

    python tests/svc_proc.py JOURNAL URL [URL ...]

Devices 1..N are the URLs (ATOL driver). One JSON command per stdin line, one JSON answer per
stdout line:

    {"op": "start"}                                   → {"pid": ...}
    {"op": "sell", "key": "K", "device": 1, "wait": 10} → the job's to_dict()
    {"op": "owners"}                                  → {"1": true, ...} (this process owns …)

The process exits when stdin closes (or when it is killed, which is the point).
"""

from __future__ import annotations

import json
import logging
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from fakes import make_receipt  # noqa: E402

from kktapp.service import DeviceConfig, FiscalService  # noqa: E402


def main(argv: list[str]) -> int:
    """Serve commands from stdin until it closes."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(threadName)s %(name)s: %(message)s")
    journal, urls = argv[0], argv[1:]
    devices = [DeviceConfig(number=i, name=f"Касса {i}", url=url) for i, url in enumerate(urls, 1)]
    service = FiscalService(journal, devices, status_refresh=1)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "start":
            service.start()
            answer: dict = {"pid": os.getpid()}
        elif cmd["op"] == "sell":
            receipt = make_receipt(name=f"Товар {cmd['key']}")
            answer = service.submit_receipt(receipt, device=cmd.get("device", 1), key=cmd["key"],
                                            source="proc", wait=cmd.get("wait", 10)).to_dict()
        elif cmd["op"] == "owners":
            answer = {str(n): o.is_owner for n, o in service._owners.items()}
        else:
            answer = {"error": f"unknown op {cmd['op']}"}
        sys.stdout.write(json.dumps(answer, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
