import CardReader
import MifareClassic
import SmartCard

/// What one sector gave up to the keys we had.
public struct SectorContents: Sendable {
    public var sector: Int
    /// The blocks in sector order; `nil` where no key could read the block.
    public var blocks: [[UInt8]?]
    /// The key A that authenticated, if any.
    public var keyA: MifareKey?
    /// The key B that authenticated (or was read back from the trailer), if any.
    public var keyB: MifareKey?
    /// Why the sector (or part of it) could not be read.
    public var problem: String?

    public init(sector: Int, blocks: [[UInt8]?], keyA: MifareKey? = nil, keyB: MifareKey? = nil, problem: String? = nil) {
        self.sector = sector
        self.blocks = blocks
        self.keyA = keyA
        self.keyB = keyB
        self.problem = problem
    }

    public var isComplete: Bool { blocks.allSatisfy { $0 != nil } }

    /// The trailer as a dump tool writes it: the keys that opened the sector in place of what the card reads back
    /// (a card always reads key A as zeros, and key B as zeros when it is not readable).
    public var trailerForDump: [UInt8]? {
        guard var trailer = blocks.last ?? nil else { return nil }
        if let keyA { trailer.replaceSubrange(0..<6, with: keyA.bytes) }
        if let keyB { trailer.replaceSubrange(10..<16, with: keyB.bytes) }
        return trailer
    }
}

/// Reads sectors with candidate keys, the way dump tools do: key A first, then key B for what key A could not read.
public struct SectorReader {
    public let session: MifareSession
    /// Re-selects the card after a failed authentication (a MIFARE Classic card halts after one).
    public let reselect: @Sendable () throws -> Void
    public let keysA: [MifareKey]
    public let keysB: [MifareKey]

    public init(session: MifareSession, reselect: @escaping @Sendable () throws -> Void, keysA: [MifareKey], keysB: [MifareKey]) {
        self.session = session
        self.reselect = reselect
        self.keysA = keysA
        self.keysB = keysB
    }

    /// Finds the first candidate key of `type` that authenticates `sector`; `nil` when none does.
    public func findKey(sector: Int, type: KeyType, candidates: [MifareKey]) throws -> MifareKey? {
        for key in candidates {
            do {
                try session.authenticate(sector: sector, keyType: type, key: key)
                return key
            } catch let error as MifareError where error.code == .authenticationFailed {
                try reselect()
                session.forgetAuthentication()
            }
        }
        return nil
    }

    public func read(sector: Int) throws -> SectorContents {
        let size = session.size
        let first = size.firstBlock(ofSector: sector)
        let count = size.blocksInSector(sector)
        var contents = SectorContents(sector: sector, blocks: Array(repeating: nil, count: count))

        contents.keyA = try findKey(sector: sector, type: .a, candidates: keysA)
        if contents.keyA != nil {
            try readBlocks(into: &contents, first: first, type: .a, key: contents.keyA)
        }
        let trailer = contents.blocks.last ?? nil
        let keyBReadBack = trailer.flatMap { MifareKey(bytes: Array($0[10..<16])) }
        let keyBReadable = trailer.flatMap { try? AccessBits(bytes: Array($0[6..<9])) }?.keyBIsReadable ?? false
        if keyBReadable, let keyBReadBack {
            contents.keyB = keyBReadBack
        }
        if !contents.isComplete || (!keyBReadable && !keysB.isEmpty) {
            if let keyB = try findKey(sector: sector, type: .b, candidates: keysB) {
                contents.keyB = keyB
                try readBlocks(into: &contents, first: first, type: .b, key: keyB)
            }
        }
        if contents.keyA == nil && contents.keyB == nil {
            contents.problem = "no given key opens sector \(sector)"
        } else if !contents.isComplete {
            contents.problem = "the access conditions keep some blocks of sector \(sector) from the keys given"
        }
        return contents
    }

    private func readBlocks(into contents: inout SectorContents, first: Int, type: KeyType, key: MifareKey?) throws {
        guard let key else { return }
        for index in contents.blocks.indices where contents.blocks[index] == nil {
            do {
                contents.blocks[index] = try session.read(block: first + index)
            } catch let error as MifareError where error.code == .accessDenied {
                // A refused read halts the card: select it again and re-authenticate before the next block.
                try reselect()
                session.forgetAuthentication()
                try session.authenticate(sector: contents.sector, keyType: type, key: key)
            }
        }
    }
}
