import CampusCard
import Foundation
import GRDB
import SettlementCore
@testable import SettlementSQLite
import Testing

/// What only the SQLite backend promises (the conformance suite covers the contract).
@Suite struct SQLiteStoreTests {
    func temporaryPath() throws -> (directory: URL, path: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("settle-sqlite-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return (directory, directory.appendingPathComponent("settlement.sqlite").path)
    }

    @Test func theWriterRunsWALWithSynchronousFull() async throws {
        let (directory, path) = try temporaryPath()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try SQLiteSettlementStore(path: path)
        let pragmas = try await store.writerPragmas()
        #expect(pragmas.journalMode == "wal" && pragmas.synchronous == 2)
        // It holds the terminals' secrets: the file and its WAL are the owner's alone, whatever the umask.
        try await store.putTerminal(TerminalInfo(id: 5, merchant: "m", secret: Array(repeating: 7, count: 32)))
        for file in [path, path + "-wal"] {
            let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int
            #expect(mode == 0o600, "\(file): \(String(mode ?? 0, radix: 8))")
        }
        try store.close()
    }

    /// An upload that conflicts looks earlier content-conflict flags up by key (the partial index), not by scanning
    /// every flag ever raised.
    @Test func theConflictLookupUsesItsIndex() async throws {
        let (directory, path) = try temporaryPath()
        defer { try? FileManager.default.removeItem(at: directory) }
        try SQLiteSettlementStore(path: path).close()
        let queue = try DatabaseQueue(path: path)
        defer { try? queue.close() }
        let plan = try await queue.read { db in
            try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + IngestBatch.conflictLookup, arguments: [5, 1, "m"]).map { $0["detail"] as String }
        }
        #expect(plan.contains { $0.contains("USING INDEX flags_conflicts") }, "\(plan)")
    }

    /// The books and stored keys are looked up through `json_each` over one JSON array: whatever the text, SQLite
    /// reads back exactly the strings that went in (quotes, backslashes, control characters, non-ASCII).
    @Test func theLookupArraysReadBackEveryStringAsWritten() throws {
        let texts = ["04A1B2C3", "", "say \"hi\"", #"back\slash"#, "tab\tand\nnewline\u{01}", "一卡通", "end"]
        let queue = try DatabaseQueue()
        let read = try queue.read { db in
            try String.fetchAll(db, sql: "SELECT value FROM json_each(?) ORDER BY key", arguments: [SQLiteSettlementStore.jsonArray(of: texts)])
        }
        #expect(read == texts)
    }

    /// A store written by the first schema (two ledger rows per movement) keeps its statements and ledger entries
    /// when the second turns its ledger into one row per movement; new movements are numbered after the old ones.
    @Test func theTwoRowLedgerBecomesOneRowPerMovementWithNothingLost() async throws {
        let (directory, path) = try temporaryPath()
        defer { try? FileManager.default.removeItem(at: directory) }
        let entries = "SELECT movement_id, account, amount, kind, terminal_id, seq, booked_at, card_serial FROM ledger ORDER BY id"
        let before: [Row]
        do {
            let queue = try DatabaseQueue(path: path)
            try Schema.migrator.migrate(queue, upTo: "v1")
            before = try queue.write { db in
                try db.execute(sql: """
                    INSERT INTO ledger (id, movement_id, account, amount, kind, terminal_id, seq, booked_at, card_serial) VALUES
                        (1, 1, 'purse:1001', -500, 'purse-debit', 7, 1, 1750000000, 1001),
                        (2, 1, 'merchant:canteen-1', 500, 'purse-debit', 7, 1, 1750000000, NULL),
                        (3, 3, 'account:1', -2000, 'online-load', NULL, NULL, 1750003600, NULL),
                        (4, 3, 'purse:1001', 2000, 'online-load', NULL, NULL, 1750003600, 1001),
                        (5, 5, 'cash', -300, 'cash-load', 7, 2, 1750007200, NULL),
                        (6, 5, 'pending-load', 300, 'cash-load', 7, 2, 1750007200, NULL);
                    INSERT INTO terminals (id, merchant, secret, enabled) VALUES (7, 'canteen-1', zeroblob(32), 1)
                    """)
                return try Row.fetchAll(db, sql: entries)
            }
            try queue.close()
        }
        let store = try SQLiteSettlementStore(path: path)
        #expect(try await store.ledgerImbalance() == 0)
        // v4's roles: an existing terminal is kept, and is no load station until an operator makes it one.
        #expect(try await store.terminal(7) == TerminalInfo(id: 7, merchant: "canteen-1", secret: Array(repeating: 0, count: 32), loads: false))
        let statement = try await store.statement(cardSerial: 1001)
        #expect(statement.map(\.movementID) == [1, 3])
        #expect(statement.map(\.account) == ["purse:1001", "purse:1001"])
        #expect(statement.map(\.amount) == [-500, 2000])
        #expect(statement.map(\.terminalSequence) == [1, nil])
        #expect(statement.map(\.bookedAt) == [Date(timeIntervalSince1970: 1_750_000_000), Date(timeIntervalSince1970: 1_750_003_600)])
        #expect(try await store.rowCounts()["movements"] == 3)
        try store.close()
        let queue = try DatabaseQueue(path: path)
        defer { try? queue.close() }
        #expect(try queue.read { db in try Row.fetchAll(db, sql: entries) } == before)
        let next = try await queue.write { db in
            try db.execute(sql: "INSERT INTO movements (debit, credit, amount, kind, booked_at) VALUES ('cash', 'subsidy', 1, 'test', 0)")
            return db.lastInsertedRowID
        }
        #expect(next == 6)
    }

    @Test func aReopenedStoreKeepsItsLedgerAndCardBooks() async throws {
        let (directory, path) = try temporaryPath()
        defer { try? FileManager.default.removeItem(at: directory) }
        let t0 = Date(timeIntervalSince1970: 1_750_000_000)
        do {
            let store = try SQLiteSettlementStore(path: path)
            try await store.putTerminal(TerminalInfo(id: 3, merchant: "canteen", secret: Array(repeating: 1, count: 32)))
            let account = try await store.openAccount(name: "Li Lei", initialBalance: 100, at: t0)
            _ = try await store.issueCard(serial: 1001, uid: "A1B2C3D4", accountID: account.id, at: t0)
            let torn = TerminalRecord(terminalID: 3, terminalSequence: 1, kind: .purseDebit, cardUID: "A1B2C3D4", cardSerial: nil, amount: 300,
                                      balanceBefore: 5000, counterBefore: 7, outcome: .undetermined, createdAt: t0)
            #expect(try await store.ingest([torn], from: 3, at: t0).map(\.booking) == [.pending])
            try store.close()
        }
        // Migrations run once; the pending record survives in its card's book and is decided after the reopen.
        let store = try SQLiteSettlementStore(path: path)
        let next = TerminalRecord(terminalID: 3, terminalSequence: 2, kind: .purseDebit, cardUID: "A1B2C3D4", cardSerial: nil, amount: 100,
                                  balanceBefore: 4700, counterBefore: 8, outcome: .done, balanceAfter: 4600, counterAfter: 9, createdAt: t0)
        #expect(try await store.ingest([next], from: 3, at: t0).map(\.booking) == [.booked])
        #expect(try await store.statement(cardSerial: 1001).map(\.amount) == [-300, -100])
        #expect(try await store.ledgerImbalance() == .zero)
        try store.close()
    }

    @Test func anOnlineLoadsHoldSitsInPendingLoadUntilConfirmedOrReversed() async throws {
        let (directory, path) = try temporaryPath()
        defer { try? FileManager.default.removeItem(at: directory) }
        let t0 = Date(timeIntervalSince1970: 1_750_000_000)
        let store = try SQLiteSettlementStore(path: path)
        try await store.putTerminal(TerminalInfo(id: 4, merchant: "office", secret: Array(repeating: 2, count: 32), loads: true))
        let account = try await store.openAccount(name: "Li Lei", initialBalance: 10_000, at: t0)
        _ = try await store.issueCard(serial: 1001, uid: "A1B2C3D4", accountID: account.id, at: t0)
        let holder = "account:\(account.id)"
        _ = try await store.prepareLoad(reference: "L-1", terminal: 4, cardSerial: 1001, amount: 2000, balanceBefore: 5000, counterBefore: 10, at: t0)
        // A second load at the same card counter is refused while the first stands (a counter carries one load).
        await #expect(throws: SettlementError.self) {
            _ = try await store.prepareLoad(reference: "L-2", terminal: 4, cardSerial: 1001, amount: 500, balanceBefore: 5000, counterBefore: 10, at: t0)
        }
        _ = try await store.prepareLoad(reference: "L-2", terminal: 4, cardSerial: 1001, amount: 500, balanceBefore: 7000, counterBefore: 11, at: t0)
        // Held: out of the holder's account, not yet on the card nor in cash.
        #expect(try sqliteLedgerBalances(path) == ["cash": -10_000, holder: 7500, "pending-load": 2500])
        _ = try await store.confirmLoad(reference: "L-1", balanceAfter: 7000, counterAfter: 11, at: t0)
        _ = try await store.reverseLoad(reference: "L-2", at: t0)
        #expect(try sqliteLedgerBalances(path) == ["cash": -10_000, holder: 8000, "pending-load": 0, "purse:1001": 2000])
        // The station's uploaded record books the next load before its confirmation arrives: the confirmation then
        // takes the hold to cash (which paid the purse), never to the purse a second time.
        _ = try await store.prepareLoad(reference: "L-3", terminal: 4, cardSerial: 1001, amount: 500, balanceBefore: 7000, counterBefore: 11, at: t0)
        #expect(try await store.ingest([record(.purseLoad, 500, before: 7000, counter: 11, sequence: 1, terminal: 4)], from: 4, at: t0)
            .map(\.booking) == [.booked])
        _ = try await store.confirmLoad(reference: "L-3", balanceAfter: 7500, counterAfter: 12, at: t0)
        #expect(try sqliteLedgerBalances(path) == ["cash": -10_000, holder: 7500, "pending-load": 0, "purse:1001": 2500])
        #expect(try await store.ledgerImbalance() == .zero)
        try store.close()
    }

    @Test func aStoreFromANewerVersionIsRefused() async throws {
        let (directory, path) = try temporaryPath()
        defer { try? FileManager.default.removeItem(at: directory) }
        try SQLiteSettlementStore(path: path).close()
        let queue = try DatabaseQueue(path: path)
        try await queue.write { try $0.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99')") }
        try queue.close()
        #expect {
            _ = try SQLiteSettlementStore(path: path)
        } throws: { error in
            (error as? SettlementError)?.code == .storage && "\(error)".contains("newer version")
        }
    }
}
