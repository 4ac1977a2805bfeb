/// Why a dump was refused.
public struct CardImageError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// A whole card's memory in block order: exactly the raw dump (.mfd/.bin) Proxmark3, libnfc and MIFARE Classic
/// Tool read and write: 1024 bytes for a 1K card, 4096 for a 4K card, keys in the trailers.
public struct CardImage: Hashable, Sendable {
    public let size: CardSize
    public private(set) var mfd: [UInt8]

    /// Takes a raw dump; throws unless it is 1024 or 4096 bytes.
    public init(mfd: [UInt8]) throws {
        guard let size = CardSize(byteCount: mfd.count) else {
            throw CardImageError(message: "a MIFARE Classic dump is 1024 (1K) or 4096 (4K) bytes in block order; this one has \(mfd.count)")
        }
        self.size = size
        self.mfd = mfd
    }

    /// The 16 bytes of `block`.
    public func block(_ block: Int) -> [UInt8] { Array(mfd[block * 16..<block * 16 + 16]) }

    public mutating func setBlock(_ block: Int, _ data: [UInt8]) {
        precondition(data.count == 16 && size.contains(block: block))
        mfd.replaceSubrange(block * 16..<block * 16 + 16, with: data)
    }

    /// The 4-byte UID (NUID) at the start of block 0.
    public var uid: [UInt8] { Array(mfd[0..<4]) }

    /// Block 0's BCC (byte 4) is the XOR of the 4 UID bytes on a genuine card.
    public var uidCheckByteIsValid: Bool { uid.reduce(0, ^) == mfd[4] }

    /// The parsed trailer of `sector`.
    public func trailer(sector: Int) throws -> SectorTrailer {
        try SectorTrailer(block: block(size.trailerBlock(ofSector: sector)))
    }

    /// Every sector whose trailer would lock the sector if written (inconsistent access bits).
    public func trailerProblems() -> [(sector: Int, error: AccessBitsError)] {
        (0..<size.sectorCount).compactMap { sector in
            do {
                _ = try trailer(sector: sector)
                return nil
            } catch let error as AccessBitsError {
                return (sector, error)
            } catch {
                return (sector, AccessBitsError(message: "\(error)"))
            }
        }
    }
}

/// The JSON dump: every block in hex, plus per sector its keys and access conditions decoded into words.
/// Decoding uses only `blocks`; the rest is for people reading the file.
extension CardImage: Codable {
    private enum CodingKeys: String, CodingKey {
        case format, size, uid, blocks, sectors
    }

    struct SectorSummary: Codable {
        var sector: Int
        var keyA: String
        var keyB: String
        var accessBits: String
        var access: [String]
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode("onecard-mifare-dump-v1", forKey: .format)
        try container.encode(size.rawValue, forKey: .size)
        try container.encode(Hex.string(uid), forKey: .uid)
        try container.encode((0..<size.blockCount).map { Hex.string(block($0)) }, forKey: .blocks)
        let sectors = (0..<size.sectorCount).map { sector -> SectorSummary in
            let trailer = block(size.trailerBlock(ofSector: sector))
            let access = (try? AccessBits(bytes: Array(trailer[6..<9])))
            let words = access.map { bits in (0..<4).map { bits.describeGroup($0) } } ?? ["INVALID access bits"]
            return SectorSummary(sector: sector, keyA: Hex.string(Array(trailer[0..<6])), keyB: Hex.string(Array(trailer[10..<16])),
                                 accessBits: Hex.string(Array(trailer[6..<9])), access: words)
        }
        try container.encode(sectors, forKey: .sectors)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let blocks = try container.decode([String].self, forKey: .blocks)
        var bytes: [UInt8] = []
        for (index, text) in blocks.enumerated() {
            guard let block = Hex.bytes(text), block.count == 16 else {
                throw DecodingError.dataCorruptedError(forKey: .blocks, in: container,
                                                       debugDescription: "block \(index) is not 32 hex digits")
            }
            bytes += block
        }
        do { try self.init(mfd: bytes) } catch {
            throw DecodingError.dataCorruptedError(forKey: .blocks, in: container, debugDescription: "\(error)")
        }
    }
}
