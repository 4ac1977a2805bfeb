import PostgresNIO
import SettlementCore

/// How the store classifies what postgres-nio throws: one choke point, so every method answers with a
/// `SettlementError` whose code tells the caller whether to retry (`unavailable`) or not (`storage`, `conflict`).
enum PostgresFailure {
    /// SQLSTATEs that end a transaction which may succeed when run again: serialization_failure, deadlock_detected.
    static let retryableStates: Set<String> = ["40001", "40P01"]

    /// The error behind postgres-nio's transaction wrapper: what the body threw, else what BEGIN or COMMIT threw.
    static func cause(_ error: any Error) -> any Error {
        guard let wrapper = error as? PostgresTransactionError else { return error }
        return wrapper.closureError ?? wrapper.beginError ?? wrapper.commitError ?? wrapper.rollbackError ?? error
    }

    /// Whether running the same transaction again may succeed (a lost race, not a bad request).
    static func isRetryable(_ error: any Error) -> Bool {
        let error = cause(error)
        if error is RetryTransaction { return true }
        guard let error = error as? PSQLError, error.code == .server, let state = error.serverInfo?[.sqlState] else { return false }
        return retryableStates.contains(state)
    }

    /// The error `what` (e.g. "ingest") answers with.
    static func map(_ error: any Error, _ what: String) -> SettlementError {
        let error = cause(error)
        if let error = error as? SettlementError { return error }
        if error is CancellationError {
            return SettlementError(.unavailable, "\(what): cancelled (the store is shutting down): retry on another instance")
        }
        if error is RetryTransaction {
            return SettlementError(.unavailable, "\(what): lost a race with a concurrent request too often: retry the request")
        }
        guard let error = error as? PSQLError else {
            // postgres-nio's pool gives up on a connection it could not make (its type is in an underscored module).
            if String(describing: type(of: error)) == "ConnectionPoolError" {
                return SettlementError(.unavailable, "\(what): no connection to PostgreSQL could be made (\(error)): check that the server is up and the URL's host, port and credentials")
            }
            return SettlementError(.storage, "\(what): unexpected storage error (\(type(of: error))): see the service log")
        }
        switch error.code {
        case .server:
            let state = error.serverInfo?[.sqlState] ?? "?????"
            let message = error.serverInfo?[.message] ?? "no message"
            // Class 08 connection exception, 57P01-03 admin/crash shutdown and cannot connect now, 53 insufficient
            // resources, 40 rollbacks we gave up retrying: the database is (temporarily) not there for us.
            if state.hasPrefix("08") || state.hasPrefix("57P") || state.hasPrefix("53") || retryableStates.contains(state) {
                return SettlementError(.unavailable, "\(what): PostgreSQL is unavailable (SQLSTATE \(state): \(message)): retry the request")
            }
            if state == "23505" {
                return SettlementError(.conflict, "\(what): already exists (SQLSTATE 23505: \(message))")
            }
            return SettlementError(.storage, "\(what): PostgreSQL refused a statement (SQLSTATE \(state): \(message)): see the service log")
        case .connectionError, .serverClosedConnection, .clientClosedConnection, .uncleanShutdown, .poolClosed,
             .queryCancelled:
            return SettlementError(.unavailable, "\(what): the connection to PostgreSQL failed (\(error.code)): retry the request when it is back")
        default:
            return SettlementError(.storage, "\(what): PostgreSQL client error (\(error.code)): see the service log")
        }
    }
}

/// Thrown inside a transaction when a concurrent writer got there first (e.g. a record key inserted between our check
/// and our insert): the transaction rolls back and runs again from the start.
struct RetryTransaction: Error {}
