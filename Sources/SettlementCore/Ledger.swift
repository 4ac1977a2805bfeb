import CampusCard
import Foundation

/// Which of a card's two value stores a record moves: the purse (its counter is the purse counter) or the water
/// wallet (its counter is the water record's counter). Each keeps its own counter window.
public enum Wallet: String, Sendable, Hashable, Codable, CaseIterable {
    case purse, water

    public init(_ kind: TransactionIntent.Kind) {
        switch kind {
        case .purseDebit, .purseLoad, .purseSubsidy: self = .purse
        case .waterDebit, .waterSettle, .waterRefund, .waterReset: self = .water
        }
    }
}

/// The counters a card's wallet has shown: the highest `counterAfter` seen and which of the 64 below it were seen.
/// Counters are UInt16 and compared modulo 2^16 (a distance of up to ±32767).
public struct CounterWindow: Sendable, Hashable, Codable {
    /// How many counters (the highest included) the window remembers.
    public static let size = 64

    /// The highest counter seen; `nil` before the first.
    public var highest: UInt16?
    /// Bit i: `highest - i` was seen (bit 0 is `highest` itself).
    public var seen: UInt64

    public init(highest: UInt16? = nil, seen: UInt64 = 0) {
        self.highest = highest
        self.seen = seen
    }

    /// Where a counter falls relative to the window.
    public enum Position: Sendable, Hashable {
        /// Newer than the highest; `gap` when counters between were skipped (more than highest + 1).
        case newer(gap: Bool)
        /// Inside the window and not seen yet: a late upload.
        case lateUnseen
        /// Already seen.
        case repeated
        /// Older than the window: too old to tell.
        case stale
    }

    /// `b - a` modulo 2^16 as a signed distance.
    public static func distance(from a: UInt16, to b: UInt16) -> Int { Int(Int16(bitPattern: b &- a)) }

    public func position(of counter: UInt16) -> Position {
        guard let highest else { return .newer(gap: false) }
        let ahead = Self.distance(from: highest, to: counter)
        if ahead > 0 { return .newer(gap: ahead > 1) }
        let back = -ahead
        if back >= Self.size { return .stale }
        return seen & (1 << UInt64(back)) != 0 ? .repeated : .lateUnseen
    }

    /// Marks a counter seen (moving the window forward when it is newer). A stale counter changes nothing.
    public mutating func insert(_ counter: UInt16) {
        guard let current = highest else {
            highest = counter
            seen = 1
            return
        }
        let ahead = Self.distance(from: current, to: counter)
        if ahead > 0 {
            seen = ahead >= Self.size ? 1 : (seen << UInt64(ahead)) | 1
            highest = counter
        } else if -ahead < Self.size {
            seen |= 1 << UInt64(-ahead)
        }
    }
}

/// What a record showed of the card before the terminal wrote it: the counter and balance read. Records of any
/// outcome show it, and it decides undetermined records (`Ledger`).
public struct CardRead: Sendable, Hashable, Codable {
    public var counterBefore: UInt16
    public var balanceBefore: Fen

    public init(counterBefore: UInt16, balanceBefore: Fen) {
        self.counterBefore = counterBefore
        self.balanceBefore = balanceBefore
    }
}

/// An undetermined record waiting for the card's counters to decide it: what booking it needs later.
public struct PendingRecord: Sendable, Hashable, Codable {
    public var terminalID: TerminalID
    public var terminalSequence: UInt32
    public var kind: TransactionIntent.Kind
    public var amount: Fen
    public var balanceBefore: Fen
    public var counterBefore: UInt16
    public var merchant: String
    public var createdAt: Date
    /// `undetermined-unresolved` was raised for it (once): later counters passed it with nothing deciding it.
    public var unresolvedFlagged: Bool

    public init(terminalID: TerminalID, terminalSequence: UInt32, kind: TransactionIntent.Kind, amount: Fen,
                balanceBefore: Fen, counterBefore: UInt16, merchant: String, createdAt: Date, unresolvedFlagged: Bool = false) {
        self.terminalID = terminalID
        self.terminalSequence = terminalSequence
        self.kind = kind
        self.amount = amount
        self.balanceBefore = balanceBefore
        self.counterBefore = counterBefore
        self.merchant = merchant
        self.createdAt = createdAt
        self.unresolvedFlagged = unresolvedFlagged
    }

    /// The record as a done record would have shown it (the counter moves by one).
    var asDone: TerminalRecord {
        TerminalRecord(terminalID: terminalID, terminalSequence: terminalSequence, kind: kind, cardUID: "", cardSerial: nil,
                       amount: amount, balanceBefore: balanceBefore, counterBefore: counterBefore, outcome: .done,
                       balanceAfter: Ledger.expectedBalanceAfter(kind: kind, amount: amount, balanceBefore: balanceBefore),
                       counterAfter: counterBefore &+ 1, createdAt: createdAt)
    }
}

/// A confirmed online load's purse counter: the uploaded purse-load record of the same counter is the same money
/// (booked once, by the confirmation).
public struct OnlineLoadLink: Sendable, Hashable, Codable {
    public var counterAfter: UInt16
    public var amount: Fen
    public var reference: String

    public init(counterAfter: UInt16, amount: Fen, reference: String) {
        self.counterAfter = counterAfter
        self.amount = amount
        self.reference = reference
    }
}

/// The phases of the online loads a batch's purse-load records name, by stored reference
/// (`OnlineLoadReference.named`): the store looks them up in one query (`Ledger.loadReferences`). A purse-load record
/// whose reference has no load is an office load.
public typealias OnlineLoadPhases = [String: LoadState.Phase]

/// The ledger's memory of one wallet of one card.
public struct WalletBook: Sendable, Hashable, Codable {
    /// How many card reads are kept to decide undetermined records that arrive after their deciders: a torn record
    /// uploaded after more than this many later reads of its card is listed `undetermined-unresolved` for an operator.
    /// Kept small: every card a batch touches rewrites its book (see settlebench).
    public static let readsKept = 8
    /// How many online-load links are kept.
    public static let linksKept = 16
    /// How many undetermined records a wallet holds waiting for a read to decide them. A card has one at a time in
    /// practice (a tear, then its next tap decides it); every record of a batch walks the list, and a terminal
    /// uploading thousands stalled the whole service (an attacker's walk-through), so one past this is listed
    /// `undetermined-over-limit` for an operator instead.
    public static let pendingKept = 64

    public var window: CounterWindow
    /// The latest reads, oldest first (at most `readsKept`).
    public var reads: [CardRead]
    public var pending: [PendingRecord]
    public var onlineLoads: [OnlineLoadLink]

    public init(window: CounterWindow = CounterWindow(), reads: [CardRead] = [], pending: [PendingRecord] = [],
                onlineLoads: [OnlineLoadLink] = []) {
        self.window = window
        self.reads = reads
        self.pending = pending
        self.onlineLoads = onlineLoads
    }

    mutating func remember(_ read: CardRead) {
        if reads.contains(read) { return }
        reads.append(read)
        if reads.count > Self.readsKept { reads.removeFirst(reads.count - Self.readsKept) }
    }
}

/// Everything the ledger rules need to know about one card (by UID), and what they change: the store loads it for
/// every card a batch touches, `Ledger` decides, the store writes it back.
public struct CardBook: Sendable, Hashable {
    /// Hex upper case.
    public var uid: String
    /// The issued card; `nil` for a UID the service never issued (its records go to suspense).
    public var card: Card?
    public var purse: WalletBook
    public var water: WalletBook

    public init(uid: String, card: Card?, purse: WalletBook = WalletBook(), water: WalletBook = WalletBook()) {
        self.uid = uid
        self.card = card
        self.purse = purse
        self.water = water
    }

    subscript(wallet: Wallet) -> WalletBook {
        get { wallet == .purse ? purse : water }
        set { if wallet == .purse { purse = newValue } else { water = newValue } }
    }
}

/// One money movement: `amount` leaves `from` and arrives at `to` (two ledger entries: −amount and +amount).
public struct Movement: Sendable, Hashable {
    public enum CardSide: Sendable, Hashable { case from, to, neither }

    public var from: String
    public var to: String
    public var amount: Fen
    public var kind: String
    public var terminalID: TerminalID?
    public var terminalSequence: UInt32?
    /// The business day (UTC+8) of the record that caused it, for the daily totals.
    public var day: String
    /// The card the movement is about, and which side names the card (a statement shows that entry).
    public var cardSerial: UInt32?
    public var cardSide: CardSide
    /// The terminal's merchant when `to` or `from` is `merchant:…` (daily totals).
    public var merchant: String?

    public init(from: String, to: String, amount: Fen, kind: String, terminalID: TerminalID?, terminalSequence: UInt32?,
                day: String, cardSerial: UInt32?, cardSide: CardSide, merchant: String?) {
        self.from = from
        self.to = to
        self.amount = amount
        self.kind = kind
        self.terminalID = terminalID
        self.terminalSequence = terminalSequence
        self.day = day
        self.cardSerial = cardSerial
        self.cardSide = cardSide
        self.merchant = merchant
    }

    /// The two entries (debit first), with the movement id the store assigned.
    public func entries(movementID: Int64, bookedAt: Date) -> [LedgerEntry] {
        [LedgerEntry(movementID: movementID, account: from, amount: Fen(-amount.rawValue), kind: kind, terminalID: terminalID,
                     terminalSequence: terminalSequence, bookedAt: bookedAt),
         LedgerEntry(movementID: movementID, account: to, amount: amount, kind: kind, terminalID: terminalID,
                     terminalSequence: terminalSequence, bookedAt: bookedAt)]
    }
}

/// A flag the rules raise (the store writes an `OperatorFlag`).
public struct RaisedFlag: Sendable, Hashable {
    public var code: String
    public var terminalID: TerminalID?
    public var terminalSequence: UInt32?
    public var cardSerial: UInt32?
    public var message: String

    public init(code: String, terminalID: TerminalID?, terminalSequence: UInt32?, cardSerial: UInt32?, message: String) {
        self.code = code
        self.terminalID = terminalID
        self.terminalSequence = terminalSequence
        self.cardSerial = cardSerial
        self.message = message
    }
}

/// An earlier undetermined record decided now (by a record that arrived after it).
public struct PendingDecision: Sendable, Hashable {
    public var terminalID: TerminalID
    public var terminalSequence: UInt32
    /// What became of it: booked / suspense (done), nothing (not done), flagged (done, but a counter anomaly).
    public var booking: RecordAck.Booking
    public var flags: [String]

    public init(terminalID: TerminalID, terminalSequence: UInt32, booking: RecordAck.Booking, flags: [String]) {
        self.terminalID = terminalID
        self.terminalSequence = terminalSequence
        self.booking = booking
        self.flags = flags
    }
}

/// What the rules decided for one new record: its booking and flags, the movements to write, the flags to raise,
/// and the earlier undetermined records it decided.
public struct LedgerDecision: Sendable, Hashable {
    public var booking: RecordAck.Booking
    public var flags: [String]
    public var movements: [Movement]
    public var raised: [RaisedFlag]
    public var decided: [PendingDecision]

    public init(booking: RecordAck.Booking, flags: [String] = [], movements: [Movement] = [], raised: [RaisedFlag] = [],
                decided: [PendingDecision] = []) {
        self.booking = booking
        self.flags = flags
        self.movements = movements
        self.raised = raised
        self.decided = decided
    }
}

/// The ledger rules as pure values: a card's `CardBook` in, a `LedgerDecision` out (and the book updated). Both
/// stores apply these; they only load the books a batch touches and write what comes out.
///
/// Accounts: `purse:SERIAL`, `water:SERIAL`, `account:ID`, `merchant:NAME`, `suspense`, `cash`, `subsidy`,
/// `water-reset`, and `pending-load` (online loads prepared and not yet confirmed or reversed).
///
/// Rules, in the order they apply to a record (settle-context.md):
/// 1. Every record's read (counterBefore, balanceBefore) first decides the wallet's pending undetermined records:
///    counterBefore == r.counterBefore + 1 with the balance r would leave → r was done (booked now, as a done record
///    with counterAfter r.counterBefore + 1); counterBefore == r.counterBefore with r's balanceBefore → r was not done;
///    a counter past r.counterBefore + 1 deciding neither → `undetermined-unresolved` (once; a late upload may still
///    decide r).
/// 2. not-done → `nothing`. undetermined → decided at once by the reads already seen, else `pending` (past
///    `WalletBook.pendingKept` waiting on the wallet: `undetermined-over-limit`, flagged, for an operator).
/// 3. done: figures must agree (debit: before − amount == after; load: before + amount == after; water-reset: after ==
///    amount), else `amount-mismatch`, flagged, not booked.
/// 4. A purse-load whose counterAfter a confirmed online load already booked (same amount) → `nothing` (linked).
///    A purse-load that names an online load (`OnlineLoadReference.named`) not linked so (the load is prepared,
///    disputed, reversed, or confirmed at another counter or amount) is never cash: its card side is booked against
///    `suspense` (booking `suspense`, flag `load-unconfirmed`). Either order books the money once: the record first →
///    suspense → purse, and a confirmation after it moves the hold pending-load → suspense (the store reads the
///    record's booking); the confirmation first → the link, and the record books nothing.
/// 5. Counter continuity in the wallet's window: repeat → `counter-repeat`, stale → `counter-stale`, both flagged and
///    not booked; newer than highest + 1 → `counter-gap`, booked; inside the window unseen → booked (late upload).
/// 6. A purse record whose counterBefore is the newest booked counter must start from the balance booked there (the
///    card's mirror); one that does not is booked as uploaded and flagged `balance-mismatch` (an altered card, a forged
///    record). Booked: the kind's movement; an unknown UID or a cancelled card puts `suspense` in place of the card's
///    account (booking `suspense`, flag `unknown-card` / `cancelled-card`). water-reset also raises `water-reset`.
///    A credit — a purse load or subsidy, a water settlement, refund or reset — is booked from `cash`, `subsidy`,
///    `water-reset` or to and from the holder's account only when its terminal is a station (`TerminalInfo.loads`:
///    the card office's counters, load and water settlement stations, which hold the loader master); any other
///    terminal's is booked against `suspense` instead (flag `credit-not-permitted`): the card's side moved, but a
///    terminal's secret alone must neither mint money nor move a holder's.
/// 7. The card's purse mirror moves only forward (a newer counterAfter). A booked water-reset starts the water
///    window afresh (the water record was rebuilt).
public enum Ledger {
    /// The business day's offset from UTC (China Standard Time, UTC+8).
    public static let businessDayOffset = 8 * 3600

    /// `YYYY-MM-DD` of `date` in UTC+8.
    public static func businessDay(of date: Date) -> String {
        let seconds = Int64(date.timeIntervalSince1970.rounded(.down)) + Int64(businessDayOffset)
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        return CivilDate.text(daysSince1970: days)
    }

    /// The movement that settles a confirmed online load's hold: out of `pending-load` into the card's purse, or, when
    /// an uploaded purse-load record of that counter booked the money already (`linked`), into the account that record
    /// took it from (the card side is then neither: the record moved the card).
    /// `settled`: the card office settled the disputed load so (the kinds end in `-settled`).
    public static func loadConfirmation(_ load: LoadState, serial: UInt32, to account: String, linked: Bool, settled: Bool = false,
                                        at date: Date) -> Movement {
        Movement(from: pendingLoad, to: account, amount: load.amount,
                 kind: (linked ? "online-load-linked" : "online-load") + (settled ? "-settled" : ""),
                 terminalID: load.terminalID, terminalSequence: nil, day: businessDay(of: date),
                 cardSerial: serial, cardSide: linked ? .neither : .to, merchant: nil)
    }

    public static func purseAccount(_ serial: UInt32) -> String { "purse:\(serial)" }
    public static func waterAccount(_ serial: UInt32) -> String { "water:\(serial)" }
    public static func holderAccount(_ id: Int64) -> String { "account:\(id)" }
    /// The holder's account id an `account:ID` name names (`nil` for any other account).
    public static func holderAccountID(_ name: String) -> Int64? {
        name.hasPrefix("account:") ? Int64(name.dropFirst("account:".count)) : nil
    }
    public static func merchantAccount(_ name: String) -> String { "merchant:\(name)" }
    public static let suspense = "suspense"
    public static let cash = "cash"
    public static let subsidy = "subsidy"
    public static let waterReset = "water-reset"
    public static let pendingLoad = "pending-load"

    /// The balance a done record leaves.
    public static func expectedBalanceAfter(kind: TransactionIntent.Kind, amount: Fen, balanceBefore: Fen) -> Fen {
        switch kind {
        case .purseDebit, .waterDebit, .waterRefund: balanceBefore - amount
        case .purseLoad, .purseSubsidy, .waterSettle: balanceBefore + amount
        case .waterReset: amount
        }
    }

    /// Applies one new record to its card's book. `merchant` is the uploading terminal's merchant; `loads` the phases
    /// of the online loads the batch's purse-load records (and the book's pending ones) name; `loaders` the load
    /// stations among the terminals `loaderCandidates` names.
    public static func apply(_ record: TerminalRecord, merchant: String, to book: inout CardBook,
                             loads: OnlineLoadPhases = [:], loaders: Set<TerminalID> = []) -> LedgerDecision {
        let wallet = Wallet(record.kind)
        var decision = LedgerDecision(booking: .nothing)
        let read = CardRead(counterBefore: record.counterBefore, balanceBefore: record.balanceBefore)
        let figuresAgree = record.outcome != .done || self.figuresAgree(record)
        // 1. The read decides earlier undetermined records (not a read whose own figures disagree).
        if figuresAgree {
            decide(wallet: wallet, by: read, in: &book, into: &decision, loads: loads, loaders: loaders)
        }
        switch record.outcome {
        case .notDone:
            decision.booking = .nothing
        case .undetermined:
            let pending = PendingRecord(terminalID: record.terminalID, terminalSequence: record.terminalSequence, kind: record.kind,
                                        amount: record.amount, balanceBefore: record.balanceBefore,
                                        counterBefore: record.counterBefore, merchant: merchant, createdAt: record.createdAt)
            if let outcome = verdict(for: pending, reads: book[wallet].reads) {
                if outcome {
                    let done = bookDone(pending.asDone, merchant: merchant, book: &book, raised: &decision.raised, movements: &decision.movements,
                                        loads: loads, loaders: loaders)
                    decision.booking = done.booking
                    decision.flags = done.flags
                } else {
                    decision.booking = .nothing
                }
            } else if book[wallet].pending.count >= WalletBook.pendingKept {
                decision.booking = .flagged
                decision.flags = ["undetermined-over-limit"]
                decision.raised.append(RaisedFlag(code: "undetermined-over-limit", terminalID: record.terminalID, terminalSequence: record.terminalSequence,
                                                  cardSerial: book.card?.serial,
                                                  message: "an undetermined \(record.kind.rawValue) at card counter \(record.counterBefore) arrived while the card already has \(WalletBook.pendingKept) waiting: not booked, not decided by later reads; read the card's log at the office and check the terminal (a sound one leaves one at a time)"))
            } else {
                var pending = pending
                if passed(pending, reads: book[wallet].reads) {
                    pending.unresolvedFlagged = true
                    decision.flags = ["undetermined-unresolved"]
                    decision.raised.append(unresolvedFlag(pending, serial: book.card?.serial))
                }
                book[wallet].pending.append(pending)
                decision.booking = .pending
            }
        case .done:
            if !figuresAgree {
                decision.booking = .flagged
                decision.flags = ["amount-mismatch"]
                let figures = "before \(record.balanceBefore.rawValue), amount \(record.amount.rawValue), after \(record.balanceAfter.map { "\($0.rawValue)" } ?? "none"), counter after \(record.counterAfter.map { "\($0)" } ?? "none")"
                decision.raised.append(RaisedFlag(code: "amount-mismatch", terminalID: record.terminalID, terminalSequence: record.terminalSequence,
                                                  cardSerial: book.card?.serial,
                                                  message: "a done \(record.kind.rawValue) record's figures do not agree (\(figures)): not booked; check the terminal's journal"))
            } else {
                let done = bookDone(record, merchant: merchant, book: &book, raised: &decision.raised, movements: &decision.movements,
                                    loads: loads, loaders: loaders)
                decision.booking = done.booking
                decision.flags = done.flags
            }
        }
        if figuresAgree { book[wallet].remember(read) }
        return decision
    }

    /// Whether a done record's figures agree with its kind (and it carries them).
    public static func figuresAgree(_ record: TerminalRecord) -> Bool {
        guard let after = record.balanceAfter, record.counterAfter != nil, record.amount.rawValue >= 0 else { return false }
        return expectedBalanceAfter(kind: record.kind, amount: record.amount, balanceBefore: record.balanceBefore) == after
    }

    /// true: done, false: not done, nil: the reads do not tell.
    static func verdict(for pending: PendingRecord, reads: [CardRead]) -> Bool? {
        let after = expectedBalanceAfter(kind: pending.kind, amount: pending.amount, balanceBefore: pending.balanceBefore)
        if reads.contains(CardRead(counterBefore: pending.counterBefore &+ 1, balanceBefore: after)) { return true }
        if reads.contains(CardRead(counterBefore: pending.counterBefore, balanceBefore: pending.balanceBefore)) { return false }
        return nil
    }

    /// A read past the counter that would decide `pending`.
    static func passed(_ pending: PendingRecord, reads: [CardRead]) -> Bool {
        reads.contains { CounterWindow.distance(from: pending.counterBefore, to: $0.counterBefore) > 1 }
    }

    static func unresolvedFlag(_ pending: PendingRecord, serial: UInt32?) -> RaisedFlag {
        RaisedFlag(code: "undetermined-unresolved", terminalID: pending.terminalID, terminalSequence: pending.terminalSequence,
                   cardSerial: serial,
                   message: "an undetermined \(pending.kind.rawValue) at card counter \(pending.counterBefore) is not decided by the card's later counters: check the card's log at the office (a late upload may still decide it)")
    }

    /// Lets a new read decide the wallet's pending records.
    static func decide(wallet: Wallet, by read: CardRead, in book: inout CardBook, into decision: inout LedgerDecision,
                       loads: OnlineLoadPhases, loaders: Set<TerminalID>) {
        guard !book[wallet].pending.isEmpty else { return }
        var still: [PendingRecord] = []
        for var pending in book[wallet].pending {
            guard let outcome = verdict(for: pending, reads: [read]) else {
                if !pending.unresolvedFlagged, passed(pending, reads: [read]) {
                    pending.unresolvedFlagged = true
                    decision.raised.append(unresolvedFlag(pending, serial: book.card?.serial))
                }
                still.append(pending)
                continue
            }
            if outcome {
                // Booked as the done record it was (its own counter rules apply).
                var movements: [Movement] = []
                let done = bookDone(pending.asDone, merchant: pending.merchant, book: &book, raised: &decision.raised, movements: &movements,
                                    loads: loads, loaders: loaders)
                decision.movements += movements
                decision.decided.append(PendingDecision(terminalID: pending.terminalID, terminalSequence: pending.terminalSequence,
                                                        booking: done.booking, flags: done.flags))
            } else {
                decision.decided.append(PendingDecision(terminalID: pending.terminalID, terminalSequence: pending.terminalSequence,
                                                        booking: .nothing, flags: []))
            }
        }
        book[wallet].pending = still
    }

    /// Books a done record whose figures agree: counter rules, then the movement.
    static func bookDone(_ record: TerminalRecord, merchant: String, book: inout CardBook, raised: inout [RaisedFlag],
                         movements: inout [Movement], loads: OnlineLoadPhases, loaders: Set<TerminalID>) -> (booking: RecordAck.Booking, flags: [String]) {
        let wallet = Wallet(record.kind)
        guard let counterAfter = record.counterAfter, let balanceAfter = record.balanceAfter else { return (.flagged, ["amount-mismatch"]) }
        let serial = book.card?.serial
        func flag(_ code: String, _ message: String) {
            raised.append(RaisedFlag(code: code, terminalID: record.terminalID, terminalSequence: record.terminalSequence,
                                     cardSerial: serial, message: message))
        }
        // 4. The uploaded record of a confirmed online load: the confirmation booked it.
        if record.kind == .purseLoad,
           book.purse.onlineLoads.contains(where: { $0.counterAfter == counterAfter && $0.amount == record.amount }) {
            return (.nothing, [])
        }
        // An online load the confirmation did not book: its money did not come from cash.
        let unconfirmedLoad = record.kind == .purseLoad
            ? loads[OnlineLoadReference.named(terminal: record.terminalID, sequence: record.terminalSequence)] : nil
        // 5. Counter continuity.
        var flags: [String] = []
        switch book[wallet].window.position(of: counterAfter) {
        case .repeated:
            flag("counter-repeat", "card \(book.uid)'s \(wallet.rawValue) counter \(counterAfter) was already booked: this record repeats one (not booked)")
            return (.flagged, ["counter-repeat"])
        case .stale:
            flag("counter-stale", "card \(book.uid)'s \(wallet.rawValue) counter \(counterAfter) is older than the last \(CounterWindow.size) seen (highest \(book[wallet].window.highest.map { "\($0)" } ?? "none")): not booked; check it by hand")
            return (.flagged, ["counter-stale"])
        case let .newer(gap):
            if gap {
                flags.append("counter-gap")
                flag("counter-gap", "card \(book.uid)'s \(wallet.rawValue) counter jumped from \(book[wallet].window.highest.map { "\($0)" } ?? "none") to \(counterAfter): records in between are missing so far (booked)")
            }
        case .lateUnseen:
            break
        }
        // 6a. The purse's balance continuity: the record next to the newest booked one starts from its balance.
        if wallet == .purse, let card = book.card, card.purseCounter == record.counterBefore, card.purseMirror != record.balanceBefore {
            flags.append("balance-mismatch")
            flag("balance-mismatch", "card \(card.serial)'s purse showed \(record.balanceBefore) at counter \(record.counterBefore), where the service last booked \(card.purseMirror): the card was altered or the record is forged (booked as uploaded); read the card at the office and freeze it if it was altered (cardctl office card freeze \(card.serial)), and check terminal \(record.terminalID)")
        }
        // 6. The movement; suspense stands in for the card's account when the card is unknown or cancelled.
        var booking = RecordAck.Booking.booked
        let cardAccount: String
        if let card = book.card, card.status != .cancelled {
            cardAccount = wallet == .purse ? purseAccount(card.serial) : waterAccount(card.serial)
        } else {
            cardAccount = suspense
            booking = .suspense
            let code = book.card == nil ? "unknown-card" : "cancelled-card"
            flags.append(code)
            flag(code, book.card == nil
                ? "card UID \(book.uid) was never issued: its \(record.kind.rawValue) of \(record.amount) is booked to suspense"
                : "card \(serial.map { "\($0)" } ?? book.uid) is cancelled: its \(record.kind.rawValue) of \(record.amount) is booked to suspense")
        }
        let holder = book.card.map { holderAccount($0.accountID) } ?? suspense
        let route: (from: String, to: String, side: Movement.CardSide)
        var merchantName: String?
        /// A credit from a terminal that is no station: the card's side moved; suspense stands in for the other.
        let station = loaders.contains(record.terminalID)
        func notAStation(_ side: Movement.CardSide) -> (from: String, to: String, side: Movement.CardSide) {
            booking = .suspense
            flags.append("credit-not-permitted")
            flag("credit-not-permitted", notAStationMessage(record, card: serial.map { "\($0)" } ?? book.uid))
            return side == .to ? (suspense, cardAccount, .to) : (cardAccount, suspense, .from)
        }
        switch record.kind {
        case .purseDebit, .waterDebit:
            route = (cardAccount, merchantAccount(merchant), .from)
            merchantName = merchant
        case .purseLoad:
            if let phase = unconfirmedLoad {
                route = (suspense, cardAccount, .to)
                booking = .suspense
                flags.append("load-unconfirmed")
                flag("load-unconfirmed", unconfirmedLoadMessage(record, phase: phase, card: serial.map { "\($0)" } ?? book.uid))
            } else if station {
                route = (cash, cardAccount, .to)
            } else {
                route = notAStation(.to)
            }
        case .purseSubsidy: route = station ? (subsidy, cardAccount, .to) : notAStation(.to)
        case .waterSettle: route = station ? (holder, cardAccount, .to) : notAStation(.to)
        case .waterRefund: route = station ? (cardAccount, holder, .from) : notAStation(.from)
        case .waterReset:
            route = station ? (waterReset, cardAccount, .to) : notAStation(.to)
            flags.append("water-reset")
            flag("water-reset", "card \(book.uid)'s water wallet was reset to \(record.amount) (the balance found, \(record.balanceBefore), was unverified): reconcile it with the water controllers' uploads")
        }
        if route.from != route.to, record.amount.rawValue > 0 {
            movements.append(Movement(from: route.from, to: route.to, amount: record.amount, kind: record.kind.rawValue, terminalID: record.terminalID,
                                      terminalSequence: record.terminalSequence, day: businessDay(of: record.createdAt),
                                      cardSerial: serial, cardSide: route.side, merchant: merchantName))
        }
        // 7. The window and the mirror.
        if record.kind == .waterReset {
            book.water.window = CounterWindow()
        }
        book[wallet].window.insert(counterAfter)
        if wallet == .purse, var card = book.card {
            if card.purseCounter.map({ CounterWindow.distance(from: $0, to: counterAfter) > 0 }) ?? true {
                card.purseCounter = counterAfter
                card.purseMirror = balanceAfter
                book.card = card
            }
        }
        return (booking, flags)
    }

    /// The `load-unconfirmed` flag's message: which record, which load in which phase, what to do.
    static func unconfirmedLoadMessage(_ record: TerminalRecord, phase: LoadState.Phase, card: String) -> String {
        let reference = OnlineLoadReference.of(terminal: record.terminalID, sequence: record.terminalSequence)
        let next = switch phase {
        case .prepared: "a confirmation that comes later moves the hold from pending-load to suspense; else settle it by hand"
        case .disputed: "its hold stays in pending-load until the card office settles the load (cardctl office load-settle \(OnlineLoadReference.named(terminal: record.terminalID, sequence: record.terminalSequence)) --credited)"
        case .reversed: "its hold went back to the account though the card carries the money: recover it from the holder or write it off"
        case .confirmed: "the confirmation booked another counter or amount: compare the card's log with the load"
        }
        return "card \(card)'s purse load of \(record.amount) (counter \(record.counterAfter.map { "\($0)" } ?? "none")) is online load \(reference), which is \(phase.rawValue), not confirmed with it: booked from suspense, not cash; \(next)"
    }

    /// The `credit-not-permitted` flag's message: a credit uploaded by a terminal that is no station.
    static func notAStationMessage(_ record: TerminalRecord, card: String) -> String {
        let instead = switch record.kind {
        case .purseLoad: "booked from suspense, not cash"
        case .purseSubsidy: "booked from suspense, not subsidy"
        case .waterSettle: "booked from suspense, not the holder's account"
        case .waterRefund: "booked to suspense, not the holder's account"
        default: "booked from suspense"
        }
        return "terminal \(record.terminalID) is no station (it may not credit cards), yet uploaded card \(card)'s \(record.kind.rawValue) of \(record.amount) (sequence \(record.terminalSequence)): \(instead); if it is a station of the card office, make it one (cardctl office terminal \(record.terminalID) --allow-loads) and clear the suspense by hand, else disable it and treat its secret as stolen"
    }

    /// Whether a record of `kind` credits a card or moves a holder's money (a station's only).
    public static func isCredit(_ kind: TransactionIntent.Kind) -> Bool {
        switch kind {
        case .purseLoad, .purseSubsidy, .waterSettle, .waterRefund, .waterReset: true
        case .purseDebit, .waterDebit: false
        }
    }

    /// The terminals whose role decides a booking in `records` and the books' pending records (their credits): the
    /// store looks up which are stations before `apply`.
    public static func loaderCandidates(of records: some Sequence<TerminalRecord>, books: some Sequence<CardBook>) -> [TerminalID] {
        var terminals = Set<TerminalID>()
        for record in records where isCredit(record.kind) && record.outcome != .notDone {
            terminals.insert(record.terminalID)
        }
        for book in books {
            for pending in book.purse.pending + book.water.pending where isCredit(pending.kind) {
                terminals.insert(pending.terminalID)
            }
        }
        return terminals.sorted()
    }

    /// The stored references of the online loads `records` (purse loads) and the books' pending purse loads may name:
    /// the store looks their phases up in one query before `apply`.
    public static func loadReferences(of records: some Sequence<TerminalRecord>, books: some Sequence<CardBook>) -> [String] {
        var references = Set<String>()
        for record in records where record.kind == .purseLoad && record.outcome != .notDone {
            references.insert(OnlineLoadReference.named(terminal: record.terminalID, sequence: record.terminalSequence))
        }
        for book in books {
            for pending in book.purse.pending where pending.kind == .purseLoad {
                references.insert(OnlineLoadReference.named(terminal: pending.terminalID, sequence: pending.terminalSequence))
            }
        }
        return references.sorted()
    }

    /// Why a load is not prepared at a card counter another load (prepared, confirmed or disputed) holds: a second one
    /// there would be confirmed against the counter the first booked, and the holder charged twice.
    public static func anotherLoadAtCounter(cardSerial: UInt32, counter: UInt16) -> String {
        "card \(cardSerial) has another load at counter \(counter) (prepared, confirmed or disputed): a card counter carries one load; finish or reverse that one, read the card again, then prepare (nothing was held)"
    }

    /// The `load-mismatch` flag of a confirmation whose card balance disagrees with the prepared load.
    public static func loadMismatchFlag(_ load: LoadState, accountID: Int64, balanceAfter: Fen, counterAfter: UInt16) -> RaisedFlag {
        let record = OnlineLoadReference.record(named: load.reference)
        return RaisedFlag(code: "load-mismatch", terminalID: load.terminalID, terminalSequence: record?.sequence, cardSerial: load.cardSerial,
                          message: "online load \(load.reference) on card \(load.cardSerial): prepared at balance \(load.balanceBefore) + \(load.amount) = \(load.balanceBefore + load.amount) (counter \(load.counterBefore)), but the card shows \(balanceAfter) at counter \(counterAfter): not confirmed, the \(load.amount) stays held in pending-load from account \(accountID); read the card at the office and settle the load: cardctl office load-settle \(load.reference) --credited or --not-credited")
    }

    /// The movement that gives a load's hold back to the holder's account: the station's reversal (`load-release`), or
    /// the card office's settlement of a disputed load the card does not carry (`load-release-settled`).
    public static func loadRelease(_ load: LoadState, accountID: Int64, settled: Bool, at date: Date) -> Movement {
        Movement(from: pendingLoad, to: holderAccount(accountID), amount: load.amount, kind: settled ? "load-release-settled" : "load-release",
                 terminalID: load.terminalID, terminalSequence: nil, day: businessDay(of: date), cardSerial: nil,
                 cardSide: .neither, merchant: nil)
    }

    /// The `load-settled` flag: the card office's decision on a disputed load, and why (the operators' record of it).
    public static func loadSettledFlag(_ load: LoadState, credited: Bool, to account: String, reason: String) -> RaisedFlag {
        let record = OnlineLoadReference.record(named: load.reference)
        return RaisedFlag(code: "load-settled", terminalID: load.terminalID, terminalSequence: record?.sequence, cardSerial: load.cardSerial,
                          message: "online load \(load.reference) on card \(load.cardSerial) (\(load.amount)) settled by the card office as \(credited ? "credited to the card" : "not on the card"): its hold went from pending-load to \(account); reason: \(reason)")
    }

    /// Why a disputed load cannot be given back to the account: its own record says the card carries it.
    public static func ownRecordCarriesLoad(_ load: LoadState) -> String {
        let record = OnlineLoadReference.record(named: load.reference)
        return "load \(load.reference)'s own record (terminal \(load.terminalID), sequence \(record.map { "\($0.sequence)" } ?? "?")) was uploaded as done: the card carries the money; settle the load as credited"
    }

    /// The refusals of a settlement that does not apply to the load's phase, or `nil` when it settles (disputed) or is
    /// answered as it stands (already decided the same way).
    public static func settlementRefusal(_ load: LoadState, credited: Bool) -> SettlementError? {
        switch (load.phase, credited) {
        case (.disputed, _), (.confirmed, true), (.reversed, false): nil
        case (.prepared, _):
            SettlementError(.conflict, "load \(load.reference) is not disputed (it is prepared): its terminal confirms or reverses it; nothing was settled")
        case (.confirmed, false):
            SettlementError(.conflict, "load \(load.reference) was confirmed: the card carries it; it cannot be given back to the account")
        case (.reversed, true):
            SettlementError(.conflict, "load \(load.reference) was reversed: its hold went back to the account; it cannot be credited now (prepare a new load)")
        }
    }

    /// A confirmed online load moves the card's purse: the window, the mirror, and the link that makes the uploaded
    /// purse-load record of the same counter book nothing. Returns whether the counter was already booked by an
    /// uploaded record (then the confirmation must not credit the purse again).
    public static func confirmOnlineLoad(reference: String, amount: Fen, balanceAfter: Fen, counterAfter: UInt16,
                                         in book: inout CardBook) -> Bool {
        let already = book.purse.window.position(of: counterAfter) == .repeated
        book.purse.onlineLoads.append(OnlineLoadLink(counterAfter: counterAfter, amount: amount, reference: reference))
        if book.purse.onlineLoads.count > WalletBook.linksKept { book.purse.onlineLoads.removeFirst() }
        book.purse.window.insert(counterAfter)
        if var card = book.card, card.purseCounter.map({ CounterWindow.distance(from: $0, to: counterAfter) > 0 }) ?? true {
            card.purseCounter = counterAfter
            card.purseMirror = balanceAfter
            book.card = card
        }
        return already
    }
}
