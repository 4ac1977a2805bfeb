import CampusCard
import CardDaemon
import Foundation
import SettlementClient
import SettlementCore

/// An online load (圈存) at a load station, in the order that keeps every side whole:
/// 1. the card is read (balance, counter, serial) and the load's intent is recorded in the store (durable);
/// 2. the settlement service prepares the load: it holds the amount from the holder's account (refused: the intent
///    is completed not-done and the card is not written);
/// 3. the card is written (the tear-safe load);
/// 4. done → confirm, not done → reverse; undetermined → nothing now: the card's next tap here decides the intent,
///    and the decided record, uploaded, settles the load at the service (its reference names the record).
/// The reference is the intent's own name, `load-t<terminal>-s<sequence>`, so a confirmation lost to the network is
/// recovered from the uploaded record, never from memory.
enum OnlineLoad {
    static func reference(terminal: TerminalID, sequence: UInt32) -> String { OnlineLoadReference.of(terminal: terminal, sequence: sequence) }

    /// Settles the service's side of a load the card decided (this tap's, or an earlier interrupted one). A failure
    /// here loses nothing: the uploaded record carries the decision.
    static func settle(_ intent: TransactionIntent, _ outcome: TransactionOutcome, client: SettlementClient) async -> String? {
        guard intent.kind == .purseLoad else { return nil }
        let reference = reference(terminal: intent.terminalID, sequence: intent.terminalSequence)
        do {
            switch outcome {
            case .done(let balance, let counter): _ = try await client.confirmLoad(reference: reference, balanceAfter: balance, counterAfter: counter)
            case .notDone: _ = try await client.reverseLoad(reference: reference)
            case .undetermined: return nil
            }
            return nil
        } catch {
            return "the settlement service did not take the load's \(outcome == .notDone ? "reversal" : "confirmation") yet (\(error)): the uploaded record settles it"
        }
    }
}

/// The journal of a load station's card session: records the intent (durable first), then has the settlement
/// service prepare the load before `load` writes the card. `record` runs on the card session's PC/SC thread, which
/// may block for the request (never on the cooperative pool).
final class OnlineLoadJournal: TerminalJournal, @unchecked Sendable {
    private let inner: any TerminalJournal
    private let client: SettlementClient

    init(_ inner: any TerminalJournal, client: SettlementClient) {
        self.inner = inner
        self.client = client
    }

    func nextSequence() throws -> UInt32 { try inner.nextSequence() }

    func record(_ intent: TransactionIntent) throws {
        try inner.record(intent)
        guard intent.kind == .purseLoad else { return }
        guard let serial = intent.cardSerial else {
            try inner.complete(terminalSequence: intent.terminalSequence, outcome: .notDone)
            throw JournalError("the load's card serial was not read: nothing was written; present the card again")
        }
        let reference = OnlineLoad.reference(terminal: intent.terminalID, sequence: intent.terminalSequence)
        let result = Blocking.wait { [client] in
            try await client.prepareLoad(reference: reference, cardSerial: serial, amount: intent.amount,
                                         balanceBefore: intent.balanceBefore, counterBefore: intent.counterBefore)
        }
        switch result {
        case .success: return
        case .failure(let error):
            // Nothing was written to the card: the intent is decided not-done now (its upload reverses any hold the
            // service made if the answer to the prepare was lost).
            try inner.complete(terminalSequence: intent.terminalSequence, outcome: .notDone)
            throw JournalError("the settlement service did not prepare the load (\(error)); nothing was written to the card")
        }
    }

    func complete(terminalSequence: UInt32, outcome: TransactionOutcome) throws { try inner.complete(terminalSequence: terminalSequence, outcome: outcome) }
    func openIntents(cardUID: String) throws -> [TransactionIntent] { try inner.openIntents(cardUID: cardUID) }
    func outcome(terminalSequence: UInt32) throws -> TransactionOutcome? { try inner.outcome(terminalSequence: terminalSequence) }
}

/// Runs async work from a thread that may block (a PC/SC session thread), waiting for its result.
enum Blocking {
    static func wait<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) -> Result<T, any Error> {
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        Task {
            do { box.set(.success(try await body())) } catch { box.set(.failure(error)) }
            done.signal()
        }
        done.wait()
        return box.get()
    }

    private final class ResultBox<T: Sendable>: @unchecked Sendable {
        private let lock = NSLock()
        private var result: Result<T, any Error>?
        func set(_ value: Result<T, any Error>) { lock.withLock { result = value } }
        func get() -> Result<T, any Error> { lock.withLock { result! } }
    }
}
