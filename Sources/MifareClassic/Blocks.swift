/// A sector trailer: key A, access bits, the general-purpose byte, key B (MF1S50 §8.6.3).
/// Its description never shows the keys.
public struct SectorTrailer: Hashable, Sendable, CustomStringConvertible {
    public var keyA: MifareKey
    public var accessBits: AccessBits
    /// Byte 9, free for the application (MAD uses it as the info byte in sector 0).
    public var userByte: UInt8
    public var keyB: MifareKey

    public init(keyA: MifareKey, accessBits: AccessBits, userByte: UInt8 = 0x69, keyB: MifareKey) {
        self.keyA = keyA
        self.accessBits = accessBits
        self.userByte = userByte
        self.keyB = keyB
    }

    /// Parses a 16-byte trailer; throws on a wrong length or inconsistent access bits.
    public init(block: [UInt8]) throws {
        guard block.count == 16 else {
            throw AccessBitsError(message: "a sector trailer is 16 bytes, \(block.count) given")
        }
        keyA = MifareKey(bytes: Array(block[0..<6]))!
        accessBits = try AccessBits(bytes: Array(block[6..<9]))
        userByte = block[9]
        keyB = MifareKey(bytes: Array(block[10..<16]))!
    }

    public var block: [UInt8] { keyA.bytes + accessBits.bytes + [userByte] + keyB.bytes }

    /// The factory trailer: FF..FF keys, `FF 07 80 69`.
    public static let transport = SectorTrailer(keyA: .transport, accessBits: .transport, userByte: 0x69, keyB: .transport)

    public var description: String { "trailer(\(accessBits), user byte \(Hex.string([userByte])), keys redacted)" }
}

/// Why a block is not a valid value block.
public struct ValueBlockError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// A MIFARE value block: a signed 32-bit value stored three times (once inverted) and an address byte stored four
/// times (twice inverted), little-endian (MF1S50 §8.6.2.1).
public struct ValueBlock: Hashable, Sendable {
    public var value: Int32
    /// The user byte kept with the value (often the block number, or a pointer to a backup block).
    public var address: UInt8

    public init(value: Int32, address: UInt8) {
        self.value = value
        self.address = address
    }

    /// Decodes 16 bytes; throws unless every copy agrees.
    public init(block: [UInt8]) throws {
        guard block.count == 16 else { throw ValueBlockError(message: "a value block is 16 bytes, \(block.count) given") }
        let v0 = Array(block[0..<4]), v1 = Array(block[4..<8]), v2 = Array(block[8..<12])
        guard v0 == v2, zip(v0, v1).allSatisfy({ $0 == ~$1 }) else {
            throw ValueBlockError(message: "not a value block: the value and its inverted copy disagree (block torn or not a value block)")
        }
        guard block[12] == block[14], block[13] == block[15], block[12] == ~block[13] else {
            throw ValueBlockError(message: "not a value block: the address bytes disagree (block torn or not a value block)")
        }
        value = Int32(bitPattern: UInt32(v0[0]) | UInt32(v0[1]) << 8 | UInt32(v0[2]) << 16 | UInt32(v0[3]) << 24)
        address = block[12]
    }

    public var block: [UInt8] {
        let raw = UInt32(bitPattern: value)
        let v = [UInt8(raw & 0xFF), UInt8(raw >> 8 & 0xFF), UInt8(raw >> 16 & 0xFF), UInt8(raw >> 24)]
        return v + v.map { ~$0 } + v + [address, ~address, address, ~address]
    }

    public static func isValueBlock(_ block: [UInt8]) -> Bool { (try? ValueBlock(block: block)) != nil }
}
