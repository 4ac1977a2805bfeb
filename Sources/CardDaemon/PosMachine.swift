import CampusCard
import Foundation

/// A canteen POS as a value: events in, actions out, no I/O; time comes only through `now`.
///
/// Rules (each one tested in PosMachineTests):
/// - A sale is armed by the client (amount, the client's sale id, a timeout); a second arm while one is open is
///   rejected. The next card that *arrives* is debited once (`.debit`); a card already on the reader when the sale is
///   armed is not: it must leave and come back.
/// - One debit per card presence: a card left on the reader is never charged again. A new debit needs that card to
///   leave, or a different card.
/// - The debit's result goes back to the client: done (balance), refused (a typed reason), PIN needed, or
///   undetermined. After "PIN needed" the client sends the PIN for that sale id and the card is debited again with
///   it — the same card only (present, or when it comes back); another card is only read.
/// - Nothing is retried on the machine's own: an undetermined debit is decided by the card layer at that card's next
///   tap or debit here, and the decisions it reports are passed to the client (`.earlierDecided`, with the sale ids
///   this machine reported undetermined for that card).
/// - An armed sale (or one waiting for its PIN) expires at its deadline: "timed out", nothing debited, even when a
///   card arrives in the same instant. A debit already asked for is never cancelled or timed out: its result decides.
/// - With no sale, an active fixed-price window debits its price from every arriving card; with no sale and no window,
///   an arriving card is read (`.tap`), which decides interrupted operations and shows the balance.
/// - A blacklisted card is refused and locked (`.lock`); every debit first passes the offline policy.
public struct PosMachine: Sendable {
    public struct Configuration: Hashable, Sendable {
        /// The timeout of a sale armed without one.
        public var saleTimeout: TimeInterval
        public var windows: [PriceWindow]
        /// The terminal's local time, for the windows.
        public var timeZone: TimeZone
        public var policy: OfflinePolicy

        public init(saleTimeout: TimeInterval = 60, windows: [PriceWindow] = [], timeZone: TimeZone = .current,
                    policy: OfflinePolicy = .defaults) {
            self.saleTimeout = saleTimeout
            self.windows = windows
            self.timeZone = timeZone
            self.policy = policy
        }
    }

    /// Whose debit it is: a client's armed sale, or a fixed-price window's.
    public enum SaleSource: Hashable, Sendable {
        case client(saleID: String)
        case window(name: String)
    }

    public enum Event: Equatable, Sendable {
        /// The reader loop saw a card arrive, with the terminal's blacklist verdict on its UID.
        case cardArrived(CardUID, blacklisted: BlacklistHit? = nil)
        case cardLeft(CardUID)
        /// From the client: arm a sale (`timeout` nil: the configured one).
        case arm(saleID: String, amount: Fen, timeout: TimeInterval? = nil)
        case cancel(saleID: String)
        /// From the client, after `.pinRequired`: the holder's PIN for that sale.
        case pin(saleID: String, PIN)
        /// The store's queue summary or blacklist age changed.
        case context(TerminalContext)
        /// The answer to `.debit`; `decisions`: the earlier interrupted operations the card layer decided meanwhile.
        case debitFinished(CardUID, DebitOutcome, decisions: [EarlierDecision] = [])
        /// The answer to `.tap`.
        case tapFinished(CardUID, TapOutcome, decisions: [EarlierDecision] = [])
        /// The answer to `.lock`.
        case lockFinished(CardUID, LockOutcome)
        /// Time passed (send one at `nextDeadline`, or periodically).
        case tick
    }

    public enum Action: Equatable, Sendable {
        /// Debit the card on the reader (`CampusCardOperations.debit(_:terminal:pin:)`), then send `.debitFinished`.
        case debit(CardUID, amount: Fen, pin: PIN?, for: SaleSource)
        /// Read the card (`CampusCardOperations.tap(terminal:)`), then send `.tapFinished`.
        case tap(CardUID)
        /// Write the lock status on the card (`setStatus`), then send `.lockFinished`.
        case lock(CardUID, LockStatus)
        /// For observers (the POS UI's event stream, the log).
        case notify(Notice)
    }

    public enum Notice: Equatable, Sendable {
        case cardArrived(CardUID)
        case cardLeft(CardUID)
        case saleArmed(saleID: String, amount: Fen, expires: Date)
        case saleDone(SaleSource, card: CardUID, amount: Fen, balance: Fen, warnings: [String])
        case saleRefused(SaleSource, card: CardUID, Refusal)
        /// The card asks for the holder's PIN: the client sends `.pin` for this sale.
        case pinRequired(saleID: String, card: CardUID, triesLeft: Int?)
        case saleUndetermined(SaleSource, card: CardUID, message: String)
        case saleCancelled(saleID: String)
        case saleTimedOut(saleID: String)
        case requestRejected(saleID: String, RequestRejection, message: String)
        case balance(card: CardUID, Fen, warnings: [String])
        case cardRefused(card: CardUID, Refusal)
        case cardLocked(card: CardUID, LockStatus)
        case lockFailed(card: CardUID, message: String)
        /// Earlier interrupted operations on this card, decided now; `saleIDs`: the client sales this machine
        /// reported undetermined for the card.
        case earlierDecided(card: CardUID, [EarlierDecision], saleIDs: [String])
    }

    /// Why a client request was not taken.
    public enum RequestRejection: String, Sendable, Hashable {
        case saleAlreadyArmed = "sale-already-armed", unknownSale = "unknown-sale", debitInProgress = "debit-in-progress"
        case invalidAmount = "invalid-amount", invalidTimeout = "invalid-timeout", pinNotRequested = "pin-not-requested"
    }

    enum Phase: Equatable, Sendable {
        case armed
        case debiting(CardUID)
        /// The card asked for the PIN; `pin` once the client sent it (used when that card is present).
        case awaitingPIN(CardUID, pin: PIN?)
    }

    struct Sale: Equatable, Sendable {
        var id: String
        var amount: Fen
        var timeout: TimeInterval
        var deadline: Date
        var phase: Phase
    }

    struct Presence: Equatable, Sendable {
        var uid: CardUID
        var blacklisted: BlacklistHit?
        /// An action was taken for this presence: it gets no other (one debit per presence).
        var served = false
    }

    enum InFlight: Equatable, Sendable {
        case debit(CardUID, SaleSource, Fen)
        case tap(CardUID)
        case lock(CardUID, LockStatus)
    }

    public private(set) var configuration: Configuration
    public private(set) var context: TerminalContext
    var sale: Sale?
    var card: Presence?
    var inFlight: InFlight?
    /// Client sales reported undetermined, by card, until that card's next decisions.
    var undetermined: [CardUID: [String]] = [:]

    public init(configuration: Configuration, context: TerminalContext = TerminalContext()) {
        self.configuration = configuration
        self.context = context
    }

    /// The settlement service sent new offline limits: they apply from the next check on.
    public mutating func apply(policy: OfflinePolicy) { configuration.policy = policy }

    /// The settlement service's fixed prices, by window name: a configured window of that name charges the new price
    /// from the next card on. Windows the service does not name keep their configured price; a price that is not
    /// positive is ignored. Returns the names of the windows whose price changed.
    @discardableResult
    public mutating func apply(fixedPrices: [String: Fen]) -> [String] {
        var changed: [String] = []
        for index in configuration.windows.indices {
            guard let price = fixedPrices[configuration.windows[index].name], price > .zero,
                  price != configuration.windows[index].price else { continue }
            configuration.windows[index].price = price
            changed.append(configuration.windows[index].name)
        }
        return changed
    }

    /// When the machine next needs a `.tick`: the open sale's deadline.
    public var nextDeadline: Date? {
        guard let sale else { return nil }
        if case .debiting = sale.phase { return nil }
        return sale.deadline
    }

    /// The open sale's id, if any (for the control API's status).
    public var openSaleID: String? { sale?.id }

    public mutating func handle(_ event: Event, now: Date) -> [Action] {
        var actions: [Action] = []
        expire(now: now, into: &actions)
        switch event {
        case .cardArrived(let uid, let blacklisted):
            if let present = card {
                if present.uid == uid { return actions }  // the reader saw it again: still the same presence
                actions.append(.notify(.cardLeft(present.uid)))
            }
            card = Presence(uid: uid, blacklisted: blacklisted)
            actions.append(.notify(.cardArrived(uid)))
        case .cardLeft(let uid):
            guard card?.uid == uid else { return actions }
            card = nil
            actions.append(.notify(.cardLeft(uid)))
        case .arm(let id, let amount, let timeout):
            if let sale {
                actions.append(.notify(.requestRejected(saleID: id, .saleAlreadyArmed, message: "sale \(sale.id) is still open: finish or cancel it first")))
            } else if amount <= .zero {
                actions.append(.notify(.requestRejected(saleID: id, .invalidAmount, message: "a sale must be more than 0.00 yuan")))
            } else if let timeout, !(timeout > 0) {
                actions.append(.notify(.requestRejected(saleID: id, .invalidTimeout, message: "a sale's timeout must be more than 0 seconds")))
            } else {
                let timeout = timeout ?? configuration.saleTimeout
                sale = Sale(id: id, amount: amount, timeout: timeout, deadline: now.addingTimeInterval(timeout), phase: .armed)
                actions.append(.notify(.saleArmed(saleID: id, amount: amount, expires: now.addingTimeInterval(timeout))))
            }
        case .cancel(let id):
            guard let sale, sale.id == id else {
                actions.append(.notify(.requestRejected(saleID: id, .unknownSale, message: "no open sale \(id)")))
                break
            }
            if case .debiting = sale.phase {
                actions.append(.notify(.requestRejected(saleID: id, .debitInProgress, message: "sale \(id) is being debited: wait for its result")))
            } else {
                self.sale = nil
                actions.append(.notify(.saleCancelled(saleID: id)))
            }
        case .pin(let id, let pin):
            guard var open = sale, open.id == id else {
                actions.append(.notify(.requestRejected(saleID: id, .unknownSale, message: "no open sale \(id)")))
                break
            }
            guard case .awaitingPIN(let uid, _) = open.phase else {
                actions.append(.notify(.requestRejected(saleID: id, .pinNotRequested, message: "sale \(id) is not waiting for a PIN")))
                break
            }
            open.phase = .awaitingPIN(uid, pin: pin)
            sale = open
        case .context(let context):
            self.context = context
        case .debitFinished(let uid, let outcome, let decisions):
            guard case .debit(uid, let source, let amount) = inFlight else {
                passDecisions(decisions, card: uid, into: &actions)
                return actions
            }
            inFlight = nil
            passDecisions(decisions, card: uid, into: &actions)
            finishDebit(uid: uid, source: source, amount: amount, outcome: outcome, now: now, into: &actions)
        case .tapFinished(let uid, let outcome, let decisions):
            if inFlight == .tap(uid) { inFlight = nil }
            passDecisions(decisions, card: uid, into: &actions)
            switch outcome {
            case .balance(let balance, let warnings): actions.append(.notify(.balance(card: uid, balance, warnings: warnings)))
            case .refused(let refusal): actions.append(.notify(.cardRefused(card: uid, refusal)))
            }
        case .lockFinished(let uid, let outcome):
            if case .lock(uid, let status) = inFlight {
                inFlight = nil
                switch outcome {
                case .locked: actions.append(.notify(.cardLocked(card: uid, status)))
                case .failed(let message): actions.append(.notify(.lockFailed(card: uid, message: message)))
                }
            }
        case .tick:
            break
        }
        serve(now: now, into: &actions)
        return actions
    }

    /// An open sale not being debited expires at its deadline; nothing is debited for it.
    mutating func expire(now: Date, into actions: inout [Action]) {
        guard let open = sale, now >= open.deadline else { return }
        if case .debiting = open.phase { return }
        sale = nil
        actions.append(.notify(.saleTimedOut(saleID: open.id)))
    }

    mutating func passDecisions(_ decisions: [EarlierDecision], card uid: CardUID, into actions: inout [Action]) {
        guard !decisions.isEmpty else { return }
        actions.append(.notify(.earlierDecided(card: uid, decisions, saleIDs: undetermined.removeValue(forKey: uid) ?? [])))
    }

    mutating func finishDebit(uid: CardUID, source: SaleSource, amount: Fen, outcome: DebitOutcome, now: Date,
                              into actions: inout [Action]) {
        if case .client(let id) = source { guard sale?.id == id else { return } }
        switch outcome {
        case .done(let balance, let warnings):
            if case .client = source { sale = nil }
            actions.append(.notify(.saleDone(source, card: uid, amount: amount, balance: balance, warnings: warnings)))
        case .refused(let refusal) where refusal.code == .pinRequired || refusal.code == .pinWrong:
            guard case .client(let id) = source, var open = sale else {
                actions.append(.notify(.saleRefused(source, card: uid, refusal)))
                return
            }
            // Nothing was written: the sale waits for the PIN, bound to this card, with a fresh timeout for typing it.
            open.phase = .awaitingPIN(uid, pin: nil)
            open.deadline = now.addingTimeInterval(open.timeout)
            sale = open
            actions.append(.notify(.pinRequired(saleID: id, card: uid, triesLeft: refusal.pinTriesLeft)))
        case .refused(let refusal):
            if case .client = source { sale = nil }
            actions.append(.notify(.saleRefused(source, card: uid, refusal)))
        case .undetermined(let message):
            if case .client(let id) = source {
                sale = nil
                undetermined[uid, default: []].append(id)
            }
            actions.append(.notify(.saleUndetermined(source, card: uid, message: message)))
        }
    }

    /// Decides what to do with the card on the reader, when nothing is in flight.
    mutating func serve(now: Date, into actions: inout [Action]) {
        guard inFlight == nil, var present = card else { return }
        // A blacklisted card is refused and locked before anything else, a PIN retry included.
        if let hit = present.blacklisted {
            guard !present.served else { return }
            present.served = true
            card = present
            let refusal = Refusal(.blacklisted, "the card is on the blacklist (\(hit.status.rawValue)): refused and locked; send the holder to the card office")
            let saleForThisCard: Bool = switch sale?.phase {
            case .armed?: true
            case .awaitingPIN(let bound, _)?: bound == present.uid
            case .debiting?, nil: false
            }
            if let open = sale, saleForThisCard {
                sale = nil
                actions.append(.notify(.saleRefused(.client(saleID: open.id), card: present.uid, refusal)))
            } else {
                actions.append(.notify(.cardRefused(card: present.uid, refusal)))
            }
            inFlight = .lock(present.uid, hit.status)
            actions.append(.lock(present.uid, hit.status))
            return
        }
        // The PIN retry: the same card, the PIN given; allowed although the presence was served (that debit wrote nothing).
        if var open = sale, case .awaitingPIN(present.uid, let pin?) = open.phase {
            if let refusal = policyRefusal(open.amount, now: now) {
                sale = nil
                actions.append(.notify(.saleRefused(.client(saleID: open.id), card: present.uid, refusal)))
                return
            }
            open.phase = .debiting(present.uid)
            sale = open
            present.served = true
            card = present
            inFlight = .debit(present.uid, .client(saleID: open.id), open.amount)
            actions.append(.debit(present.uid, amount: open.amount, pin: pin, for: .client(saleID: open.id)))
            return
        }
        guard !present.served else { return }
        if let open = sale, case .awaitingPIN(present.uid, nil) = open.phase { return }  // wait for the PIN
        present.served = true
        card = present
        let uid = present.uid
        let debit: (SaleSource, Fen)?
        if var open = sale, open.phase == .armed {
            debit = (.client(saleID: open.id), open.amount)
            open.phase = .debiting(uid)
            sale = open
        } else if sale == nil, let window = configuration.windows.first(where: { $0.isActive(at: now, in: configuration.timeZone) }) {
            debit = (.window(name: window.name), window.price)
        } else {
            debit = nil
        }
        guard let (source, amount) = debit else {
            inFlight = .tap(uid)
            actions.append(.tap(uid))
            return
        }
        if let refusal = policyRefusal(amount, now: now) {
            if case .client = source { sale = nil }
            actions.append(.notify(.saleRefused(source, card: uid, refusal)))
            return
        }
        inFlight = .debit(uid, source, amount)
        actions.append(.debit(uid, amount: amount, pin: nil, for: source))
    }

    func policyRefusal(_ amount: Fen, now: Date) -> Refusal? {
        configuration.policy.check(amount: amount, queue: context.queue, blacklistUpdatedAt: context.blacklistUpdatedAt, now: now)?.refusal
    }
}
