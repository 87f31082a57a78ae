"""Passwords in host packets: the link's DEBUG dumps and the wire tap mask the same bytes,
found from the task buffer's header and the command table (kktapp/atol/masking.py)."""

from __future__ import annotations

from kktapp.atol import commands, masking, taskbuf
from kktapp.atol.link import mask_secrets
from kktapp.atol.tap import adapter

ENTER_MODE_1 = b"\x56\x01\x00\x00\x00\x30"  # 56: mode 1, mode password 30 (4 BCD bytes)


def test_add_masks_access_and_mode_password():
    add = taskbuf.encode_request(taskbuf.Add(5, taskbuf.encode_task(1234, ENTER_MODE_1)))
    assert mask_secrets(add) == bytes.fromhex("C1 00 05") + b"**" + b"\x56\x01****"


def test_ack_add_masks_after_its_longer_header():
    packet = taskbuf.encode_request(taskbuf.AckAdd(4, 5, taskbuf.encode_task(1234, ENTER_MODE_1)))
    head = len(taskbuf.encode_request(taskbuf.AckAdd(0, 0, b"")))
    masked = mask_secrets(packet)
    assert masked[:head] == packet[:head]
    assert masked[head:] == b"**" + b"\x56\x01****"


def test_a_truncated_packet_masks_what_it_has():
    add = taskbuf.encode_request(taskbuf.Add(5, taskbuf.encode_task(1234, ENTER_MODE_1)))
    assert mask_secrets(add[:4]) == add[:3] + b"*"
    assert mask_secrets(add[:-2]) == bytes.fromhex("C1 00 05") + b"**" + b"\x56\x01**"


def test_other_requests_pass_unchanged():
    for request in (taskbuf.Ack(3), taskbuf.Req(3), taskbuf.Abort()):
        data = taskbuf.encode_request(request)
        assert mask_secrets(data) == data


def test_every_password_field_of_the_table_is_masked():
    """Any command whose layout names a password (with a fixed place) is masked, not just 56."""
    found = 0
    for cmd in commands.COMMANDS.values():
        placed = masking.field_layout(cmd.request, len(cmd.prefix))
        secret = [(a, b) for name, a, b in placed if masking.is_secret(name) and b is not None]
        if not secret:
            continue
        body = cmd.prefix + bytes(range(0x11, 0x11 + max(b for _a, b in secret) - len(cmd.prefix)))
        packet = taskbuf.encode_request(taskbuf.Add(1, taskbuf.encode_task(0, body)))
        masked = mask_secrets(packet)
        start = masking.task_start(packet) + taskbuf.PASSWORD_BYTES
        for a, b in secret:
            assert masked[start + a:start + b] == b"*" * (b - a), cmd.name
        found += 1
    assert found >= 1  # 56 at least


def test_the_tap_uses_the_same_definition():
    assert adapter.secret_ranges is masking.secret_ranges
    assert adapter.is_secret is masking.is_secret
