import Foundation
import Logging
import ServiceLifecycle
import SettlementCore
import SettlementSQLite

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
        guard let db else { throw SettlementError(.badRequest, "give --db PATH or --postgres URL") }
        let store = try SQLiteSettlementStore(path: db)
        return OpenedStore(store: store, services: [], description: "SQLite \(db)")
    }
}
