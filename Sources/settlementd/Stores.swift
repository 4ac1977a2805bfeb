import Foundation
import Logging
import ServiceLifecycle
import SettlementCore
import SettlementPostgres
import SettlementSQLite

/// The store settlementd runs on, with the services it needs running (a PostgreSQL client's pool).
struct OpenedStore {
    var store: any SettlementStore
    var services: [any Service]
    var description: String
    /// Runs once the services started, before the server accepts requests (migrations).
    var prepare: (@Sendable () async throws -> Void)?

    static func open(db: String?, postgres: String?, requestTimeout: Duration, logger: Logger) async throws -> OpenedStore {
        if let postgres {
            let store = try PostgresSettlementStore(url: postgres, requestTimeout: requestTimeout, logger: logger)
            return OpenedStore(store: store, services: [store], description: "PostgreSQL \(redacted(postgres))",
                               prepare: { try await store.migrate() })
        }
        let path = db ?? "/var/lib/onecard/settlement.sqlite"
        let store = try SQLiteSettlementStore(path: path)
        return OpenedStore(store: store, services: [], description: "SQLite \(path)", prepare: nil)
    }

    /// The URL without its password (the description is printed and logged).
    static func redacted(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.password != nil else { return url }
        components.password = "***"
        return components.string ?? "postgres://…"
    }
}
