import Foundation
import SettlementCore
import SettlementSQLite
import Testing

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
    static var all: [Backend] { [sqlite] }

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
}
