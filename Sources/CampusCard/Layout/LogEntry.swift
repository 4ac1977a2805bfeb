import Crypto

/// One entry of the transaction log ring (sectors 4 and 5, six entries): the history any terminal can show, and the
/// source from which a torn purse record is rebuilt. MAC'd like the records, so a forged entry cannot steer a rebuild.
public struct LogEntry: Hashable, Sendable {
    /// The ring's blocks, entry `counter % 6` in `blocks[counter % 6]`.
    public static let blocks = [16, 17, 18, 20, 21, 22]

    public var operation: PurseRecord.Operation
    public var amount: Fen
    public var balanceAfter: Fen
    public var counter: UInt16
    /// Who wrote it (`TerminalTag`, from the terminal id and sequence).
    public var terminal: TerminalTag

    public init(operation: PurseRecord.Operation, amount: Fen, balanceAfter: Fen, counter: UInt16, terminal: TerminalTag) {
        self.operation = operation
        self.amount = amount
        self.balanceAfter = balanceAfter
        self.counter = counter
        self.terminal = terminal
    }

    /// The largest amount an entry records (24 bits: 167,772.15 yuan). An operation must refuse a larger amount
    /// before its first card write: the entry is written after the commit.
    public static let maximumAmount = Fen(0xFF_FFFF)

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
        case .waterDebit, .waterSettle: nil
        }
    }

    public static func block(forCounter counter: UInt16) -> Int { blocks[Int(counter) % blocks.count] }

    /// 16 bytes: operation u8 | amount u24 | balance after i32 | counter u16 | terminal tag u16 |
    /// MAC ×4 over UID, block number and bytes 0–11. Traps on an amount outside 0...`maximumAmount` (it would be
    /// recorded wrongly under a valid MAC).
    public func encode(uid: [UInt8], macKey: SymmetricKey) -> [UInt8] {
        precondition((0...Self.maximumAmount.rawValue).contains(amount.rawValue), "a log entry records 0...\(Self.maximumAmount.yuan) yuan; refuse larger amounts before writing the card")
        let body = [operation.rawValue] + Field.put24(UInt32(amount.rawValue)) + Field.put32(UInt32(bitPattern: Int32(balanceAfter.rawValue)))
            + Field.put16(counter) + Field.put16(terminal.rawValue)
        return body + CardMAC.compute(key: macKey, uid: uid, block: Self.block(forCounter: counter), record: body)
    }

    /// Decodes a log block; `nil` for an empty, torn or forged entry.
    public init?(block: [UInt8], number: Int, uid: [UInt8], macKey: SymmetricKey) {
        guard block.count == 16, block != [UInt8](repeating: 0, count: 16),
              CardMAC.matches(Array(block[12..<16]), CardMAC.compute(key: macKey, uid: uid, block: number, record: Array(block[0..<12]))),
              let operation = PurseRecord.Operation(rawValue: block[0])
        else { return nil }
        self.init(operation: operation, amount: Fen(Int(Field.u24(block, 1))),
                  balanceAfter: Fen(Int(Int32(bitPattern: Field.u32(block, 4)))), counter: Field.u16(block, 8),
                  terminal: TerminalTag(rawValue: Field.u16(block, 10)))
        guard Self.block(forCounter: counter) == number else { return nil }
    }
}

/// Who wrote a log entry or a water record, in two bytes: `(terminal id x 257 + terminal sequence) mod 65536`.
/// Two terminals with the same sequence never share a tag (257 is odd, so the map from 16-bit ids is one-to-one);
/// otherwise two (id, sequence) pairs share one with probability 1 in 65,536. An intent is matched on the tag *and*
/// the operation, amount and balance, so a wrong match also needs the same amount from the same balance.
public struct TerminalTag: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16

    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public init(terminalID: UInt32, sequence: UInt32) {
        self.init(rawValue: UInt16(truncatingIfNeeded: terminalID &* 257 &+ sequence))
    }

    /// No terminal: issue, a rebuilt record, a status change at the card office.
    public static let none = TerminalTag(rawValue: 0)

    public var description: String { "tag " + String(format: "%04X", rawValue) }
}
