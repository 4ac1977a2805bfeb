import Foundation
import GRDB
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
    /// The ledger's balance per account, read from the database itself (the store's API shows only the holders'
    /// accounts): where a hold or a suspense booking sits.
    var balances: @Sendable () async throws -> [String: Int]
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
        let path = directory.appendingPathComponent("settlement.sqlite").path
        let store = try SQLiteSettlementStore(path: path)
        return StoreUnderTest(store: store, cleanup: {
            try? store.close()
            try FileManager.default.removeItem(at: directory)
        }, balances: {
            try await onThread { try sqliteLedgerBalances(path) }
        })
    }

    /// A fresh database per test on the test process's own PostgreSQL cluster (scripts/postgres, started on first
    /// use); the store's pool runs from `start()` to `shutdown()`.
    static let postgres = Backend(name: "PostgreSQL") {
        let url = try PostgresServer.shared().createDatabase(prefix: "conformance")
        let store = try PostgresSettlementStore(url: url, maximumConnections: 4,
                                                logger: Logger(label: "conformance", factory: { _ in SwiftLogNoOpLogHandler() }))
        try await store.start()
        let database = String(url.split(separator: "/").last ?? "")
        return StoreUnderTest(store: store, cleanup: {
            await store.shutdown()
        }, balances: {
            let lines = try await onThread {
                try PostgresServer.shared().psql("SELECT account || '=' || SUM(amount) FROM ledger GROUP BY account", database: database)
            }
            var balances: [String: Int] = [:]
            for line in lines.split(separator: "\n") {
                guard let equals = line.lastIndex(of: "="), let amount = Int(line[line.index(after: equals)...]) else { continue }
                balances[String(line[..<equals])] = amount
            }
            return balances
        })
    }
}

/// Every account's balance in an SQLite store's ledger, read from the file (the store's API shows holder accounts only).
func sqliteLedgerBalances(_ path: String) throws -> [String: Int] {
    var configuration = Configuration()
    configuration.readonly = true
    let queue = try DatabaseQueue(path: path, configuration: configuration)
    defer { try? queue.close() }
    return try queue.read { db in
        var balances: [String: Int] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT account, SUM(amount) AS balance FROM ledger GROUP BY account") {
            balances[row["account"]] = row["balance"]
        }
        return balances
    }
}
