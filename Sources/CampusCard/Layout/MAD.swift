import MifareClassic

/// Why a MAD could not be read: a code and the one-line message.
public struct MADError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// Not the 32 bytes of blocks 1 and 2.
        case length
        /// The CRC in block 1 byte 0 does not match: no MAD, or sector 0 damaged.
        case crc
    }
    public let code: Code
    public let description: String
    public init(_ code: Code, _ description: String) {
        self.code = code
        self.description = description
    }
}

/// The MIFARE Application Directory v1 in sector 0 (NXP AN10787): which application owns sectors 1-15, so
/// a terminal recognises a foreign card and other applications can share the card.
///
/// Blocks 1 and 2: byte 0 CRC-8, byte 1 info byte (bits 0-5: card publisher sector), then 15 AIDs of 2 bytes for
/// sectors 1...15, application code first, function cluster code second (AID = cluster << 8 | application).
public struct MAD: Hashable, Sendable {
    /// AIDs of sectors 1...15 (index 0 = sector 1).
    public var aids: [UInt16]
    /// The info byte: the card publisher sector (0 = none).
    public var info: UInt8

    /// Sector free / defective / reserved, as AN10787 defines.
    public static let free: UInt16 = 0x0000
    public static let defective: UInt16 = 0x0001
    public static let reserved: UInt16 = 0x0002
    public static let cardHolder: UInt16 = 0x0004

    /// Key A of the MAD sector, public by definition (AN10787).
    public static let keyA = MifareKey(hex: "A0A1A2A3A4A5")!
    /// MAD sector access: data read A|B, write B; trailer 011 (78 77 88).
    public static let accessBits = AccessBits(data: AccessCondition(code: 0b100)!, trailer: AccessCondition(code: 0b011)!)
    /// General purpose byte of sector 0's trailer: DA (MAD available) + multi-application card + MAD version 1.
    public static let generalPurposeByte: UInt8 = 0xC1

    public init(aids: [UInt16], info: UInt8 = 0) {
        precondition(aids.count == 15, "MAD v1 lists sectors 1...15")
        self.aids = aids
        self.info = info
    }

    /// Decodes blocks 1 and 2 (32 bytes); throws when the CRC does not match.
    public init(blocks: [UInt8]) throws {
        guard blocks.count == 32 else { throw MADError(.length, "a MAD v1 is 32 bytes (blocks 1 and 2), \(blocks.count) given") }
        guard Self.crc(Array(blocks[1...])) == blocks[0] else {
            throw MADError(.crc, "the card's MAD (sector 0) has a bad CRC: it is not a MAD card, or sector 0 is damaged")
        }
        info = blocks[1]
        aids = (0..<15).map { UInt16(blocks[3 + $0 * 2]) << 8 | UInt16(blocks[2 + $0 * 2]) }
    }

    /// Blocks 1 and 2, CRC included.
    public var blocks: [UInt8] {
        var body: [UInt8] = [info]
        for aid in aids { body += [UInt8(aid & 0xFF), UInt8(aid >> 8)] }
        return [Self.crc(body)] + body
    }

    /// The sectors (1...15) registered to `aid`.
    public func sectors(of aid: UInt16) -> [Int] { aids.indices.filter { aids[$0] == aid }.map { $0 + 1 } }

    /// AN10787 CRC-8: polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x1D), preset 0xC7 (the document's 0xE3, bit-mirrored).
    public static func crc(_ bytes: [UInt8]) -> UInt8 {
        var crc: UInt8 = 0xC7
        for byte in bytes {
            crc ^= byte
            for _ in 0..<8 { crc = crc & 0x80 != 0 ? (crc << 1) ^ 0x1D : crc << 1 }
        }
        return crc
    }
}
