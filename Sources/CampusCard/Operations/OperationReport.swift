import Foundation

/// An intent and how it ended, as one card session decided it.
public struct DecidedIntent: Sendable, Hashable {
    public var intent: TransactionIntent
    public var outcome: TransactionOutcome
    public init(intent: TransactionIntent, outcome: TransactionOutcome) {
        self.intent = intent
        self.outcome = outcome
    }
}

/// What happened to the money of one card session's own operation.
public enum MoneyOutcome: String, Sendable, Hashable, Codable {
    /// The card carries it: the money moved, even if a later step failed (see the report's `error`).
    case done
    /// Nothing moved: refused, or interrupted before its commit and rolled back.
    case notDone = "not-done"
    /// The commit write went unanswered: tap the card again at this terminal to learn which.
    case undetermined
}

/// The result of one card session, as a value: what the operation returned (or why it failed), what happened to its
/// money, and which earlier interrupted operations of this terminal the session decided. Callers report from this,
/// never by comparing the journal before and after.
public struct OperationReport<Value: Sendable>: Sendable {
    /// What the operation returned; `nil` when it failed.
    public var value: Value?
    /// Why it failed; with a `done` outcome this is what failed after the commit (the money still moved).
    public var error: (any Error)?
    /// This session's own intents (recorded during it), oldest first, with their outcomes (`nil`: still open).
    public var intents: [(intent: TransactionIntent, outcome: TransactionOutcome?)]
    /// Earlier open intents of this terminal that this session decided (the card came back).
    public var decided: [DecidedIntent]

    public init(value: Value? = nil, error: (any Error)? = nil, intents: [(intent: TransactionIntent, outcome: TransactionOutcome?)] = [],
                decided: [DecidedIntent] = []) {
        self.value = value
        self.error = error
        self.intents = intents
        self.decided = decided
    }

    /// The money of this session's operation: `nil` when it recorded no intent and did not fail (a read, or an
    /// operation that moves no money); `.notDone` when it failed before recording one.
    public var outcome: MoneyOutcome? {
        if intents.contains(where: { if case .done = $0.outcome { true } else { false } }) { return .done }
        if intents.contains(where: { $0.outcome == nil }) { return .undetermined }
        if !intents.isEmpty || error != nil { return .notDone }
        return nil
    }

    /// This session's done intent, if one is done (the last, when a retry recorded several).
    public var doneIntent: (intent: TransactionIntent, balanceAfter: Fen, counterAfter: UInt16)? {
        for (intent, outcome) in intents.reversed() {
            if case .done(let balance, let counter) = outcome { return (intent, balance, counter) }
        }
        return nil
    }

    /// The value, or the error thrown.
    public func get() throws -> Value {
        if let value { return value }
        throw error ?? JournalError("the card session returned nothing")
    }
}

extension Terminal {
    /// Runs `body` with this terminal, observing its journal: the report says what `body` returned or threw, the
    /// intents it recorded and how they ended, and the earlier intents it decided. It never throws.
    public func perform<Value: Sendable>(_ body: (Terminal) throws -> Value) -> OperationReport<Value> {
        let observer = ObservingJournal(journal)
        var observed = self
        observed.journal = observer
        let result = Result { try body(observed) }
        let (recorded, completions) = observer.snapshot()
        let mine = Set(recorded.map(\.terminalSequence))
        var decided: [DecidedIntent] = []
        for (sequence, outcome) in completions where !mine.contains(sequence) {
            if let intent = observer.openedBefore[sequence] { decided.append(DecidedIntent(intent: intent, outcome: outcome)) }
        }
        let intents = recorded.map { intent in (intent: intent, outcome: completions.last { $0.sequence == intent.terminalSequence }?.outcome) }
        switch result {
        case .success(let value): return OperationReport(value: value, error: nil, intents: intents, decided: decided)
        case .failure(let error): return OperationReport(value: nil, error: error, intents: intents, decided: decided)
        }
    }
}

/// A journal that passes every call through and remembers what one session recorded and completed.
final class ObservingJournal: TerminalJournal, @unchecked Sendable {
    private let inner: any TerminalJournal
    private let lock = NSLock()
    private var recorded: [TransactionIntent] = []
    private var completions: [(sequence: UInt32, outcome: TransactionOutcome)] = []
    /// Open intents handed out by `openIntents`, by sequence, so a completion can name the intent it decided.
    private(set) var openedBefore: [UInt32: TransactionIntent] = [:]

    init(_ inner: any TerminalJournal) { self.inner = inner }

    func snapshot() -> ([TransactionIntent], [(sequence: UInt32, outcome: TransactionOutcome)]) {
        lock.withLock { (recorded, completions) }
    }

    func nextSequence() throws -> UInt32 { try inner.nextSequence() }

    func record(_ intent: TransactionIntent) throws {
        try inner.record(intent)
        lock.withLock { recorded.append(intent) }
    }

    func complete(terminalSequence: UInt32, outcome: TransactionOutcome) throws {
        try inner.complete(terminalSequence: terminalSequence, outcome: outcome)
        lock.withLock { completions.append((terminalSequence, outcome)) }
    }

    func openIntents(cardUID: String) throws -> [TransactionIntent] {
        let open = try inner.openIntents(cardUID: cardUID)
        lock.withLock { for intent in open { openedBefore[intent.terminalSequence] = intent } }
        return open
    }

    func outcome(terminalSequence: UInt32) throws -> TransactionOutcome? { try inner.outcome(terminalSequence: terminalSequence) }
}
