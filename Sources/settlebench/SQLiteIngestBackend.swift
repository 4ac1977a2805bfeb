import CampusCard
import Foundation
import GRDB
import SettlementCore
import SettlementSQLite

/// The SQLite side: the store at PATH; the plain table in PATH-plain, opened the same way (WAL, synchronous=FULL, the
/// store's wal_autocheckpoint).
struct SQLiteIngestBackend: IngestBackend {
    var path: String
    var name: String { "SQLite (WAL, synchronous=FULL)" }
    var plainPath: String { path + "-plain" }

    func remove(_ base: String) {
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: base + suffix) }
    }

    func makeStore(connections: Int) async throws -> any SettlementStore {
        remove(path)
        return try SQLiteSettlementStore(path: path)
    }

    func plainInsert(_ lanes: [[[BenchRow]]]) async throws -> Duration {
        remove(plainPath)
        let pool = try DatabasePool(path: plainPath)
        defer { try? pool.close() }
        let synchronous = try await pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA wal_autocheckpoint = \(SQLiteSettlementStore.walAutocheckpointPages)")
            return try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1
        }
        guard synchronous == 2 else { throw SettlementError(.storage, "the plain database did not accept synchronous=FULL") }
        // The records table's columns and key, nothing else.
        try await pool.write { db in
            try db.execute(sql: """
                CREATE TABLE plain_records (
                    terminal_id INTEGER NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, card_uid TEXT NOT NULL, card_serial INTEGER,
                    amount INTEGER NOT NULL, balance_before INTEGER NOT NULL, counter_before INTEGER NOT NULL, consumption INTEGER,
                    reference_before INTEGER, settlement_reference INTEGER, outcome TEXT NOT NULL, balance_after INTEGER,
                    counter_after INTEGER, created_at REAL NOT NULL, digest TEXT NOT NULL, booking TEXT NOT NULL, flags TEXT NOT NULL,
                    received_at REAL NOT NULL, decided TEXT, PRIMARY KEY (terminal_id, seq)
                ) WITHOUT ROWID
                """)
        }
        let received = Date().timeIntervalSince1970
        return try await measureLanes(lanes) { batch in
            try await pool.write { db in
                // At most 500 rows a statement, as the store writes them (SQLite's bound-parameter limit).
                for start in stride(from: 0, to: batch.count, by: 500) {
                    let chunk = batch[start..<min(start + 500, batch.count)]
                    var values: [DatabaseValue] = []
                    values.reserveCapacity(chunk.count * 19)
                    for row in chunk { Self.append(row, received: received, into: &values) }
                    let sql = "INSERT INTO plain_records (terminal_id, seq, kind, card_uid, card_serial, amount, balance_before, counter_before, consumption, reference_before, settlement_reference, outcome, balance_after, counter_after, created_at, digest, booking, flags, received_at) VALUES "
                        + repeatElement("(" + databaseQuestionMarks(count: 19) + ")", count: chunk.count).joined(separator: ",")
                    let statement = try db.cachedStatement(sql: sql)
                    try BulkStatement.execute(statement, values)
                }
            }
        }
    }

    static func append(_ row: BenchRow, received: Double, into values: inout [DatabaseValue]) {
        let r = row.record
        values.append(Int64(r.terminalID.rawValue).databaseValue)
        values.append(Int64(r.terminalSequence).databaseValue)
        values.append(r.kind.rawValue.databaseValue)
        values.append(r.cardUID.databaseValue)
        values.append(r.cardSerial.map { Int64($0).databaseValue } ?? .null)
        values.append(Int64(r.amount.rawValue).databaseValue)
        values.append(Int64(r.balanceBefore.rawValue).databaseValue)
        values.append(Int64(r.counterBefore).databaseValue)
        values.append(r.consumption.map { Int64($0.rawValue).databaseValue } ?? .null)
        values.append(r.referenceBefore.map { Int64($0).databaseValue } ?? .null)
        values.append(r.settlementReference.map { Int64($0).databaseValue } ?? .null)
        values.append(r.outcome.rawValue.databaseValue)
        values.append(r.balanceAfter.map { Int64($0.rawValue).databaseValue } ?? .null)
        values.append(r.counterAfter.map { Int64($0).databaseValue } ?? .null)
        values.append(r.createdAt.timeIntervalSince1970.databaseValue)
        values.append(row.digest.databaseValue)
        values.append("booked".databaseValue)
        values.append("".databaseValue)
        values.append(received.databaseValue)
    }

    func cleanup() async throws {
        remove(plainPath)
    }
}
