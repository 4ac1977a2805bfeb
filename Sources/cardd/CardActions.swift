import CampusCard
import CardDaemon
import CardSession
import Foundation

/// The card operations the mode machines ask for, run on the attached card through `CardPort`, and their reports
/// turned into the machines' result values. The money's outcome comes from the session's report (never from
/// comparing the journal): done even when a step after the commit failed; undetermined only when the commit write
/// went unanswered.
struct CardActions: Sendable {
    let port: CardPort
    let keystore: any Keystore
    let terminal: Terminal

    func debit(_ uid: CardUID, amount: Fen, pin: PIN?) async -> (DebitOutcome, [EarlierDecision]) {
        let report = await port.run(uid: uid, keystore: keystore, terminal: terminal) { ops, terminal in
            try ops.debit(amount, terminal: terminal, pin: pin)
        }
        return (DebitOutcome(report, balance: \.balance, warnings: \.warnings), report.earlierDecisions)
    }

    func tap(_ uid: CardUID) async -> (TapOutcome, [EarlierDecision]) {
        let report = await port.run(uid: uid, keystore: keystore, terminal: terminal) { ops, terminal in try ops.tap(terminal: terminal) }
        if let state = report.value { return (.balance(state.balance, warnings: state.warnings), report.earlierDecisions) }
        return (.refused(Refusal(failure: report.error)), report.earlierDecisions)
    }

    func lock(_ uid: CardUID, _ status: LockStatus) async -> LockOutcome {
        let report = await port.run(uid: uid, keystore: keystore, terminal: terminal) { ops, _ in
            try ops.lockAtTerminal(status.cardStatus)
        }
        if report.value != nil { return .locked }
        return .failed("\(report.error.map { "\($0)" } ?? "no answer")")
    }

    /// A water controller's check of an arriving card: the MAC'd identity (status, expiry) and the water wallet.
    func waterCheck(_ uid: CardUID, now: Date) async -> (WaterCheckOutcome, [EarlierDecision]) {
        let report = await port.run(uid: uid, keystore: keystore, terminal: terminal) { ops, terminal in
            let identity = try ops.readIdentity()
            let water = try ops.waterTap(terminal: terminal)
            return (identity, water)
        }
        guard let (identity, water) = report.value else {
            return (.refused(Refusal(failure: report.error)), report.earlierDecisions)
        }
        let facts = WaterCardFacts(locked: LockStatus(identity.status), expired: identity.expires < CardDay(now), balance: water.balance)
        return (.card(facts), report.earlierDecisions)
    }

    func waterDebit(_ uid: CardUID, amount: Fen) async -> (DebitOutcome, [EarlierDecision]) {
        let report = await port.run(uid: uid, keystore: keystore, terminal: terminal) { ops, terminal in
            try ops.waterDebit(amount, terminal: terminal, validityChecked: true)
        }
        return (DebitOutcome(report, balance: \.balance, warnings: \.warnings), report.earlierDecisions)
    }

    func settle(_ uid: CardUID) async -> (SettleOutcome, [EarlierDecision]) {
        let report = await port.run(uid: uid, keystore: keystore, terminal: terminal) { ops, terminal in try ops.waterSettle(terminal: terminal) }
        let decisions = report.earlierDecisions
        if let result = report.value {
            let summary = SettlementSummary(consumption: result.consumption, refill: result.refill, balance: result.state.balance,
                                            warnings: result.state.warnings)
            return (.done(summary), decisions)
        }
        switch report.outcome {
        case .done:
            let done = report.doneIntent
            let summary = SettlementSummary(consumption: done?.intent.consumption, refill: done?.intent.amount ?? .zero,
                                            balance: done?.balanceAfter ?? .zero, warnings: ["\(report.error.map { "\($0)" } ?? "")"])
            return (.done(summary), decisions)
        case .undetermined: return (.undetermined("\(report.error.map { "\($0)" } ?? "the commit write went unanswered")"), decisions)
        case .notDone, nil: return (.refused(Refusal(failure: report.error)), decisions)
        }
    }
}

extension OperationReport {
    /// The earlier interrupted operations this session decided, in the machines' words.
    var earlierDecisions: [EarlierDecision] {
        decided.map { decided in
            let outcome: EarlierDecision.Outcome = switch decided.outcome {
            case .done(let balance, _): .done(balanceAfter: balance)
            case .notDone: .notDone
            case .undetermined: .undetermined
            }
            return EarlierDecision(terminalSequence: decided.intent.terminalSequence, kind: decided.intent.kind.rawValue,
                                   amount: decided.intent.amount, recordedAt: decided.intent.createdAt, outcome: outcome)
        }
    }
}

extension DebitOutcome {
    /// A debit's result from its session's report: done (even with a failure after the commit: the money moved),
    /// undetermined (the commit write unanswered), else refused with the reason.
    init<State>(_ report: OperationReport<State>, balance: KeyPath<State, Fen>, warnings: KeyPath<State, [String]>) {
        if let state = report.value {
            self = .done(balance: state[keyPath: balance], warnings: state[keyPath: warnings])
            return
        }
        switch report.outcome {
        case .done:
            self = .done(balance: report.doneIntent?.balanceAfter ?? .zero, warnings: [report.error.map { "\($0)" } ?? ""])
        case .undetermined:
            self = .undetermined(report.error.map { "\($0)" } ?? "the commit write went unanswered: present the card again here")
        case .notDone, nil:
            self = .refused(Refusal(failure: report.error))
        }
    }
}

extension Refusal {
    /// A failure that wrote nothing: the card layer's refusal as it is, anything else as a card error.
    init(failure error: (any Error)?) {
        if let error = error as? CardOperationError {
            self.init(error)
        } else if let error = error as? ReaderSessionError {
            self.init(.cardError, error.message)
        } else {
            self.init(.cardError, "the card operation failed (\(error.map { "\($0)" } ?? "no answer")); nothing was written: present the card again")
        }
    }
}

extension LockStatus {
    init?(_ status: Identity.Status) {
        switch status {
        case .normal: return nil
        case .lost: self = .lost
        case .frozen: self = .frozen
        case .cancelled: self = .cancelled
        }
    }

    var cardStatus: Identity.Status {
        switch self {
        case .lost: .lost
        case .frozen: .frozen
        case .cancelled: .cancelled
        }
    }
}
