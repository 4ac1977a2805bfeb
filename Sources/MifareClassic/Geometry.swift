/// MIFARE Classic card sizes and their memory geometry.
///
/// 1K: 16 sectors of 4 blocks. 4K: sectors 0-31 of 4 blocks, sectors 32-39 of 16 blocks.
/// The last block of every sector is its trailer. (NXP MF1S50yyX, MF1S70yyX.)
public enum CardSize: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    case classic1K = "1K"
    case classic4K = "4K"

    /// Total memory in bytes (the size of a raw dump).
    public var byteCount: Int { blockCount * 16 }
    public var blockCount: Int { self == .classic1K ? 64 : 256 }
    public var sectorCount: Int { self == .classic1K ? 16 : 40 }

    /// The SAK a genuine card of this size answers (08 for 1K, 18 for 4K).
    public var sak: UInt8 { self == .classic1K ? 0x08 : 0x18 }
    /// The PC/SC Part 3 card name code in the ATR.
    public var atrNameCode: UInt16 { self == .classic1K ? 0x0001 : 0x0002 }

    public init?(byteCount: Int) {
        switch byteCount {
        case 1024: self = .classic1K
        case 4096: self = .classic4K
        default: return nil
        }
    }

    /// Number of blocks in a sector (4, or 16 for sectors 32-39 of a 4K card).
    public func blocksInSector(_ sector: Int) -> Int { sector < 32 ? 4 : 16 }

    /// The first block of a sector.
    public func firstBlock(ofSector sector: Int) -> Int { sector < 32 ? sector * 4 : 128 + (sector - 32) * 16 }

    /// The trailer block of a sector.
    public func trailerBlock(ofSector sector: Int) -> Int { firstBlock(ofSector: sector) + blocksInSector(sector) - 1 }

    /// The sector a block belongs to.
    public func sector(ofBlock block: Int) -> Int { block < 128 ? block / 4 : 32 + (block - 128) / 16 }

    /// Whether the block is its sector's trailer.
    public func isTrailer(_ block: Int) -> Bool { block == trailerBlock(ofSector: sector(ofBlock: block)) }

    /// The index of a data block within its access-condition group (0, 1, 2) or 3 for the trailer.
    /// In 16-block sectors, blocks 0-4, 5-9 and 10-14 share a group.
    public func accessGroup(ofBlock block: Int) -> Int {
        let sector = sector(ofBlock: block)
        let offset = block - firstBlock(ofSector: sector)
        if blocksInSector(sector) == 4 { return offset }
        return offset == 15 ? 3 : offset / 5
    }

    public func contains(block: Int) -> Bool { block >= 0 && block < blockCount }
    public func contains(sector: Int) -> Bool { sector >= 0 && sector < sectorCount }

    public var description: String { "MIFARE Classic \(rawValue)" }
}
