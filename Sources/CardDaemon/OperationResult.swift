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
    static func from(_ error: any Error) -> Refusal {
        if let error = error as? CardOperationError { return Refusal(error) }
        return Refusal(.cardError, "the card operation failed (\(error)); nothing was written: present the card again")
    }
}

extension DebitOutcome {
    /// A purse debit's result. `leftOpen`: whether the operation left its journal intent open (a new open intent for
    /// this card after the failure: its commit write went unanswered); only then is a failure undetermined. A
    /// `CardOperationError` is always a refusal (the card layer decides every refusal before its first write).
    public init(_ result: Result<PurseState, any Error>, leftOpen: Bool) {
        switch result {
        case .success(let state): self = .done(balance: state.balance, warnings: state.warnings)
        case .failure(let error): self = Self.failure(error, leftOpen: leftOpen)
        }
    }

    /// A water unit debit's result (see the purse variant for `leftOpen`).
    public init(_ result: Result<WaterState, any Error>, leftOpen: Bool) {
        switch result {
        case .success(let state): self = .done(balance: state.balance, warnings: state.warnings)
        case .failure(let error): self = Self.failure(error, leftOpen: leftOpen)
        }
    }

    private static func failure(_ error: any Error, leftOpen: Bool) -> DebitOutcome {
        if error is CardOperationError || !leftOpen { return .refused(.from(error)) }
        return .undetermined("the card did not answer the write that commits the debit (\(error)): whether it was charged is decided when the card is next presented here")
    }
}

extension TapOutcome {
    public init(_ result: Result<PurseState, any Error>) {
        switch result {
        case .success(let state): self = .balance(state.balance, warnings: state.warnings)
        case .failure(let error): self = .refused(.from(error))
        }
    }
}

extension WaterCheckOutcome {
    /// The check of an arriving card: its identity (status, expiry) and its water wallet (`waterTap`), read at `now`.
    public init(_ result: Result<(identity: Identity, water: WaterState), any Error>, now: Date) {
        switch result {
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
    /// A settlement's result (see `DebitOutcome` for `leftOpen`).
    public init(_ result: Result<WaterSettlementResult, any Error>, leftOpen: Bool) {
        switch result {
        case .success(let settled):
            self = .done(SettlementSummary(consumption: settled.consumption, refill: settled.refill, refund: settled.refund,
                                           balance: settled.state.balance, warnings: settled.state.warnings))
        case .failure(let error):
            if error is CardOperationError || !leftOpen { self = .refused(.from(error)) } else {
                self = .undetermined("the card did not answer the write that commits the settlement (\(error)): it is decided when the card is next presented here")
            }
        }
    }
}

extension LockOutcome {
    public init(_ result: Result<PurseState, any Error>) {
        switch result {
        case .success: self = .locked
        case .failure(let error): self = .failed("\(error)")
        }
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
    /// The decisions an operation made about this terminal's earlier interrupted intents for the card: pass the
    /// intents that were open before the operation (`journal.openIntents(cardUID:)`), get those now decided.
    public static func decided(_ openBefore: [TransactionIntent], in journal: any TerminalJournal) -> [EarlierDecision] {
        openBefore.compactMap { intent in
            guard let outcome = try? journal.outcome(terminalSequence: intent.terminalSequence) else { return nil }
            let decided: Outcome = switch outcome {
            case .done(let balanceAfter, _): .done(balanceAfter: Fen(balanceAfter))
            case .notDone: .notDone
            case .undetermined: .undetermined
            }
            return EarlierDecision(terminalSequence: intent.terminalSequence, kind: intent.kind.rawValue, amount: Fen(intent.amount),
                                   recordedAt: intent.createdAt, outcome: decided)
        }
    }
}

/// The journal around one card operation: what was open for the card before it, so that afterwards the integrator
/// can tell whether the operation left its own intent open (`leftOpen`: its commit write went unanswered) and which
/// earlier interrupted intents it decided (`decisions`).
///
///     let watch = JournalWatch(terminal.journal, card: uid)
///     let result = Result { try ops.debit(amount, terminal: terminal, pin: pin) }
///     machine.handle(.debitFinished(uid, DebitOutcome(result, leftOpen: watch.leftOpen()), decisions: watch.decisions()), now: Date())
public struct JournalWatch: Sendable {
    public let journal: any TerminalJournal
    public let card: CardUID
    /// The card's intents open before the operation.
    public let before: [TransactionIntent]

    public init(_ journal: any TerminalJournal, card: CardUID) {
        self.journal = journal
        self.card = card
        before = (try? journal.openIntents(cardUID: card)) ?? []
    }

    /// Whether an intent for the card that was not open before is open now. A journal that cannot be read counts as
    /// open (undetermined is the safe answer: nothing is retried, the next tap decides).
    public func leftOpen() -> Bool {
        guard let now = try? journal.openIntents(cardUID: card) else { return true }
        let earlier = Set(before.map(\.terminalSequence))
        return now.contains { !earlier.contains($0.terminalSequence) }
    }

    /// The earlier intents the operation decided.
    public func decisions() -> [EarlierDecision] { EarlierDecision.decided(before, in: journal) }
}
