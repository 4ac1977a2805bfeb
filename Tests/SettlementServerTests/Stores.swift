import Foundation
import SettlementCore
import SettlementSQLite

/// The store the HTTP tests run on: the real SQLite store, in a fresh temporary database.
func makeTestStore() async throws -> any SettlementStore {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("settle-server-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    return try SQLiteSettlementStore(path: directory.appendingPathComponent("settlement.sqlite").path)
}
