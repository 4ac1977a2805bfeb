#!/usr/bin/env python3
"""Writes Tests/MifareClassicTests/Fixtures/sample-1k.mfd: a realistic MIFARE Classic 1K dump.

Block 0: UID DE AD BE EF, BCC, SAK 08, ATQA 04 00, manufacturer bytes. Sector 0 and 2..15: transport trailers
(FF..FF keys, FF 07 80 69). Sector 1: text in block 4, a value block of 1000 in block 5 (address 5), block 6
zero; trailer with key A A0A1A2A3A4A5... no: key A 112233445566, key B 665544332211, access data 000/110/000,
trailer 011 (bytes computed below).
"""
import os

def value_block(value, address):
    v = value.to_bytes(4, "little", signed=True)
    inv = bytes(b ^ 0xFF for b in v)
    return v + inv + v + bytes([address, address ^ 0xFF, address, address ^ 0xFF])

def access_bits(groups):
    c1 = c2 = c3 = 0
    for i, code in enumerate(groups):
        c1 |= ((code >> 2) & 1) << i
        c2 |= ((code >> 1) & 1) << i
        c3 |= (code & 1) << i
    return bytes([((~c2 & 0xF) << 4) | (~c1 & 0xF), (c1 << 4) | (~c3 & 0xF), (c3 << 4) | c2])

uid = bytes([0xDE, 0xAD, 0xBE, 0xEF])
bcc = uid[0] ^ uid[1] ^ uid[2] ^ uid[3]
block0 = uid + bytes([bcc, 0x08, 0x04, 0x00]) + bytes.fromhex("6263646566676869")
transport = bytes([0xFF] * 6) + bytes.fromhex("FF078069") + bytes([0xFF] * 6)
blocks = [bytes(16)] * 64
blocks[0] = block0
for sector in range(16):
    blocks[sector * 4 + 3] = transport
blocks[1] = b"OneCard sample  "
blocks[4] = b"Hello, campus!  "
blocks[5] = value_block(1000, 5)
blocks[7] = bytes.fromhex("112233445566") + access_bits([0b000, 0b110, 0b000, 0b011]) + bytes([0x69]) + bytes.fromhex("665544332211")
out = os.path.join(os.path.dirname(__file__), "..", "Tests", "MifareClassicTests", "Fixtures", "sample-1k.mfd")
with open(out, "wb") as f:
    f.write(b"".join(blocks))
print(f"wrote {os.path.normpath(out)}")
