#!/usr/bin/env python3
"""rpm-header.py RPM ENTRIES.json PACKAGER — add to an .rpm made by cargo-generate-rpm
what it cannot write: %changelog, Packager, Group and BuildHost.

cargo-generate-rpm 0.21 has no options for them (its rpm crate has a changelog,
the CLI does not expose it), and rpmlint calls a package without them an error.
This sets the changelog tags (CHANGELOGTIME, CHANGELOGNAME, CHANGELOGTEXT; the
entries come from scripts/changelog rpm), PACKAGER, GROUP (its empty value
becomes "Applications/Internet") and BUILDHOST (this machine's name) in the
main header, lays the header's data store out again in tag order (rpm
requires data in index order, each item aligned), and recomputes what the
signature header says about the main header: its SHA-1 and SHA-256 digests
and the header+payload size (and MD5, if present). The payload is untouched.
Rewrites the file in place; run `rpm -K` or rpmlint on the result.
"""
import hashlib
import os
import json
import socket
import struct
import sys

MAGIC = b"\x8e\xad\xe8\x01\x00\x00\x00\x00"
# type -> (size of one item, alignment); strings are NUL-terminated
FIXED = {0: (0, 1), 1: (1, 1), 2: (1, 1), 3: (2, 2), 4: (4, 4), 5: (8, 8), 7: (1, 1)}
STRINGS = (6, 8, 9)
REGION_TAGS = (61, 62, 63)  # HEADERIMAGE, HEADERSIGNATURES, HEADERIMMUTABLE
CHANGELOGTIME, CHANGELOGNAME, CHANGELOGTEXT = 1080, 1081, 1082
BUILDHOST, PACKAGER, GROUP = 1007, 1015, 1016
SIG_SIZE, SIG_MD5, SIG_SHA1, SIG_SHA256, SIG_LONGSIZE = 1000, 1004, 269, 273, 270


def read_header(buf, pos):
    if buf[pos:pos + 8] != MAGIC:
        raise SystemExit("rpm-changelog: no header magic at offset %d" % pos)
    il, dl = struct.unpack(">II", buf[pos + 8:pos + 16])
    idx = pos + 16
    store = buf[idx + 16 * il: idx + 16 * il + dl]
    entries = [list(struct.unpack(">IIiI", buf[idx + 16 * i: idx + 16 * i + 16])) for i in range(il)]
    return entries, store, idx + 16 * il + dl


def data_of(e, store):
    tag, typ, off, count = e
    if typ in STRINGS:
        end = off
        for _ in range(count if typ != 6 else 1):
            end = store.index(b"\0", end) + 1
        return store[off:end]
    size, _ = FIXED[typ]
    return store[off:off + size * count]


def build_header(entries_with_data):
    """entries_with_data: [(tag, type, count, bytes)] without the region; returns header bytes."""
    entries_with_data = sorted(entries_with_data, key=lambda x: x[0])
    store = bytearray()
    index = []
    for tag, typ, count, data in entries_with_data:
        align = FIXED.get(typ, (0, 1))[1]
        while len(store) % align:
            store += b"\0"
        index.append((tag, typ, len(store), count))
        store += data
    # The immutable region: its trailer (the last 16 bytes of the store) points
    # back over every index entry, the region's own included.
    n = len(index) + 1
    trailer_off = len(store)
    store += struct.pack(">IIiI", 63, 7, -16 * n, 16)
    index.insert(0, (63, 7, trailer_off, 16))
    out = bytearray(MAGIC) + struct.pack(">II", len(index), len(store))
    for e in index:
        out += struct.pack(">IIiI", *e)
    return bytes(out + store)


def main(path, entries_path, packager):
    buf = open(path, "rb").read()
    entries = json.load(open(entries_path))
    sig_entries, sig_store, sig_end = read_header(buf, 96)
    main_start = sig_end + (-sig_end % 8)
    h_entries, h_store, h_end = read_header(buf, main_start)
    payload = buf[h_end:]
    if h_entries[0][0] != 63:
        raise SystemExit("rpm-changelog: the main header does not start with an immutable region")
    replaced = (CHANGELOGTIME, CHANGELOGNAME, CHANGELOGTEXT, BUILDHOST, PACKAGER, GROUP)
    kept = []
    n_i18n = 1
    for e in h_entries[1:]:
        if e[0] == 100:  # HEADERI18NTABLE: one GROUP string per locale listed
            n_i18n = e[3]
        if e[0] in replaced:
            continue  # set below (running this twice gives the same file)
        kept.append((e[0], e[1], e[3], data_of(e, h_store)))
    kept += [(BUILDHOST, 6, 1, socket.gethostname().encode() + b"\0"),
             (PACKAGER, 6, 1, packager.encode() + b"\0"),
             (GROUP, 9, n_i18n, b"Applications/Internet\0" * n_i18n)]
    # rpm lists the newest entry first
    times = b"".join(struct.pack(">I", int(x["time"])) for x in entries)
    names = b"".join(x["name"].encode() + b"\0" for x in entries)
    texts = b"".join(x["text"].encode() + b"\0" for x in entries)
    kept += [(CHANGELOGTIME, 4, len(entries), times), (CHANGELOGNAME, 8, len(entries), names),
             (CHANGELOGTEXT, 8, len(entries), texts)]
    header = build_header(kept)

    # Signature header: the same entries, new values for what covers the main header.
    sig_store = bytearray(sig_store)
    for tag, typ, off, count in sig_entries:
        if tag == SIG_SHA1:
            sig_store[off:off + 40] = hashlib.sha1(header).hexdigest().encode()
        elif tag == SIG_SHA256:
            sig_store[off:off + 64] = hashlib.sha256(header).hexdigest().encode()
        elif tag == SIG_SIZE:
            sig_store[off:off + 4] = struct.pack(">I", len(header) + len(payload))
        elif tag == SIG_LONGSIZE:
            sig_store[off:off + 8] = struct.pack(">Q", len(header) + len(payload))
        elif tag == SIG_MD5:
            sig_store[off:off + 16] = hashlib.md5(header + payload).digest()
        elif tag == 5092:  # RPMSIGTAG_SHA3_256 (hex of the header)
            sig_store[off:off + 64] = hashlib.sha3_256(header).hexdigest().encode()
        # others (payload size, reserved space) do not depend on the main header
    sig = bytearray(MAGIC) + struct.pack(">II", len(sig_entries), len(sig_store))
    for e in sig_entries:
        sig += struct.pack(">IIiI", *e)
    sig += sig_store
    sig += b"\0" * (-len(sig) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(buf[:96] + bytes(sig) + header + payload)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.stderr.write(__doc__)
        sys.exit(2)
    main(sys.argv[1], sys.argv[2], sys.argv[3])
