import CampusCard
import Foundation

/// A card's life at the card office. Every change is a versioned blacklist row for the terminals.
public enum CardStatus: String, Sendable, Hashable, Codable, CaseIterable {
    case active, lost, frozen, cancelled

    /// Whether terminals must refuse (and lock) the card.
    public var isBlacklisted: Bool { self != .active }
}

/// A holder's account at the settlement service: the electronic account (电子账户) that online loads and water
/// settlements draw on, and the mirror of the card's purse balance.
public struct Account: Sendable, Hashable, Codable {
    public var id: Int64
    public var name: String
    /// The electronic account's balance.
    public var balance: Fen
    public var createdAt: Date

    public init(id: Int64, name: String, balance: Fen, createdAt: Date) {
        self.id = id
        self.name = name
        self.balance = balance
        self.createdAt = createdAt
    }
}

/// A card issued to an account.
public struct Card: Sendable, Hashable, Codable {
    public var serial: UInt32
    /// Hex upper case.
    public var uid: String
    public var accountID: Int64
    public var status: CardStatus
    /// The last purse balance a record showed, with its counter: moves only forward (a lower counter never
    /// overwrites it).
    public var purseMirror: Fen
    public var purseCounter: UInt16?
    public var issuedAt: Date

    public init(serial: UInt32, uid: String, accountID: Int64, status: CardStatus, purseMirror: Fen, purseCounter: UInt16?,
                issuedAt: Date) {
        self.serial = serial
        self.uid = uid
        self.accountID = accountID
        self.status = status
        self.purseMirror = purseMirror
        self.purseCounter = purseCounter
        self.issuedAt = issuedAt
    }
}

/// A terminal known to the service.
public struct TerminalInfo: Sendable, Hashable, Codable {
    public var id: TerminalID
    /// Who the terminal's sales are booked to.
    public var merchant: String
    /// The terminal's HMAC secret (never printed, never in logs).
    public var secret: [UInt8]
    public var enabled: Bool
    /// A station (the card office's counters, load and water settlement stations: the boxes with the loader master):
    /// its credits are booked as what they are — purse loads from `cash`, subsidies from `subsidy`, water settlements
    /// and refunds from and to the holder's account, water resets from `water-reset` — and it may prepare online
    /// loads. Any other terminal's credits are booked against `suspense` and flagged `credit-not-permitted`: a
    /// terminal's secret alone must neither mint money nor move a holder's.
    public var loads: Bool

    public init(id: TerminalID, merchant: String, secret: [UInt8], enabled: Bool = true, loads: Bool = false) {
        self.id = id
        self.merchant = merchant
        self.secret = secret
        self.enabled = enabled
        self.loads = loads
    }
}

/// One row of the blacklist feed: the card's status changed at `version` (monotonic over the whole feed).
public struct BlacklistDelta: Sendable, Hashable, Codable {
    public enum Action: String, Sendable, Hashable, Codable { case add, remove }
    public var version: Int64
    public var serial: UInt32
    public var uid: String
    public var action: Action
    public var reason: String

    public init(version: Int64, serial: UInt32, uid: String, action: Action, reason: String) {
        self.version = version
        self.serial = serial
        self.uid = uid
        self.action = action
        self.reason = reason
    }
}

/// A page of the blacklist feed after a version.
public struct BlacklistPage: Sendable, Hashable, Codable {
    public var changes: [BlacklistDelta]
    /// The version the terminal holds after applying this page.
    public var version: Int64
    /// More pages follow.
    public var more: Bool

    public init(changes: [BlacklistDelta], version: Int64, more: Bool) {
        self.changes = changes
        self.version = version
        self.more = more
    }
}

/// The parameters the service sends its terminals, versioned (a terminal applies a version once).
public struct TerminalParameters: Sendable, Hashable, Codable {
    public var version: Int64
    public var maxOfflineDebit: Fen
    public var maxUnsentCount: Int
    public var maxUnsentTotal: Fen
    /// Seconds.
    public var maxUnsentAge: Int
    /// Seconds.
    public var maxBlacklistAge: Int
    /// Water: the price of one unit and the wallet's cap (the refill target at a settlement station).
    public var waterUnitPrice: Fen
    public var waterWalletCap: Fen
    /// Fixed prices by name (e.g. a canteen window's set meal).
    public var fixedPrices: [String: Fen]

    public init(version: Int64, maxOfflineDebit: Fen = 10_000, maxUnsentCount: Int = 500, maxUnsentTotal: Fen = 100_000,
                maxUnsentAge: Int = 7 * 86_400, maxBlacklistAge: Int = 86_400, waterUnitPrice: Fen = 5,
                waterWalletCap: Fen = 1_000, fixedPrices: [String: Fen] = [:]) {
        self.version = version
        self.maxOfflineDebit = maxOfflineDebit
        self.maxUnsentCount = maxUnsentCount
        self.maxUnsentTotal = maxUnsentTotal
        self.maxUnsentAge = maxUnsentAge
        self.maxBlacklistAge = maxBlacklistAge
        self.waterUnitPrice = waterUnitPrice
        self.waterWalletCap = waterWalletCap
        self.fixedPrices = fixedPrices
    }
}

/// An online load (圈存) in its two phases: prepared (the account is debited, held), then confirmed (the card
/// carries it) or reversed (the card write failed). Idempotent on `reference`. A confirmation whose card balance is
/// not the prepared balance plus the amount leaves it disputed: the hold stays in `pending-load`, an operator flag
/// (`load-mismatch`) names it, and neither a confirmation nor a reversal settles it any more (an operator does).
public struct LoadState: Sendable, Hashable, Codable {
    public enum Phase: String, Sendable, Hashable, Codable { case prepared, confirmed, reversed, disputed }
    public var reference: String
    public var terminalID: TerminalID
    public var cardSerial: UInt32
    public var amount: Fen
    /// The purse balance and counter the terminal read before writing.
    public var balanceBefore: Fen
    public var counterBefore: UInt16
    public var phase: Phase
    public var updatedAt: Date

    public init(reference: String, terminalID: TerminalID, cardSerial: UInt32, amount: Fen, balanceBefore: Fen,
                counterBefore: UInt16, phase: Phase, updatedAt: Date) {
        self.reference = reference
        self.terminalID = terminalID
        self.cardSerial = cardSerial
        self.amount = amount
        self.balanceBefore = balanceBefore
        self.counterBefore = counterBefore
        self.phase = phase
        self.updatedAt = updatedAt
    }
}

/// One ledger entry: half of a balanced pair (the pair's amounts sum to zero).
public struct LedgerEntry: Sendable, Hashable, Codable {
    public var movementID: Int64
    /// e.g. `purse:1001`, `water:1001`, `account:7`, `merchant:canteen-1`, `suspense`, `cash`.
    public var account: String
    /// Positive: credit to `account`; negative: debit.
    public var amount: Fen
    public var kind: String
    public var terminalID: TerminalID?
    public var terminalSequence: UInt32?
    public var bookedAt: Date

    public init(movementID: Int64, account: String, amount: Fen, kind: String, terminalID: TerminalID?,
                terminalSequence: UInt32?, bookedAt: Date) {
        self.movementID = movementID
        self.account = account
        self.amount = amount
        self.kind = kind
        self.terminalID = terminalID
        self.terminalSequence = terminalSequence
        self.bookedAt = bookedAt
    }
}

/// Something an operator must look at: a conflicting upload, a counter anomaly, an undetermined record nothing decided.
public struct OperatorFlag: Sendable, Hashable, Codable {
    public var id: Int64
    public var code: String
    public var terminalID: TerminalID?
    public var terminalSequence: UInt32?
    public var cardSerial: UInt32?
    public var message: String
    public var raisedAt: Date

    public init(id: Int64, code: String, terminalID: TerminalID?, terminalSequence: UInt32?, cardSerial: UInt32?,
                message: String, raisedAt: Date) {
        self.id = id
        self.code = code
        self.terminalID = terminalID
        self.terminalSequence = terminalSequence
        self.cardSerial = cardSerial
        self.message = message
        self.raisedAt = raisedAt
    }
}

/// A daily report line: one merchant's (or terminal's) booked sales on one day (UTC+8 business day).
public struct DailyTotal: Sendable, Hashable, Codable {
    /// `YYYY-MM-DD`.
    public var day: String
    public var merchant: String
    public var terminalID: TerminalID?
    public var count: Int
    public var total: Fen

    public init(day: String, merchant: String, terminalID: TerminalID?, count: Int, total: Fen) {
        self.day = day
        self.merchant = merchant
        self.terminalID = terminalID
        self.count = count
        self.total = total
    }
}
