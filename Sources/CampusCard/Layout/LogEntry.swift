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

    public static func block(forCounter counter: UInt16) -> Int { blocks[Int(counter) % blocks.count] }

    /// 16 bytes: operation (high nibble) and amount (low nibble + 2 bytes: 20 bits) | balance after i32 | counter u16 |
    /// terminal id u16 | terminal sequence low byte | MAC ×4 over UID, block number and bytes 0–11. Traps on an amount
    /// outside 0...`maximumAmount` (it would be recorded wrongly under a valid MAC).
    public func encode(uid: [UInt8], macKey: SymmetricKey) -> [UInt8] {
        precondition((0...Self.maximumAmount.rawValue).contains(amount.rawValue), "a log entry records 0...\(Self.maximumAmount.yuan) yuan; refuse larger amounts before writing the card")
        let body = [operation.rawValue << 4 | UInt8(amount.rawValue >> 16)] + Field.put16(UInt16(amount.rawValue & 0xFFFF))
            + Field.put32(UInt32(bitPattern: Int32(balanceAfter.rawValue))) + Field.put16(counter)
            + Field.put16(terminal.terminalID) + [terminal.sequenceByte]
        return body + CardMAC.compute(key: macKey, uid: uid, block: Self.block(forCounter: counter), record: body)
    }

    /// Decodes a log block; `nil` for an empty, torn or forged entry.
    public init?(block: [UInt8], number: Int, uid: [UInt8], macKey: SymmetricKey) {
        guard block.count == 16, block != [UInt8](repeating: 0, count: 16),
              CardMAC.matches(Array(block[12..<16]), CardMAC.compute(key: macKey, uid: uid, block: number, record: Array(block[0..<12]))),
              let operation = PurseRecord.Operation(rawValue: block[0] >> 4)
        else { return nil }
        self.init(operation: operation, amount: Fen(Int(block[0] & 0x0F) << 16 | Int(Field.u16(block, 1))),
                  balanceAfter: Fen(Int(Int32(bitPattern: Field.u32(block, 3)))), counter: Field.u16(block, 7),
                  terminal: TerminalTag(terminalID: Field.u16(block, 9), sequenceByte: block[11]))
        guard Self.block(forCounter: counter) == number else { return nil }
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
