import Foundation
import Logging
import ServiceLifecycle
import SettlementCore

/// The store settlementd runs on, with the services it needs running (a PostgreSQL client's pool).
struct OpenedStore {
    var store: any SettlementStore
    var services: [any Service]
    var description: String
    /// Runs once the services started, before the server accepts requests (migrations).
    var prepare: (@Sendable () async throws -> Void)?

    static func open(db: String?, postgres: String?, logger: Logger) async throws -> OpenedStore {
        if postgres != nil {
            throw SettlementError(.unavailable, "--postgres: this build has no PostgreSQL store yet (Sources/SettlementPostgres is on branch settle-pg): use --db PATH")
        }
        throw SettlementError(.unavailable, "--db: this build has no SQLite store yet (Sources/SettlementSQLite is on branch settle-store)")
    }
}
