import CampusCard
import Foundation

/// A card's UID as upper-case hex ("04A1B2C3"), the key by which the reader loop, the journal and the blacklist name
/// a card. The machines only compare it.
public typealias CardUID = String

/// Why a debit, a water session or a settlement was refused: a code and one line for the operator or the holder
/// (what, why, what to do). Refused means nothing was written to the card for it.
public struct Refusal: Hashable, Sendable, CustomStringConvertible {
    /// The card layer's codes (`CardOperationError.Code`, same raw values) and the daemon's own.
    public enum Code: String, Sendable, Hashable, CaseIterable {
        // From the card layer.
        case notCampusCard = "not-campus-card", unsupportedLayout = "unsupported-layout", tampered = "mac-mismatch"
        case replay, insufficientFunds = "insufficient-funds", overLimit = "over-limit", cardLocked = "card-locked"
        case expired, unknownKeyVersion = "unknown-key-version", readerCannot = "reader-cannot", notBlank = "not-blank"
        case journal, missingKey = "missing-key", garbled, waterInterrupted = "water-interrupted"
        case pinRequired = "pin-required", pinWrong = "pin-wrong", pinBlocked = "pin-blocked", pinNotSet = "pin-not-set"
        case invalidHolderSetting = "invalid-holder-setting"
        // The daemon's.
        /// The card is on the terminal's blacklist (lost, frozen, cancelled): refused and locked on the card.
        case blacklisted
        /// An `OfflinePolicy` limit (`PolicyRefusal.Code` says which).
        case offlineAmount = "offline-amount-over-limit", unsentCount = "unsent-count-over-limit"
        case unsentTotal = "unsent-total-over-limit", unsentAge = "unsent-too-old"
        case blacklistStale = "blacklist-stale", blacklistMissing = "blacklist-missing"
        /// The card layer failed with something other than a refusal; nothing is known to have been written.
        case cardError = "card-error"
        /// The terminal takes no cards: stopped, or a latched fault (a leak, a valve that cannot be driven).
        case outOfService = "out-of-service"
    }
    public var code: Code
    public var message: String
    /// With `pinWrong`: the tries left before the card blocks the PIN.
    public var pinTriesLeft: Int?

    public init(_ code: Code, _ message: String, pinTriesLeft: Int? = nil) {
        self.code = code
        self.message = message
        self.pinTriesLeft = pinTriesLeft
    }
    public var description: String { "\(code.rawValue): \(message)" }
}

/// The status a blacklisted card is locked with (`Identity.Status` without `normal`).
public enum LockStatus: String, Sendable, Hashable, CaseIterable, Codable {
    case lost, frozen, cancelled
}

/// The terminal's blacklist says this card must be refused and locked: the integrator looks the UID up when the card
/// arrives and hands the hit to the machine with the arrival.
public struct BlacklistHit: Hashable, Sendable {
    public var status: LockStatus
    /// The blacklist version (or other provenance) the hit came from, for the record.
    public var version: Int64?
    public init(status: LockStatus, version: Int64? = nil) {
        self.status = status
        self.version = version
    }
}

/// The terminal's store of transactions not yet acknowledged by the settlement service (the integrator's store
/// summarises it).
public struct QueueSummary: Hashable, Sendable {
    public var count: Int
    public var total: Fen
    /// When the oldest unsent transaction was recorded; `nil` when the queue is empty.
    public var oldest: Date?
    public init(count: Int = 0, total: Fen = .zero, oldest: Date? = nil) {
        self.count = count
        self.total = total
        self.oldest = oldest
    }
    public static let empty = QueueSummary()
}

/// What the offline policy needs from the terminal's store. The integrator sends a fresh one (`.context` event)
/// whenever it changes: after every recorded transaction, acknowledgement batch and blacklist sync.
public struct TerminalContext: Hashable, Sendable {
    public var queue: QueueSummary
    /// When the blacklist was last brought up to date from the settlement service; `nil`: never.
    public var blacklistUpdatedAt: Date?
    public init(queue: QueueSummary = .empty, blacklistUpdatedAt: Date? = nil) {
        self.queue = queue
        self.blacklistUpdatedAt = blacklistUpdatedAt
    }
}

/// An interrupted operation of this terminal on a card, decided at that card's later tap by the card layer (from the
/// terminal journal's open intents): passed through to the client.
public struct EarlierDecision: Hashable, Sendable {
    public enum Outcome: Hashable, Sendable {
        /// The card carries it: the money moved; the balance after it.
        case done(balanceAfter: Fen)
        /// The card does not carry it: no money moved.
        case notDone
        /// The card cannot tell any more; the settlement service decides from the uploads.
        case undetermined
    }
    public var terminalSequence: UInt32
    /// "purse-debit", "water-debit", … (`TransactionIntent.Kind`'s raw value).
    public var kind: String
    public var amount: Fen
    public var recordedAt: Date
    public var outcome: Outcome
    public init(terminalSequence: UInt32, kind: String, amount: Fen, recordedAt: Date, outcome: Outcome) {
        self.terminalSequence = terminalSequence
        self.kind = kind
        self.amount = amount
        self.recordedAt = recordedAt
        self.outcome = outcome
    }
}
