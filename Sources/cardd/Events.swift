import CampusCard
import CardDaemon
import Foundation

/// One line of the control API's event stream (docs/control-api.md): what happened, as JSON. Amounts are yuan text
/// with two decimals ("12.50"), never floating point.
struct EventLine: Codable, Sendable, Equatable {
    struct Reason: Codable, Sendable, Equatable {
        var code: String
        var message: String
    }
    struct Decision: Codable, Sendable, Equatable {
        var terminalSequence: UInt32
        var kind: String
        var amountYuan: String
        /// "done", "not-done", "undetermined".
        var outcome: String
        var balanceAfterYuan: String?
    }

    var event: String
    var time = Date()
    var card: String?
    var saleID: String?
    var source: String?
    var amountYuan: String?
    var balanceYuan: String?
    var reason: Reason?
    var pinTriesLeft: Int?
    var message: String?
    var warnings: [String]?
    var expires: Date?
    var status: String?
    var unit: Int?
    var units: Int?
    var pulses: Int?
    var consumptionYuan: String?
    var refillYuan: String?
    var decisions: [Decision]?
    var saleIDs: [String]?

    init(event: String, card: String? = nil, message: String? = nil) {
        self.event = event
        self.card = card
        self.message = message
    }

    /// Whether this line ends the sale `saleID` (the answer `cardctl pos charge` waits for). A `request-rejected`
    /// line never does: it answers another request (a second arm, a late cancel, a PIN nobody asked for) and the
    /// sale goes on; a rejected arm is answered to its own client directly.
    func ends(sale saleID: String) -> Bool {
        guard self.saleID == saleID else { return false }
        return ["sale-done", "sale-refused", "sale-undetermined", "sale-cancelled", "sale-timed-out"].contains(event)
    }
}

/// What the daemon publishes and remembers of a machine's notice.
protocol NoticeDescribing {
    /// The card and a short result when the notice ends a tap ("done 12.50", "refused insufficient-funds").
    var tapResult: (String, String)? { get }
    var eventLine: EventLine { get }
}

private func reason(_ refusal: Refusal) -> EventLine.Reason { EventLine.Reason(code: refusal.code.rawValue, message: refusal.message) }

private func decisions(_ list: [EarlierDecision]) -> [EventLine.Decision] {
    list.map { decision in
        switch decision.outcome {
        case .done(let balance):
            EventLine.Decision(terminalSequence: decision.terminalSequence, kind: decision.kind, amountYuan: decision.amount.yuan,
                               outcome: "done", balanceAfterYuan: balance.yuan)
        case .notDone:
            EventLine.Decision(terminalSequence: decision.terminalSequence, kind: decision.kind, amountYuan: decision.amount.yuan, outcome: "not-done")
        case .undetermined:
            EventLine.Decision(terminalSequence: decision.terminalSequence, kind: decision.kind, amountYuan: decision.amount.yuan,
                               outcome: "undetermined")
        }
    }
}

private func saleSource(_ source: PosMachine.SaleSource) -> (saleID: String?, source: String) {
    switch source {
    case .client(let saleID): (saleID, "client")
    case .window(let name): (nil, "window \(name)")
    }
}

extension EventLine {
    init(_ notice: PosMachine.Notice) {
        switch notice {
        case .cardArrived(let uid): self.init(event: "card-arrived", card: uid)
        case .cardLeft(let uid): self.init(event: "card-left", card: uid)
        case .saleArmed(let saleID, let amount, let expires):
            self.init(event: "sale-armed")
            (self.saleID, amountYuan, self.expires) = (saleID, amount.yuan, expires)
        case .saleDone(let from, let uid, let amount, let balance, let warnings):
            self.init(event: "sale-done", card: uid)
            (saleID, source) = EventLine.sourceFields(from)
            (amountYuan, balanceYuan) = (amount.yuan, balance.yuan)
            if !warnings.isEmpty { self.warnings = warnings }
        case .saleRefused(let from, let uid, let refusal):
            self.init(event: "sale-refused", card: uid, message: refusal.message)
            (saleID, source) = EventLine.sourceFields(from)
            (reason, pinTriesLeft) = (CardDaemonReason(refusal), refusal.pinTriesLeft)
        case .pinRequired(let saleID, let uid, let triesLeft):
            self.init(event: "pin-required", card: uid, message: "the holder's PIN is needed for this sale: send it with `pin`")
            (self.saleID, pinTriesLeft) = (saleID, triesLeft)
        case .saleUndetermined(let from, let uid, let message):
            self.init(event: "sale-undetermined", card: uid, message: message)
            (saleID, source) = EventLine.sourceFields(from)
        case .saleCancelled(let saleID):
            self.init(event: "sale-cancelled")
            self.saleID = saleID
        case .saleTimedOut(let saleID):
            self.init(event: "sale-timed-out", message: "no card was presented in time: nothing was debited")
            self.saleID = saleID
        case .requestRejected(let saleID, let rejection, let message):
            self.init(event: "request-rejected", message: message)
            (self.saleID, reason) = (saleID, Reason(code: rejection.rawValue, message: message))
        case .balance(let uid, let balance, let warnings):
            self.init(event: "balance", card: uid)
            balanceYuan = balance.yuan
            if !warnings.isEmpty { self.warnings = warnings }
        case .cardRefused(let uid, let refusal):
            self.init(event: "card-refused", card: uid, message: refusal.message)
            reason = CardDaemonReason(refusal)
        case .cardLocked(let uid, let status):
            self.init(event: "card-locked", card: uid, message: "the card is on the blacklist: refused and locked (\(status.rawValue))")
            self.status = status.rawValue
        case .lockFailed(let uid, let message): self.init(event: "lock-failed", card: uid, message: message)
        case .earlierDecided(let uid, let list, let saleIDs):
            self.init(event: "earlier-decided", card: uid)
            (decisions, self.saleIDs) = (CardDaemonDecisions(list), saleIDs)
        }
    }

    init(_ notice: WaterMachine.Notice) {
        switch notice {
        case .cardArrived(let uid): self.init(event: "card-arrived", card: uid)
        case .cardLeft(let uid): self.init(event: "card-left", card: uid)
        case .cardRefused(let uid, let refusal):
            self.init(event: "card-refused", card: uid, message: refusal.message)
            reason = CardDaemonReason(refusal)
        case .sessionStarted(let uid, let balance):
            self.init(event: "water-session-started", card: uid)
            balanceYuan = balance.yuan
        case .unitDebited(let uid, let unit, let balance):
            self.init(event: "water-unit-debited", card: uid)
            (self.unit, balanceYuan) = (unit, balance.yuan)
        case .unitNotDispensed(let uid, let unit):
            self.init(event: "water-unit-not-dispensed", card: uid, message: "a unit was paid after the session ended: not dispensed")
            self.unit = unit
        case .debitUndetermined(let uid, let unit, let message):
            self.init(event: "water-debit-undetermined", card: uid, message: message)
            self.unit = unit
        case .valveOpened(let uid): self.init(event: "valve-opened", card: uid)
        case .valveClosed(let why):
            self.init(event: "valve-closed")
            status = why.rawValue
        case .unitsDispensed(let uid, let units):
            self.init(event: "water-units-dispensed", card: uid)
            self.units = units
        case .sessionEnded(let uid, let summary):
            self.init(event: "water-session-ended", card: uid)
            (units, pulses, status) = (summary.unitsPaid, summary.pulsesDispensed, summary.reason.rawValue)
        case .leakDetected(let pulses):
            self.init(event: "leak-detected", message: "the meter counts water with the valve closed: the controller is out of service until cleared")
            self.pulses = pulses
        case .fault(let message): self.init(event: "fault", message: message)
        case .faultLatched(let message): self.init(event: "fault-latched", message: message)
        case .faultCleared: self.init(event: "fault-cleared")
        case .cardLocked(let uid, let status):
            self.init(event: "card-locked", card: uid, message: "the card is on the blacklist: refused and locked (\(status.rawValue))")
            self.status = status.rawValue
        case .lockFailed(let uid, let message): self.init(event: "lock-failed", card: uid, message: message)
        case .earlierDecided(let uid, let list):
            self.init(event: "earlier-decided", card: uid)
            decisions = CardDaemonDecisions(list)
        }
    }

    init(_ notice: SettleMachine.Notice) {
        switch notice {
        case .cardArrived(let uid): self.init(event: "card-arrived", card: uid)
        case .cardLeft(let uid): self.init(event: "card-left", card: uid)
        case .settled(let uid, let summary):
            self.init(event: "water-settled", card: uid)
            (consumptionYuan, refillYuan, balanceYuan) = (summary.consumption?.yuan ?? "unknown", summary.refill.yuan, summary.balance.yuan)
            if !summary.warnings.isEmpty { warnings = summary.warnings }
        case .cardRefused(let uid, let refusal):
            self.init(event: "card-refused", card: uid, message: refusal.message)
            reason = CardDaemonReason(refusal)
        case .settlementUndetermined(let uid, let message): self.init(event: "settlement-undetermined", card: uid, message: message)
        case .cardLocked(let uid, let status):
            self.init(event: "card-locked", card: uid, message: "the card is on the blacklist: refused and locked (\(status.rawValue))")
            self.status = status.rawValue
        case .lockFailed(let uid, let message): self.init(event: "lock-failed", card: uid, message: message)
        case .earlierDecided(let uid, let list):
            self.init(event: "earlier-decided", card: uid)
            decisions = CardDaemonDecisions(list)
        }
    }

    static func sourceFields(_ from: PosMachine.SaleSource) -> (String?, String?) {
        let fields = saleSource(from)
        return (fields.saleID, fields.source)
    }
}

// Free-function spellings the initialisers above use (a stored property named `reason`/`decisions` shadows them).
private func CardDaemonReason(_ refusal: Refusal) -> EventLine.Reason { reason(refusal) }
private func CardDaemonDecisions(_ list: [EarlierDecision]) -> [EventLine.Decision] { decisions(list) }

extension PosMachine.Notice: NoticeDescribing {
    var tapResult: (String, String)? {
        switch self {
        case .saleDone(_, let card, let amount, let balance, _): (card, "debited \(amount.yuan), balance \(balance.yuan)")
        case .saleRefused(_, let card, let refusal): (card, "refused \(refusal.code.rawValue)")
        case .saleUndetermined(_, let card, _): (card, "undetermined")
        case .balance(let card, let balance, _): (card, "balance \(balance.yuan)")
        case .cardRefused(let card, let refusal): (card, "refused \(refusal.code.rawValue)")
        case .cardLocked(let card, let status): (card, "locked \(status.rawValue)")
        default: nil
        }
    }
    var eventLine: EventLine { EventLine(self) }
}

extension WaterMachine.Notice: NoticeDescribing {
    var tapResult: (String, String)? {
        switch self {
        case .sessionEnded(let card, let summary): (card, "water \(summary.unitsPaid) units, \(summary.reason.rawValue)")
        case .cardRefused(let card, let refusal): (card, "refused \(refusal.code.rawValue)")
        case .cardLocked(let card, let status): (card, "locked \(status.rawValue)")
        default: nil
        }
    }
    var eventLine: EventLine { EventLine(self) }
}

extension SettleMachine.Notice: NoticeDescribing {
    var tapResult: (String, String)? {
        switch self {
        case .settled(let card, let summary): (card, "settled, water \(summary.balance.yuan)")
        case .cardRefused(let card, let refusal): (card, "refused \(refusal.code.rawValue)")
        case .settlementUndetermined(let card, _): (card, "undetermined")
        case .cardLocked(let card, let status): (card, "locked \(status.rawValue)")
        default: nil
        }
    }
    var eventLine: EventLine { EventLine(self) }
}

extension EventLine {
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()
}
