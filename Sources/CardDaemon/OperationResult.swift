import CampusCard
import Foundation

// The one file that maps the card layer's types (CampusCard) to the results the machines take. The integrator runs
// the operation an action asks for and hands its result back through these initialisers.

/// A debit's result, purse or water.
public enum DebitOutcome: Hashable, Sendable {
    /// The money moved: the balance after it, and what failed after the commit (nothing to repeat).
    case done(balance: Fen, warnings: [String])
    /// Nothing was written for this debit (a refusal, or a failure before the journal's intent was left open).
    case refused(Refusal)
    /// The commit write went unanswered (the card left, the reader failed): whether the money moved is decided at
    /// the card's next tap or debit here (`EarlierDecision`). Never retried on its own.
    case undetermined(String)
}

/// A read-only tap's result (purse at a POS).
public enum TapOutcome: Hashable, Sendable {
    case balance(Fen, warnings: [String])
    case refused(Refusal)
}

/// What a water controller learns when it checks an arriving card (identity + water wallet read, no write).
public enum WaterCheckOutcome: Hashable, Sendable {
    case card(WaterCardFacts)
    case refused(Refusal)
}

/// The facts a water session is decided on; the machine applies the rules.
public struct WaterCardFacts: Hashable, Sendable {
    /// `nil`: the card's status is normal.
    public var locked: LockStatus?
    public var expired: Bool
    public var balance: Fen
    public init(locked: LockStatus? = nil, expired: Bool = false, balance: Fen) {
        self.locked = locked
        self.expired = expired
        self.balance = balance
    }
}

/// A water settlement's result.
public enum SettleOutcome: Hashable, Sendable {
    case done(SettlementSummary)
    case refused(Refusal)
    case undetermined(String)
}

/// What a settlement did (`WaterSettlementResult`, in the daemon's words).
public struct SettlementSummary: Hashable, Sendable {
    /// Consumption since the last refill, charged to the holder's account (`nil`: a reset, the service reconciles).
    public var consumption: Fen?
    public var refill: Fen
    public var refund: Fen
    /// The water wallet's balance after the settlement.
    public var balance: Fen
    public var warnings: [String]
    public init(consumption: Fen?, refill: Fen, refund: Fen = .zero, balance: Fen, warnings: [String] = []) {
        self.consumption = consumption
        self.refill = refill
        self.refund = refund
        self.balance = balance
        self.warnings = warnings
    }
}

/// Whether locking a blacklisted card on the card itself worked.
public enum LockOutcome: Hashable, Sendable {
    case locked
    case failed(String)
}

extension Refusal {
    /// A card-layer refusal: same code, same message (and the PIN tries left).
    public init(_ error: CardOperationError) {
        let code: Code = switch error.code {
        case .notCampusCard: .notCampusCard
        case .unsupportedLayout: .unsupportedLayout
        case .tampered: .tampered
        case .replay: .replay
        case .insufficientFunds: .insufficientFunds
        case .overLimit: .overLimit
        case .cardLocked: .cardLocked
        case .expired: .expired
        case .unknownKeyVersion: .unknownKeyVersion
        case .readerCannot: .readerCannot
        case .notBlank: .notBlank
        case .journal: .journal
        case .missingKey: .missingKey
        case .garbled: .garbled
        case .waterInterrupted: .waterInterrupted
        case .pinRequired: .pinRequired
        case .pinWrong: .pinWrong
        case .pinBlocked: .pinBlocked
        case .pinNotSet: .pinNotSet
        case .invalidHolderSetting: .invalidHolderSetting
        }
        self.init(code, error.message, pinTriesLeft: error.pinTriesLeft)
    }

    /// Any error of an operation that wrote nothing (or left no intent open).
    public static func from(_ error: (any Error)?) -> Refusal {
        if let error = error as? CardOperationError { return Refusal(error) }
        return Refusal(.cardError, "the card operation did not complete (\(error.map { "\($0)" } ?? "no answer")); it was not carried out (nothing was debited): present the card again")
    }
}

extension DebitOutcome {
    /// A debit's result (purse or water) from its card session's report: done whenever the card carries it (even
    /// when a step after the commit failed: the money moved, the failure is a warning); undetermined only when the
    /// commit write went unanswered (its intent left open); else refused with the reason.
    public init<State>(_ report: OperationReport<State>, balance: KeyPath<State, Fen>, warnings: KeyPath<State, [String]>) {
        if let state = report.value {
            self = .done(balance: state[keyPath: balance], warnings: state[keyPath: warnings])
            return
        }
        switch report.outcome {
        case .done:
            self = .done(balance: report.doneIntent?.balanceAfter ?? .zero, warnings: [report.error.map { "\($0)" } ?? "a step after the commit failed"])
        case .undetermined:
            self = .undetermined("the card did not answer the write that commits the debit (\(report.error.map { "\($0)" } ?? "no answer")): whether it was charged is decided when the card is next presented here")
        case .notDone, nil:
            self = .refused(.from(report.error))
        }
    }

    public init(_ report: OperationReport<PurseState>) { self.init(report, balance: \.balance, warnings: \.warnings) }
    public init(_ report: OperationReport<WaterState>) { self.init(report, balance: \.balance, warnings: \.warnings) }
}

extension TapOutcome {
    public init(_ report: OperationReport<PurseState>) {
        if let state = report.value { self = .balance(state.balance, warnings: state.warnings) } else { self = .refused(.from(report.error)) }
    }
}

extension WaterCheckOutcome {
    /// The check of an arriving card: its identity (status, expiry) and its water wallet (`waterTap`), read at `now`.
    public init(_ report: OperationReport<WaterCardRead>, now: Date) {
        switch Result(catching: { try report.get() }) {
        case .success(let read):
            let locked: LockStatus? = switch read.identity.status {
            case .normal: nil
            case .lost: .lost
            case .frozen: .frozen
            case .cancelled: .cancelled
            }
            self = .card(WaterCardFacts(locked: locked, expired: read.identity.expires < CardDay(now), balance: read.water.balance))
        case .failure(let error):
            self = .refused(.from(error))
        }
    }
}

extension SettleOutcome {
    /// A settlement's result from its card session's report (see `DebitOutcome`).
    public init(_ report: OperationReport<WaterSettlementResult>) {
        if let settled = report.value {
            self = .done(SettlementSummary(consumption: settled.consumption, refill: settled.refill, refund: settled.refund,
                                           balance: settled.state.balance, warnings: settled.state.warnings))
            return
        }
        switch report.outcome {
        case .done:
            let done = report.doneIntent
            self = .done(SettlementSummary(consumption: done?.intent.consumption, refill: done?.intent.amount ?? .zero,
                                           balance: done?.balanceAfter ?? .zero, warnings: [report.error.map { "\($0)" } ?? "a step after the commit failed"]))
        case .undetermined:
            self = .undetermined("the card did not answer the write that commits the settlement (\(report.error.map { "\($0)" } ?? "no answer")): it is decided when the card is next presented here")
        case .notDone, nil:
            self = .refused(.from(report.error))
        }
    }
}

extension LockOutcome {
    public init(_ report: OperationReport<PurseState>) {
        if report.value != nil { self = .locked } else { self = .failed(report.error.map { "\($0)" } ?? "no answer") }
    }
}

extension LockStatus {
    /// The card's status to write.
    public var identityStatus: Identity.Status {
        switch self {
        case .lost: .lost
        case .frozen: .frozen
        case .cancelled: .cancelled
        }
    }
}

extension EarlierDecision {
    /// The earlier interrupted intents a card session decided (`OperationReport.decided`), in the machines' words.
    public static func decided(_ decided: [DecidedIntent]) -> [EarlierDecision] {
        decided.map { decided in
            let outcome: Outcome = switch decided.outcome {
            case .done(let balanceAfter, _): .done(balanceAfter: balanceAfter)
            case .notDone: .notDone
            case .undetermined: .undetermined
            }
            return EarlierDecision(terminalSequence: decided.intent.terminalSequence, kind: decided.intent.kind.rawValue,
                                   amount: decided.intent.amount, recordedAt: decided.intent.createdAt, outcome: outcome)
        }
    }
}

/// What a water controller reads of an arriving card: its identity and its water wallet.
public struct WaterCardRead: Sendable {
    public var identity: Identity
    public var water: WaterState
    public init(identity: Identity, water: WaterState) {
        self.identity = identity
        self.water = water
    }
}
