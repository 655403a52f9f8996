#!/usr/bin/env python3
"""Writes hand-built LLRP messages (layouts from the LLRP 1.0.1 standard) as seeds for the
llrp_frame fuzz target. The first byte of every seed is the target's read size."""
import os
import struct

DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "llrp_frame")


def message(msg_type, msg_id, body=b""):
    return struct.pack(">HII", (1 << 10) | msg_type, 10 + len(body), msg_id) + body


def tlv(param_type, value=b""):
    return struct.pack(">HH", param_type, 4 + len(value)) + value


def tv(tv_type, value):
    return bytes([0x80 | tv_type]) + value


SEEDS = {
    # READER_EVENT_NOTIFICATION: UTCTimestamp + ConnectionAttemptEvent(success)
    "connection_event": message(63, 0, tlv(246, tlv(128, struct.pack(">Q", 1)) + tlv(256, b"\0\0"))),
    # ADD_ROSPEC_RESPONSE with LLRPStatus(0, "")
    "add_rospec_ok": message(30, 1, tlv(287, b"\0\0\0\0")),
    # An error status with a nested ParameterError/FieldError
    "add_rospec_error": message(
        30, 2,
        tlv(287, struct.pack(">HH", 101, 3) + b"bad" + tlv(289, struct.pack(">HH", 183, 101) + tlv(288, struct.pack(">HH", 1, 301))))),
    # Two KEEPALIVEs in one read
    "keepalives": message(62, 5) + message(62, 6),
    # RO_ACCESS_REPORT: EPC-96 tag with antenna/RSSI/first seen, EPCData tag, a custom parameter
    "report": message(
        61, 9,
        tlv(240, tv(13, bytes.fromhex("3074257BF7194E4000001A85")) + tv(1, b"\0\1") + tv(6, b"\xc4") + tv(2, struct.pack(">Q", 7)) + tv(8, b"\0\3"))
        + tlv(240, tlv(241, struct.pack(">H", 16) + b"\xab\xcd") + tv(1, b"\0\2"))
        + tlv(1023, struct.pack(">II", 25882, 1) + b"xyz")),
}

os.makedirs(DIR, exist_ok=True)
for i, (name, data) in enumerate(SEEDS.items()):
    with open(os.path.join(DIR, name), "wb") as f:
        f.write(bytes([[255, 1, 7, 13, 3][i % 5]]) + data)
print(f"{len(SEEDS)} seeds written to {DIR}")
