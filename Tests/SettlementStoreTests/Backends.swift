import Foundation
import SettlementCore
import Logging
import SettlementPostgres
import SettlementSQLite
import Testing
import TestSupport

/// A store the suite runs against, fresh and empty, with what removes it afterwards.
struct StoreUnderTest: Sendable {
    var store: any SettlementStore
    var cleanup: @Sendable () async throws -> Void
}

/// One storage backend of the conformance suite. Add a backend by appending to `Backends.all`; nothing in the suite
/// may assume which backend it runs on.
struct Backend: Sendable, CustomTestStringConvertible {
    var name: String
    /// A fresh, empty store.
    var make: @Sendable () async throws -> StoreUnderTest

    var testDescription: String { name }
}

enum Backends {
    /// Every backend the suite runs against.
    static var all: [Backend] { [sqlite, postgres] }

    /// A temporary SQLite file per test.
    static let sqlite = Backend(name: "SQLite") {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("settle-store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let store = try SQLiteSettlementStore(path: directory.appendingPathComponent("settlement.sqlite").path)
        return StoreUnderTest(store: store) {
            try? store.close()
            try FileManager.default.removeItem(at: directory)
        }
    }

    /// A fresh database per test on the test process's own PostgreSQL cluster (scripts/postgres, started on first
    /// use); the store's pool runs from `start()` to `shutdown()`.
    static let postgres = Backend(name: "PostgreSQL") {
        let url = try PostgresServer.shared().createDatabase(prefix: "conformance")
        let store = try PostgresSettlementStore(url: url, maximumConnections: 4,
                                                logger: Logger(label: "conformance", factory: { _ in SwiftLogNoOpLogHandler() }))
        try await store.start()
        return StoreUnderTest(store: store) {
            await store.shutdown()
        }
    }
}
