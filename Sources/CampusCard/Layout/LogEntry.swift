import Crypto

/// Where a card keeps its transaction log ring, and how a terminal tells which ring a card has without reading anything
/// more: the address byte of the purse value blocks (blocks 9 and 10, read by every purse operation) names it. Layout
/// v1: six slots in sectors 4–5, address `09`. Layout v2: 24 slots in sectors 4–11, address `89` — long enough that an
/// interrupted terminal still finds its intent's entry when the card comes back after many operations elsewhere
/// (docs/card-layout.md, "Sectors 4–11: transaction log ring").
public struct LogRing: Hashable, Sendable, CustomStringConvertible {
    /// The layout version the ring belongs to (1 or 2).
    public let layout: UInt8
    /// The ring's blocks: the entry for card counter `c` is in `blocks[c % blocks.count]`.
    public let blocks: [Int]
    /// The address byte of both purse value blocks on a card with this ring (written at issue, kept by every value
    /// operation and copy; only a WRITE with key B changes it).
    public let valueAddress: UInt8

    init(layout: UInt8, sectors: ClosedRange<Int>, valueAddress: UInt8) {
        self.layout = layout
        blocks = sectors.flatMap { sector in (0..<3).map { sector * 4 + $0 } }
        self.valueAddress = valueAddress
    }

    /// Layout v1: six slots, blocks 16–18 and 20–22.
    public static let v1 = LogRing(layout: 1, sectors: 4...5, valueAddress: 0x09)
    /// Layout v2: 24 slots, sectors 4–11 (the first six slots are v1's blocks).
    public static let v2 = LogRing(layout: 2, sectors: 4...11, valueAddress: 0x89)
    /// The ring `card issue` gives a new card.
    public static let current = v2
    public static let all = [v1, v2]

    /// The ring named by a purse value block's address byte; `nil` for an address no layout uses.
    public init?(valueAddress: UInt8) {
        guard let ring = Self.all.first(where: { $0.valueAddress == valueAddress }) else { return nil }
        self = ring
    }

    public var slots: Int { blocks.count }
    /// The sectors holding the ring, ascending.
    public var sectors: [Int] { Array(Set(blocks.map { $0 / 4 })).sorted() }
    /// The sectors beyond layout v1's 4–5: ours on a card with this ring (MAD, keys), free on a v1 card.
    public var addedSectors: [Int] { sectors.filter { !Self.v1.sectors.contains($0) } }

    public func block(forCounter counter: UInt16) -> Int { blocks[Int(counter) % blocks.count] }

    /// What an entry's MAC covers after its 12 data bytes: nothing in layout v1; the layout byte in v2, so an entry of
    /// one ring never verifies as another's (a value block address rewritten with key B cannot make terminals read a
    /// v2 card as a six-slot ring, whose newest valid entry could then be an older one).
    var macSuffix: [UInt8] { layout == 1 ? [] : [layout] }

    public var description: String { "layout v\(layout) (\(slots)-entry log ring, sectors \(sectors.first!)–\(sectors.last!))" }
}

/// One entry of the transaction log ring (`LogRing`: six entries in sectors 4–5 on a layout v1 card, 24 in sectors
/// 4–11 on a v2 card): the history any terminal can show, and the source from which a torn purse record is rebuilt.
/// MAC'd like the records, so a forged entry cannot steer a rebuild.
public struct LogEntry: Hashable, Sendable {
    /// The layout v1 ring's blocks (`LogRing.v1.blocks`), entry `counter % 6` in `blocks[counter % 6]`.
    public static let blocks = LogRing.v1.blocks

    public var operation: PurseRecord.Operation
    public var amount: Fen
    public var balanceAfter: Fen
    public var counter: UInt16
    /// Who wrote it: the terminal id and the low byte of its sequence.
    public var terminal: TerminalTag

    public init(operation: PurseRecord.Operation, amount: Fen, balanceAfter: Fen, counter: UInt16, terminal: TerminalTag) {
        self.operation = operation
        self.amount = amount
        self.balanceAfter = balanceAfter
        self.counter = counter
        self.terminal = terminal
    }

    /// The largest amount an entry records (20 bits: 10,485.75 yuan; larger top-ups are split). An operation must
    /// refuse a larger amount before its first card write: the entry is written after the commit.
    public static let maximumAmount = Fen(0xF_FFFF)

    /// How the entry's operation changed the balance, in fen (`nil` for operations that are not logged).
    public var balanceChange: Int? {
        switch operation {
        case .debit: -amount.rawValue
        case .load, .subsidy: amount.rawValue
        case .statusChange: 0
        case .issue, .repair: nil
        }
    }

    /// The operation a purse intent writes to the log.
    public static func operation(for kind: TransactionIntent.Kind) -> PurseRecord.Operation? {
        switch kind {
        case .purseDebit: .debit
        case .purseLoad: .load
        case .purseSubsidy: .subsidy
        case .waterDebit, .waterSettle, .waterRefund, .waterReset: nil
        }
    }

    /// The block of the layout v1 ring for `counter` (`LogRing.block(forCounter:)` for a card's own ring).
    public static func block(forCounter counter: UInt16) -> Int { LogRing.v1.block(forCounter: counter) }

    /// 16 bytes: operation (high nibble) and amount (low nibble + 2 bytes: 20 bits) | balance after i32 | counter u16 |
    /// terminal id u16 | terminal sequence low byte | MAC ×4 over UID, block number, bytes 0–11 and, in layout v2, the
    /// layout byte. Traps on an amount outside 0...`maximumAmount` (it would be recorded wrongly under a valid MAC).
    public func encode(uid: [UInt8], macKey: SymmetricKey, ring: LogRing = .v1) -> [UInt8] {
        precondition((0...Self.maximumAmount.rawValue).contains(amount.rawValue), "a log entry records 0...\(Self.maximumAmount.yuan) yuan; refuse larger amounts before writing the card")
        let body = [operation.rawValue << 4 | UInt8(amount.rawValue >> 16)] + Field.put16(UInt16(amount.rawValue & 0xFFFF))
            + Field.put32(UInt32(bitPattern: Int32(balanceAfter.rawValue))) + Field.put16(counter)
            + Field.put16(terminal.terminalID) + [terminal.sequenceByte]
        return body + CardMAC.compute(key: macKey, uid: uid, block: ring.block(forCounter: counter), record: body + ring.macSuffix)
    }

    /// Decodes a block of `ring`; `nil` for an empty, torn or forged entry, or one written for another slot or ring.
    public init?(block: [UInt8], number: Int, uid: [UInt8], macKey: SymmetricKey, ring: LogRing = .v1) {
        guard block.count == 16, block != [UInt8](repeating: 0, count: 16),
              CardMAC.matches(Array(block[12..<16]), CardMAC.compute(key: macKey, uid: uid, block: number, record: Array(block[0..<12]) + ring.macSuffix)),
              let operation = PurseRecord.Operation(rawValue: block[0] >> 4)
        else { return nil }
        self.init(operation: operation, amount: Fen(Int(block[0] & 0x0F) << 16 | Int(Field.u16(block, 1))),
                  balanceAfter: Fen(Int(Int32(bitPattern: Field.u32(block, 3)))), counter: Field.u16(block, 7),
                  terminal: TerminalTag(terminalID: Field.u16(block, 9), sequenceByte: block[11]))
        guard ring.block(forCounter: counter) == number else { return nil }
    }
}

/// Who wrote a log entry: the terminal id and the low byte of its terminal sequence. Two terminals never share a tag;
/// one terminal's sequences 256 apart do, but it decides its intents for a card before it writes that card again.
/// A water record keeps only two bytes of it (`short`: id low byte, sequence low byte).
public struct TerminalTag: Hashable, Sendable, CustomStringConvertible {
    public var terminalID: UInt16
    public var sequenceByte: UInt8

    public init(terminalID: UInt16, sequenceByte: UInt8) {
        self.terminalID = terminalID
        self.sequenceByte = sequenceByte
    }

    public init(terminalID: TerminalID, sequence: UInt32) {
        self.init(terminalID: terminalID.rawValue, sequenceByte: UInt8(truncatingIfNeeded: sequence))
    }

    /// No terminal: issue, a rebuilt record, a status change at the card office (terminal ids start at 1).
    public static let none = TerminalTag(terminalID: 0, sequenceByte: 0)

    /// The two bytes a water record keeps: terminal id low byte, sequence low byte.
    public var short: UInt16 { UInt16(terminalID & 0xFF) << 8 | UInt16(sequenceByte) }

    public var description: String { "terminal \(terminalID) seq ..\(sequenceByte)" }
}
