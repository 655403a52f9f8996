#!/usr/bin/env python3
"""Writes seeds for the fuzz targets that start from structured input:
- llrp_frame: hand-built LLRP messages (layouts from the LLRP 1.0.1 standard); the first byte of
  every seed is the target's read size;
- provision_bundle: tiny provisioning bundles as `tar czf` makes them (docs/provisioning.md)."""
import gzip
import io
import os
import struct
import tarfile

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


# provision_bundle: a complete bundle that passes every check (an EC P-256 CA and a client
# certificate for CN store-0042/till-1 made with openssl once, an ops key line from the fleet
# tests), and the same files stored uncompressed, so that mutations reach the tar headers and
# the files' text directly instead of having to make sense as deflate.
BUNDLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "provision_bundle")
CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBfDCCASGgAwIBAgIUU/rlZORcCCraM0alwNTK97PkWBIwCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHZnV6ei1jYTAgFw0yNjEyMDcwNjA3MDRaGA8yMTI2MTExMzA2
MDcwNFowEjEQMA4GA1UEAwwHZnV6ei1jYTBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABPADfCyqdnAbOc6YPK0rtjVkRn10YYvA0xipzt8lPGhIzpWf+XdWk1dzx/Zk
dUQV8txvo5EEnlozTki5mMKfT3SjUzBRMB0GA1UdDgQWBBQ2QqnZgmnV4WCpb1HL
fP2VRdDdxjAfBgNVHSMEGDAWgBQ2QqnZgmnV4WCpb1HLfP2VRdDdxjAPBgNVHRMB
Af8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQD5v/DQ149pn8E2erRxNHVb8Nht
fHqCuMiIZn13+HYguQIhANt9bCHr1d7s5GQjLVOJ65UCgUqFKLmlCDT3r8NoCFYl
-----END CERTIFICATE-----
"""
CLIENT_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBlTCCATqgAwIBAgIUQxBbAU1PZpiAMXjoz5V8Vukj8DkwCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHZnV6ei1jYTAgFw0yNjEyMDcwNjA3MjZaGA8yMTI2MTExMzA2
MDcyNlowHDEaMBgGA1UEAwwRc3RvcmUtMDA0Mi90aWxsLTEwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAAR6VWfX+U4540CEEmSUcR1o+hPIimwWmcabH+c6sZ77G1LW
gT4x0vat9tTcyrO0F1j7SU2If4eGNLR0hMbWzU2Do2IwYDAJBgNVHRMEAjAAMBMG
A1UdJQQMMAoGCCsGAQUFBwMCMB0GA1UdDgQWBBRoSJheMZLXfjbCehA5EpFjGtZP
8TAfBgNVHSMEGDAWgBQ2QqnZgmnV4WCpb1HLfP2VRdDdxjAKBggqhkjOPQQDAgNJ
ADBGAiEAueHK/+G8Plc59lOt3EHZ/ls2vANdRpTWQoJtXchUMTsCIQD3g4wsJ1+j
Qc79Z0Prnw45uiQ+2Gc37e2GwS4mAbpgFA==
-----END CERTIFICATE-----
"""
CLIENT_KEY = """\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgZmEL0lH8T3c1GrKH
PbuuOxAPbWk0lmesou7hqGfBvLShRANCAAR6VWfX+U4540CEEmSUcR1o+hPIimwW
mcabH+c6sZ77G1LWgT4x0vat9tTcyrO0F1j7SU2If4eGNLR0hMbWzU2D
-----END PRIVATE KEY-----
"""
BUNDLE = {
    "bundle.toml": 'agent_id = "store-0042/till-1"\nbroker = "mqtts://broker.example:8883"\n',
    "ca.pem": CA_PEM,
    "client.pem": CLIENT_PEM,
    "client.key": CLIENT_KEY,
    "ops.pub": "relais-ed25519 6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw= fe812c12f3ab4ce6\n",
    "api-tokens": "till-1 0123456789abcdefghijklmnopqrstuv\n",
}


def tar_bytes(files, prefix="", end_blocks=True):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            info.mode = 0o600
            info.mtime = 1767225600
            tar.addfile(info, io.BytesIO(data))
        # Without the end-of-archive blocks and the record padding: the seeds must fit the
        # 4 KiB that scripts/fuzz.sh lets an input grow to.
        end = tar.offset
    data = out.getvalue()
    return data if end_blocks else data[:end]


BUNDLE_SEEDS = {
    "complete_in_a_directory": gzip.compress(tar_bytes(BUNDLE, "store-0042_till-1/"), 9, mtime=0),
    "complete_at_the_top": gzip.compress(tar_bytes(BUNDLE), 9, mtime=0),
    "manifest_and_tokens_stored": gzip.compress(
        tar_bytes({k: BUNDLE[k] for k in ("bundle.toml", "api-tokens")}, end_blocks=False), 0, mtime=0
    ),
    "certificates_stored": gzip.compress(
        tar_bytes({k: BUNDLE[k] for k in ("client.pem",)}, end_blocks=False), 0, mtime=0
    ),
}

os.makedirs(BUNDLE_DIR, exist_ok=True)
for name, data in BUNDLE_SEEDS.items():
    assert len(data) <= 4096, (name, len(data))
    with open(os.path.join(BUNDLE_DIR, name), "wb") as f:
        f.write(data)
print(f"{len(BUNDLE_SEEDS)} seeds written to {BUNDLE_DIR}")
