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
        let pool = try await openPlain(plainPath)
        defer { try? pool.close() }
        // The records table's columns and key, nothing else.
        try await pool.write { db in try db.execute(sql: Self.recordsTable) }
        let received = Date().timeIntervalSince1970
        return try await measureLanes(lanes) { batch in
            try await pool.write { db in try Self.insertRecords(batch, received: received, db) }
        }
    }

    /// The store's records table (columns and key).
    static let recordsTable = """
        CREATE TABLE records (
            terminal_id INTEGER NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, card_uid TEXT NOT NULL, card_serial INTEGER,
            amount INTEGER NOT NULL, balance_before INTEGER NOT NULL, counter_before INTEGER NOT NULL, consumption INTEGER,
            reference_before INTEGER, settlement_reference INTEGER, outcome TEXT NOT NULL, balance_after INTEGER,
            counter_after INTEGER, created_at REAL NOT NULL, digest TEXT NOT NULL, booking TEXT NOT NULL, flags TEXT NOT NULL,
            received_at REAL NOT NULL, decided TEXT, PRIMARY KEY (terminal_id, seq)
        ) WITHOUT ROWID
        """

    /// The batch's records, by the store's multi-row statements.
    static func insertRecords(_ batch: [BenchRow], received: Double, _ db: Database) throws {
        var values: [DatabaseValue] = []
        values.reserveCapacity(batch.count * 19)
        for row in batch { append(row, received: received, into: &values) }
        try BulkStatement.insert(db, "INSERT INTO records (terminal_id, seq, kind, card_uid, card_serial, amount, balance_before, counter_before, consumption, reference_before, settlement_reference, outcome, balance_after, counter_after, created_at, digest, booking, flags, received_at) VALUES ",
                                 columns: 19, values: values)
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

    var rowsPath: String { path + "-rows" }

    /// Opens `path` afresh as the store opens its file (WAL, synchronous=FULL, the store's wal_autocheckpoint).
    func openPlain(_ path: String) async throws -> DatabasePool {
        remove(path)
        let pool = try DatabasePool(path: path)
        let synchronous = try await pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA wal_autocheckpoint = \(SQLiteSettlementStore.walAutocheckpointPages)")
            return try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1
        }
        guard synchronous == 2 else { throw SettlementError(.storage, "the plain database did not accept synchronous=FULL") }
        return pool
    }

    func ledgerRowsInsert(_ lanes: [[[BenchRow]]]) async throws -> Duration {
        let pool = try await openPlain(rowsPath)
        defer { try? pool.close() }
        // The store's records, movements and card books, as its migrations leave them.
        let uids = Array(Set(lanes.joined().joined().map(\.record.cardUID))).sorted()
        let book = Data(BenchRow.typicalBook)
        try await pool.write { db in
            try db.execute(sql: Self.recordsTable)
            try db.execute(sql: """
                CREATE TABLE movements (
                    id INTEGER PRIMARY KEY, debit TEXT NOT NULL, credit TEXT NOT NULL, amount INTEGER NOT NULL, kind TEXT NOT NULL,
                    terminal_id INTEGER, seq INTEGER, booked_at REAL NOT NULL, card_serial INTEGER, card_side INTEGER);
                CREATE INDEX movements_card ON movements(card_serial) WHERE card_serial IS NOT NULL;
                CREATE TABLE card_books (uid TEXT PRIMARY KEY, purse_mirror INTEGER NOT NULL, purse_counter INTEGER, book BLOB NOT NULL) WITHOUT ROWID;
                """)
            for uid in uids {
                try db.execute(sql: "INSERT INTO card_books VALUES (?, 0, NULL, ?)", arguments: [uid, book])
            }
        }
        let received = Date().timeIntervalSince1970
        return try await measureLanes(lanes) { batch in
            try await pool.write { db in
                try Self.insertRecords(batch, received: received, db)
                var values: [DatabaseValue] = []
                values.reserveCapacity(batch.count * 9)
                for row in batch {
                    let r = row.record
                    values += [row.debit.databaseValue, row.credit.databaseValue, Int64(r.amount.rawValue).databaseValue,
                               r.kind.rawValue.databaseValue, Int64(r.terminalID.rawValue).databaseValue,
                               Int64(r.terminalSequence).databaseValue, received.databaseValue,
                               Int64(r.cardSerial ?? 0).databaseValue, (row.isSale ? 0 : 1).databaseValue]
                }
                try BulkStatement.insert(db, "INSERT INTO movements (debit, credit, amount, kind, terminal_id, seq, booked_at, card_serial, card_side) VALUES ",
                                         columns: 9, values: values)
                values.removeAll(keepingCapacity: true)
                for uid in Set(batch.map(\.record.cardUID)) {
                    values += [uid.databaseValue, 1.databaseValue, DatabaseValue.null, book.databaseValue]
                }
                try BulkStatement.insert(db, "INSERT INTO card_books (uid, purse_mirror, purse_counter, book) VALUES ", columns: 4,
                                         tail: " ON CONFLICT (uid) DO UPDATE SET purse_mirror = excluded.purse_mirror, purse_counter = excluded.purse_counter, book = excluded.book",
                                         values: values)
            }
        }
    }

    func cleanup() async throws {
        remove(plainPath)
        remove(rowsPath)
    }
}
