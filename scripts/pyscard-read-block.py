#!/usr/bin/python3
"""Reads one MIFARE Classic block through pyscard, independently of our Swift code.

usage: pyscard-read-block.py READER BLOCK KEY_A_HEX
Prints the UID and the block as hex; exits 2 when no card, 3 when authentication or the read fails.
Used by the integration tests as an independent PC/SC client; handy for technicians too.
"""
import sys
from smartcard.System import readers
from smartcard.Exceptions import NoCardException, CardConnectionException

name, block, key = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
matches = [r for r in readers() if str(r) == name]
if not matches:
    print(f"no reader named {name!r}", file=sys.stderr)
    sys.exit(2)
connection = matches[0].createConnection()
try:
    connection.connect()
except (NoCardException, CardConnectionException) as error:
    print(f"no card: {error}", file=sys.stderr)
    sys.exit(2)

def send(apdu):
    data, sw1, sw2 = connection.transmit(apdu)
    return data, (sw1 << 8) | sw2

uid, sw = send([0xFF, 0xCA, 0x00, 0x00, 0x00])
_, sw_load = send([0xFF, 0x82, 0x00, 0x00, 0x06] + list(key))
trailer = block | 3 if block < 128 else block | 15
_, sw_auth = send([0xFF, 0x86, 0x00, 0x00, 0x05, 0x01, 0x00, trailer, 0x60, 0x00])
if sw_load != 0x9000 or sw_auth != 0x9000:
    print(f"authentication failed: load {sw_load:04X} auth {sw_auth:04X}", file=sys.stderr)
    sys.exit(3)
data, sw_read = send([0xFF, 0xB0, 0x00, block, 0x10])
if sw_read != 0x9000:
    print(f"read failed: {sw_read:04X}", file=sys.stderr)
    sys.exit(3)
print("uid", bytes(uid).hex().upper())
print("block", bytes(data).hex().upper())
