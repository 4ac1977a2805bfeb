import Foundation

/// What a terminal means to do to a card, recorded durably **before** the first card write.
///
/// The daemon's SQLite journal implements `TerminalJournal` later; `InMemoryTerminalJournal` serves the tests.
/// The pair (terminal id, terminal sequence) is the transaction's permanent identity: the settlement service
/// dedupes on it, and the card's pending-operation fields carry it so any terminal can tell whose write it was.
public struct TransactionIntent: Sendable, Hashable, Codable {
    public enum Kind: String, Sendable, Hashable, Codable, CaseIterable {
        case purseDebit = "purse-debit"
        case purseLoad = "purse-load"
        case purseSubsidy = "purse-subsidy"
        case waterDebit = "water-debit"
        case waterSettle = "water-settle"
        /// The water wallet emptied back to the account (a cancelled card): `amount` leaves the card.
        case waterRefund = "water-refund"
        /// A water wallet whose record was torn and whose balance nothing on the card vouches for, re-initialised at
        /// a settlement station or the card office: the card holds `amount` after it; `balanceBefore` is the
        /// unverified value found (the settlement service reconciles it from the water controllers' uploads).
        case waterReset = "water-reset"
    }

    public var terminalID: TerminalID
    public var terminalSequence: UInt32
    public var kind: Kind
    /// The card's UID (hex), so the next tap of the same card finds the intent.
    public var cardUID: String
    /// The card's serial from its identity record, when the operation read it (loads, settlements); `nil` at a POS,
    /// which reads only the purse sector (the settlement service maps the UID to the card).
    public var cardSerial: UInt32?
    /// The amount (always positive; the kind says which way it moves).
    public var amount: Fen
    /// The balance and the card's counter the terminal read before writing.
    public var balanceBefore: Fen
    public var counterBefore: UInt16
    /// Water settlements only: the consumption since the last refill, charged to the holder's account
    /// (after the commit the card no longer shows it).
    public var consumption: Fen?
    /// Water intents only: the settlement reference the water record carried when read (the last settlement), and
    /// for a settlement the new reference it writes (unique per settlement attempt). They decide a water intent when
    /// the counter cannot (the water record is rebuilt with counter 0).
    public var referenceBefore: UInt32?
    public var settlementReference: UInt32?
    /// The MAC-verified record block (hex) the terminal read before writing: its own witness of the state before,
    /// from which it can restore the card when its commit write tore the record and nothing on the card vouches
    /// for the value any more (the water wallet keeps no log).
    public var recordBefore: String?
    public var createdAt: Date

    public init(terminalID: TerminalID, terminalSequence: UInt32, kind: Kind, cardUID: String, cardSerial: UInt32?,
                amount: Fen, balanceBefore: Fen, counterBefore: UInt16, consumption: Fen? = nil, referenceBefore: UInt32? = nil,
                settlementReference: UInt32? = nil, recordBefore: [UInt8]? = nil, createdAt: Date = Date()) {
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
        self.recordBefore = recordBefore.map { $0.map { String(format: "%02X", $0) }.joined() }
        self.createdAt = createdAt
    }

    /// The balance the card shows if the operation is done.
    public var balanceAfter: Fen {
        switch kind {
        case .purseDebit, .waterDebit, .waterRefund: Fen(balanceBefore.rawValue - amount.rawValue)
        case .purseLoad, .purseSubsidy, .waterSettle: Fen(balanceBefore.rawValue + amount.rawValue)
        case .waterReset: amount
        }
    }

    /// `recordBefore` as bytes (`nil` when absent or not hex).
    public var recordBeforeBytes: [UInt8]? {
        guard let hex = recordBefore, hex.count == 32 else { return nil }
        let bytes = stride(from: 0, to: 32, by: 2).compactMap { UInt8(hex.dropFirst($0).prefix(2), radix: 16) }
        return bytes.count == 16 ? bytes : nil
    }

    /// How the card's log entry or water record names this intent's writer.
    public var terminalTag: TerminalTag { TerminalTag(terminalID: terminalID, sequence: terminalSequence) }

    /// Whether the intent moves the main purse (else the water wallet).
    public var isPurse: Bool { kind == .purseDebit || kind == .purseLoad || kind == .purseSubsidy }
}

/// How an intent ended, as decided from the card.
public enum TransactionOutcome: Sendable, Hashable, Codable {
    /// The card carries the operation: the money moved: the balance and the card counter after it.
    case done(balanceAfter: Fen, counterAfter: UInt16)
    /// The card does not carry it: no money moved.
    case notDone
    /// The card no longer shows which: it was used elsewhere past what its log keeps (or its record was rebuilt).
    /// The card itself is consistent; the settlement service decides from every terminal's uploads, which name the
    /// card counter each committed operation used.
    case undetermined
}

/// The terminal's side of the tearing protocol: an intent is recorded before the first card write and completed
/// once the card shows the outcome (in the same tap, or at the next tap of that card at this terminal).
/// Implementations must make `record` durable before returning (the card is written right after).
public protocol TerminalJournal: Sendable {
    /// The next terminal sequence number (monotonic, never reused).
    func nextSequence() throws -> UInt32
    /// Durably records an intent; throws if it cannot (then the card must not be written).
    func record(_ intent: TransactionIntent) throws
    /// Marks an intent decided. Completing twice with the same outcome is a no-op; a different outcome throws.
    func complete(terminalSequence: UInt32, outcome: TransactionOutcome) throws
    /// Intents recorded for this card and not yet completed, oldest first.
    func openIntents(cardUID: String) throws -> [TransactionIntent]
    /// The outcome of an intent, `nil` while open or unknown.
    func outcome(terminalSequence: UInt32) throws -> TransactionOutcome?
}

/// A journal error: what, why, what to do.
public struct JournalError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A `TerminalJournal` in memory, for tests and the emulator demo. Not durable.
public final class InMemoryTerminalJournal: TerminalJournal, @unchecked Sendable {
    private let lock = NSLock()
    private var sequence: UInt32
    private var intents: [UInt32: TransactionIntent] = [:]
    private var outcomes: [UInt32: TransactionOutcome] = [:]
    /// When set, `record` fails (a full disk), to test that no card write follows.
    public var failRecording = false
    /// When set, `complete` fails (the disk filled up after the intent was recorded).
    public var failCompleting = false

    public init(startingSequence: UInt32 = 0) { sequence = startingSequence }

    public func nextSequence() throws -> UInt32 {
        lock.withLock {
            sequence += 1
            return sequence
        }
    }

    public func record(_ intent: TransactionIntent) throws {
        try lock.withLock {
            if failRecording { throw JournalError("cannot record the transaction: the journal is not writable (disk full?); free space, then retry") }
            guard intents[intent.terminalSequence] == nil else {
                throw JournalError("terminal sequence \(intent.terminalSequence) is already used: the journal is inconsistent; stop and report it")
            }
            intents[intent.terminalSequence] = intent
        }
    }

    public func complete(terminalSequence: UInt32, outcome: TransactionOutcome) throws {
        try lock.withLock {
            if failCompleting { throw JournalError("cannot complete the transaction: the journal is not writable (disk full?); free space") }
            guard intents[terminalSequence] != nil else {
                throw JournalError("no intent with terminal sequence \(terminalSequence) to complete")
            }
            if let existing = outcomes[terminalSequence] {
                if existing == outcome { return }
                throw JournalError("terminal sequence \(terminalSequence) was already completed as \(existing), now \(outcome): report it")
            }
            outcomes[terminalSequence] = outcome
        }
    }

    public func openIntents(cardUID: String) throws -> [TransactionIntent] {
        lock.withLock {
            intents.values.filter { $0.cardUID == cardUID && outcomes[$0.terminalSequence] == nil }
                .sorted { $0.terminalSequence < $1.terminalSequence }
        }
    }

    public func outcome(terminalSequence: UInt32) throws -> TransactionOutcome? {
        lock.withLock { outcomes[terminalSequence] }
    }

    /// Every intent with its outcome, in sequence order (for tests and reports).
    public var entries: [(intent: TransactionIntent, outcome: TransactionOutcome?)] {
        lock.withLock { intents.values.sorted { $0.terminalSequence < $1.terminalSequence }.map { ($0, outcomes[$0.terminalSequence]) } }
    }
}
