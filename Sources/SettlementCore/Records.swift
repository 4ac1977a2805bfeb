import CampusCard
import Crypto
import Foundation

/// How a terminal decided a record: the card carried it, did not, or no longer shows which.
public enum RecordOutcome: String, Sendable, Hashable, Codable, CaseIterable {
    case done
    case notDone = "not-done"
    case undetermined
}

/// One terminal transaction as uploaded: the intent the terminal recorded before writing the card, and how it ended.
/// The unique key is (`terminalID`, `terminalSequence`): a terminal never reuses a sequence.
public struct TerminalRecord: Sendable, Hashable, Codable {
    public var terminalID: TerminalID
    public var terminalSequence: UInt32
    public var kind: TransactionIntent.Kind
    /// The card's UID, hex upper case (a POS reads no serial: the service maps the UID to the card).
    public var cardUID: String
    public var cardSerial: UInt32?
    /// Always positive; `kind` says which way it moves.
    public var amount: Fen
    public var balanceBefore: Fen
    public var counterBefore: UInt16
    /// Water settlements: the consumption since the last refill, charged to the holder's account.
    public var consumption: Fen?
    public var referenceBefore: UInt32?
    public var settlementReference: UInt32?
    public var outcome: RecordOutcome
    /// `done` only: what the card showed after the operation.
    public var balanceAfter: Fen?
    public var counterAfter: UInt16?
    /// The terminal's clock when it recorded the intent (whole seconds on the wire).
    public var createdAt: Date

    public init(terminalID: TerminalID, terminalSequence: UInt32, kind: TransactionIntent.Kind, cardUID: String,
                cardSerial: UInt32?, amount: Fen, balanceBefore: Fen, counterBefore: UInt16, consumption: Fen? = nil,
                referenceBefore: UInt32? = nil, settlementReference: UInt32? = nil, outcome: RecordOutcome,
                balanceAfter: Fen? = nil, counterAfter: UInt16? = nil, createdAt: Date) {
        self.terminalID = terminalID
        self.terminalSequence = terminalSequence
        self.kind = kind
        self.cardUID = cardUID
        self.cardSerial = cardSerial
        self.amount = amount
        self.balanceBefore = balanceBefore
        self.counterBefore = counterBefore
        self.consumption = consumption
        self.referenceBefore = referenceBefore
        self.settlementReference = settlementReference
        self.outcome = outcome
        self.balanceAfter = balanceAfter
        self.counterAfter = counterAfter
        self.createdAt = Date(timeIntervalSince1970: createdAt.timeIntervalSince1970.rounded(.down))
    }

    /// The record of a decided journal entry (an open intent is not uploadable: `nil`).
    public init?(intent: TransactionIntent, outcome: TransactionOutcome?) {
        guard let outcome else { return nil }
        let decided: RecordOutcome
        var balanceAfter: Fen?
        var counterAfter: UInt16?
        switch outcome {
        case let .done(balance, counter):
            decided = .done
            balanceAfter = balance
            counterAfter = counter
        case .notDone: decided = .notDone
        case .undetermined: decided = .undetermined
        }
        self.init(terminalID: intent.terminalID, terminalSequence: intent.terminalSequence, kind: intent.kind,
                  cardUID: intent.cardUID, cardSerial: intent.cardSerial, amount: intent.amount,
                  balanceBefore: intent.balanceBefore, counterBefore: intent.counterBefore, consumption: intent.consumption,
                  referenceBefore: intent.referenceBefore, settlementReference: intent.settlementReference,
                  outcome: decided, balanceAfter: balanceAfter, counterAfter: counterAfter, createdAt: intent.createdAt)
    }

    /// SHA-256 (hex) over every field in a fixed order: two uploads with the same key are the same record exactly
    /// when their digests are equal.
    public var contentDigest: String {
        // The text is "v1|terminal|sequence|kind|UID|serial|amount|before|counter|consumption|referenceBefore|
        // settlementReference|outcome|after|counterAfter|createdAt" with "-" for an absent field, built as bytes
        // (it is computed for every uploaded record).
        var text: [UInt8] = []
        text.reserveCapacity(128)
        func put(_ value: some BinaryInteger) {
            var magnitude = UInt64(value.magnitude)
            if value < 0 { text.append(UInt8(ascii: "-")) }
            var digits: [UInt8] = []
            repeat {
                digits.append(UInt8(ascii: "0") + UInt8(magnitude % 10))
                magnitude /= 10
            } while magnitude > 0
            text.append(contentsOf: digits.reversed())
            text.append(UInt8(ascii: "|"))
        }
        func put(_ value: (some BinaryInteger)?) {
            if let value { put(value) } else { text.append(contentsOf: [UInt8(ascii: "-"), UInt8(ascii: "|")]) }
        }
        func put(_ word: String) {
            text.append(contentsOf: word.utf8)
            text.append(UInt8(ascii: "|"))
        }
        put("v1")
        put(terminalID.rawValue)
        put(terminalSequence)
        put(kind.rawValue)
        put(cardUID.uppercased())
        put(cardSerial)
        put(amount.rawValue)
        put(balanceBefore.rawValue)
        put(counterBefore)
        put(consumption?.rawValue)
        put(referenceBefore)
        put(settlementReference)
        put(outcome.rawValue)
        put(balanceAfter?.rawValue)
        put(counterAfter)
        put(Int64(createdAt.timeIntervalSince1970))
        text.removeLast()  // the last separator
        return Self.hex(SHA256.hash(data: text))
    }

    /// Lower-case hex without `String(format:)` (the digest is computed for every uploaded record).
    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// The service's answer for one uploaded record. The terminal marks a record acknowledged only on `accepted` or
/// `duplicate`; a `conflict` stays in its queue and is shown to the operator.
public struct RecordAck: Sendable, Hashable, Codable {
    public enum Status: String, Sendable, Hashable, Codable, CaseIterable {
        /// Stored now.
        case accepted
        /// Stored before with the same content: this is the original acknowledgement.
        case duplicate
        /// Stored before with different content: refused and flagged for an operator.
        case conflict
    }

    /// What the ledger did with it.
    public enum Booking: String, Sendable, Hashable, Codable, CaseIterable {
        /// The money movement is booked (a balanced pair).
        case booked
        /// Nothing moved (not done) or nothing to book.
        case nothing
        /// Undetermined: waiting for the card's next counter to decide it (booked later or listed for an operator).
        case pending
        /// Booked to the suspense account (a cancelled or unknown card: the money left the card).
        case suspense
        /// Not booked: a counter anomaly or inconsistent figures, listed for an operator.
        case flagged
    }

    public var terminalSequence: UInt32
    public var status: Status
    public var booking: Booking
    /// Why the record was flagged (e.g. `counter-repeat`, `counter-stale`, `counter-gap`, `unknown-card`,
    /// `amount-mismatch`, `content-conflict`); empty when none.
    public var flags: [String]
    /// When the service first stored the record.
    public var receivedAt: Date

    public init(terminalSequence: UInt32, status: Status, booking: Booking, flags: [String] = [], receivedAt: Date) {
        self.terminalSequence = terminalSequence
        self.status = status
        self.booking = booking
        self.flags = flags
        self.receivedAt = receivedAt
    }

    /// Whether the terminal may mark the record acknowledged (and later prune it).
    public var acknowledges: Bool { status != .conflict }
}

/// The reference of a load station's online load: the load's own journal record (`load-t<terminal>-s<sequence>`).
/// The station prepares and confirms the load under it, and the service settles a load whose confirmation was lost
/// from the uploaded record of the same terminal and sequence.
public enum OnlineLoadReference {
    public static func of(terminal: TerminalID, sequence: UInt32) -> String { "load-t\(terminal.rawValue)-s\(sequence)" }

    /// The store's key of a terminal's load reference: references are the terminal's own, so one terminal can neither
    /// see nor settle another's load.
    public static func stored(_ reference: String, terminal: TerminalID) -> String { "T\(terminal.rawValue)-\(reference)" }

    /// The stored reference an uploaded purse-load record names: its load station's online load, when one was
    /// prepared under it (else the record is an office load).
    public static func named(terminal: TerminalID, sequence: UInt32) -> String {
        stored(of(terminal: terminal, sequence: sequence), terminal: terminal)
    }

    /// The record (terminal, sequence) a stored reference names; `nil` for a reference of another form.
    public static func record(named stored: String) -> (terminal: TerminalID, sequence: UInt32)? {
        guard stored.hasPrefix("T"), let dash = stored.firstIndex(of: "-"),
              let terminal = UInt16(stored[stored.index(after: stored.startIndex)..<dash]),
              let sequenceStart = stored.range(of: "-s", options: .backwards)?.upperBound,
              let sequence = UInt32(stored[sequenceStart...]) else { return nil }
        let named = TerminalID(terminal)
        return Self.named(terminal: named, sequence: sequence) == stored ? (named, sequence) : nil
    }
}
