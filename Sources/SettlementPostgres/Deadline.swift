import Foundation
import SettlementCore

/// Runs `operation` and gives up on it once `limit` has passed: a PostgreSQL request that stops making progress is a
/// typed, retryable `unavailable` after `limit`, never a request that hangs. Seen with postgres-nio 1.33.2: after an
/// immediate shutdown of the server between two statements of a transaction, the transaction's task waited forever
/// and ignored cancellation, so the operation is left behind (cancelled) rather than awaited.
func withDeadline<Result: Sendable>(_ limit: Duration, _ what: String,
                                    _ operation: @escaping @Sendable () async throws -> Result) async throws -> Result {
    let race = DeadlineRace<Result>()
    let work = Task {
        do { race.finish(with: .success(try await operation())) } catch { race.finish(with: .failure(error)) }
    }
    let timer = Task {
        try await Task.sleep(for: limit)
        race.finish(with: .failure(SettlementError(.unavailable, "\(what): PostgreSQL did not answer within \(limit.components.seconds) s: retry the request; if it keeps failing, check the database server")))
    }
    return try await withTaskCancellationHandler {
        let result = await race.value()
        timer.cancel()
        work.cancel()
        return try result.get()
    } onCancel: {
        work.cancel()
        timer.cancel()
    }
}

/// The first of the operation and the timer to finish decides the result.
private final class DeadlineRace<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Result<Value, any Error>?
    private var waiter: CheckedContinuation<Result<Value, any Error>, Never>?

    func finish(with outcome: Result<Value, any Error>) {
        let resume: CheckedContinuation<Result<Value, any Error>, Never>? = lock.withLock {
            guard result == nil else { return nil }
            result = outcome
            defer { waiter = nil }
            return waiter
        }
        resume?.resume(returning: outcome)
    }

    func value() async -> Result<Value, any Error> {
        await withCheckedContinuation { continuation in
            let ready: Result<Value, any Error>? = lock.withLock {
                if let result { return result }
                waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}
