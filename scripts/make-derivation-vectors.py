#!/usr/bin/python3
"""Writes Tests/CampusCardTests/Vectors/derivation.json: key-diversification and MAC vectors computed with Python's
`cryptography` package (an implementation independent of ours), per docs in Sources/CampusCard/Keys/KeyDerivation.swift.

M = UID (7 bytes, zero-padded) || sector || role code || version || b"OneCard campus v1 AN2"; key = CMAC(master, 01 || M).
Role codes: terminal 0A, loader 0B, mac 4D (sector FF). MAC = CMAC(macKey, UID || block || record || value BE)[:4].
"""
import json, os
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.ciphers import algorithms

def cmac(key, msg):
    c = CMAC(algorithms.AES(key)); c.update(msg); return c.finalize()

SYSTEM = b"OneCard campus v1 AN2"
ROLES = {"terminal": 0x0A, "loader": 0x0B, "mac": 0x4D}

def div_input(uid, sector, role, version):
    return bytes([1]) + uid + bytes(7 - len(uid)) + bytes([sector, ROLES[role], version]) + SYSTEM

master = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
vectors = []
for uid_hex in ["DEADBEEF", "04A1B2C3D4E5F6"]:
    uid = bytes.fromhex(uid_hex)
    for sector, role, version in [(1, "terminal", 1), (1, "loader", 1), (2, "terminal", 1), (2, "terminal", 2), (15, "loader", 3)]:
        key = cmac(master, div_input(uid, sector, role, version))
        vectors.append({"uid": uid_hex, "sector": sector, "role": role, "version": version,
                        "input": div_input(uid, sector, role, version).hex().upper(), "mifareKey": key[:6].hex().upper()})
mac_key = cmac(master, div_input(bytes.fromhex("DEADBEEF"), 0xFF, "mac", 1))
record = bytes(range(12))
mac = cmac(mac_key, bytes.fromhex("DEADBEEF") + bytes([9]) + record + (1000).to_bytes(4, "big"))[:4]
out = {"master": master.hex().upper(), "keys": vectors,
       "mac": {"uid": "DEADBEEF", "version": 1, "macKey": mac_key.hex().upper(), "block": 9, "record": record.hex().upper(),
               "value": 1000, "mac": mac.hex().upper()}}
path = os.path.join(os.path.dirname(__file__), "..", "Tests", "CampusCardTests", "Vectors", "derivation.json")
with open(path, "w") as f:
    json.dump(out, f, indent=2)
    f.write("\n")
print("wrote", os.path.normpath(path))
