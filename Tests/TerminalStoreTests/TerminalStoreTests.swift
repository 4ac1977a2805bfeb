import CampusCard
import Foundation
import GRDB
import Testing
@testable import TerminalStore

@Suite struct TerminalStoreTests {
    /// GRDB's pool leaves its writer at NORMAL; the store sets FULL after opening, and it holds after writes.
    @Test func fullSynchronousHoldsOnTheWriterAfterWrites() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        // The control: a plain pool on the same kind of file is NORMAL (1), so the check below can fail.
        let plain = try DatabasePool(path: directory.path + "/plain.sqlite")
        #expect(try plain.writeWithoutTransaction { try Int.fetchOne($0, sql: "PRAGMA synchronous") } == 1)
        try plain.close()

        let store = try TerminalStore(path: directory.store)
        for _ in 0..<20 {
            let sequence = try store.nextSequence()
            try store.record(intent(sequence))
            try store.complete(terminalSequence: sequence, outcome: .notDone)
        }
        let pragmas = try store.writerPragmas()
        #expect(pragmas.journalMode == "wal")
        #expect(pragmas.synchronous == 2)
        #expect(try store.pool.writeWithoutTransaction { try Bool.fetchOne($0, sql: "PRAGMA foreign_keys") } == true)
    }

    /// cardd's resident memory grew with its journal through SQLite's default 2,000 KiB cache per connection: every
    /// connection of the pool, the writer and the readers, gets the bounded cache.
    @Test func everyConnectionHasTheBoundedPageCache() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try TerminalStore(path: directory.store, options: .init(pageCacheKiB: 300))
        #expect(try store.pool.writeWithoutTransaction { try Int.fetchOne($0, sql: "PRAGMA cache_size") } == -300)
        #expect(try store.pool.read { try Int.fetchOne($0, sql: "PRAGMA cache_size") } == -300)
        #expect(store.pool.configuration.maximumReaderCount == 2)
        let defaults = try TerminalStore(path: directory.path + "/defaults.sqlite")
        #expect(try defaults.pool.read { try Int.fetchOne($0, sql: "PRAGMA cache_size") } == -256)
    }

    @Test func reopeningKeepsEntriesOutcomesQueueAndTheSequence() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let clock = TestClock()
        do {
            let store = try TerminalStore(path: directory.store, clock: { clock.now })
            for uid in ["01020304", "AABBCCDD", "01020304"] {
                try store.record(intent(try store.nextSequence(), uid: uid))
            }
            try store.complete(terminalSequence: 1, outcome: .done(balanceAfter: 9_650, counterAfter: 6))
            try store.complete(terminalSequence: 2, outcome: .undetermined)
            try store.markSent([1])
            try store.close()
        }
        let store = try TerminalStore(path: directory.store)
        let entries = try store.entries()
        #expect(entries.map(\.intent.terminalSequence) == [1, 2, 3])
        #expect(entries.map(\.intent) == [intent(1), intent(2, uid: "AABBCCDD"), intent(3)])
        #expect(entries.map(\.outcome) == [.done(balanceAfter: 9_650, counterAfter: 6), .undetermined, nil])
        #expect(entries.map(\.upload) == [.sent, .queued, .open])
        #expect(entries[0].decidedAt == clock.now && entries[0].sentAt == clock.now)
        #expect(try store.openIntents(cardUID: "01020304").map(\.terminalSequence) == [3])
        #expect(try store.lastSeenCounter(cardUID: "01020304") == 6)
        #expect(try store.nextSequence() == 4)
    }

    @Test func recordingAboveTheCounterRaisesIt() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try TerminalStore(path: directory.store)
        try store.record(intent(100))
        #expect(try store.nextSequence() == 101)
        try store.record(intent(50))  // a lower unused sequence may be recorded, but the counter does not go back
        #expect(try store.nextSequence() == 102)
    }

    @Test func openIntentsComeInSequenceOrderAndCompletingAnUnknownSequenceThrows() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try TerminalStore(path: directory.store)
        for sequence: UInt32 in [9, 3, 5] { try store.record(intent(sequence)) }
        #expect(try store.openIntents(cardUID: "01020304").map(\.terminalSequence) == [3, 5, 9])
        #expect(throwsStoreError(.unknownSequence) { try store.complete(terminalSequence: 4, outcome: .notDone) })
        #expect(throwsStoreError(.conflictingOutcome) {
            try store.complete(terminalSequence: 3, outcome: .notDone)
            try store.complete(terminalSequence: 3, outcome: .undetermined)
        })
    }

    /// The highest purse counter of a done outcome; water outcomes (their own counter) and other cards do not count;
    /// it survives pruning.
    @Test func lastSeenCounterIsTheHighestDonePurseCounter() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try TerminalStore(path: directory.store)
        #expect(try store.lastSeenCounter(cardUID: "01020304") == nil)
        try store.record(intent(1))
        try store.record(intent(2))
        try store.record(intent(3, kind: .waterDebit))
        try store.record(intent(4, uid: "AABBCCDD"))
        try store.complete(terminalSequence: 2, outcome: .done(balanceAfter: 9_300, counterAfter: 8))
        try store.complete(terminalSequence: 1, outcome: .done(balanceAfter: 9_650, counterAfter: 7))
        try store.complete(terminalSequence: 3, outcome: .done(balanceAfter: 100, counterAfter: 900))
        try store.complete(terminalSequence: 4, outcome: .done(balanceAfter: 100, counterAfter: 40))
        #expect(try store.lastSeenCounter(cardUID: "01020304") == 8)
        try store.markAcknowledged([1, 2, 3, 4])
        #expect(try store.prune(acknowledgedBefore: Date.distantFuture) == 4)
        #expect(try store.lastSeenCounter(cardUID: "01020304") == 8)
        #expect(try store.lastSeenCounter(cardUID: "AABBCCDD") == 40)
    }

    /// Every statement of a tap and of the queue is an index search or a lookup by key: none scans the journal, so
    /// their cost does not grow with its size (the benchmark measures it; this pins the plans).
    @Test func tapStatementsSearchIndexesAndNeverScanTheJournal() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try TerminalStore(path: directory.store)
        _ = try store.importEntries((1...500).map { (intent(UInt32($0), uid: String(format: "%08X", $0 % 50)), $0 % 10 == 0 ? nil : .notDone) })
        try store.pool.writeWithoutTransaction { try $0.execute(sql: "ANALYZE") }  // plans as they are with statistics
        for statement in TapSQL.all {
            let plan = try store.pool.read { db in
                try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + statement.sql, arguments: StatementArguments(statement.arguments.map { $0 ?? 0 })).map { $0["detail"] as String }
            }
            // An in-order walk of the partial queue index, which holds only pending entries and stops at the LIMIT, is
            // the one scan allowed.
            let scans = plan.filter { $0.hasPrefix("SCAN") && !$0.contains("CONSTANT ROW") && !($0 == "SCAN journalEntry USING INDEX journalEntryPending" && statement.sql.contains("LIMIT")) }
            #expect(scans.isEmpty, "\(statement.name): \(plan)")
            #expect(!plan.contains { $0.contains("USE TEMP B-TREE") }, "\(statement.name) sorts: \(plan)")
        }
    }

    @Test func checkReportsAHealthyStoreAndItsCounts() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try TerminalStore(path: directory.store)
        for sequence: UInt32 in 1...4 { try store.record(intent(sequence)) }
        try store.complete(terminalSequence: 1, outcome: .done(balanceAfter: 9_650, counterAfter: 6))
        try store.complete(terminalSequence: 2, outcome: .notDone)
        try store.complete(terminalSequence: 3, outcome: .notDone)
        try store.markSent([2, 3])
        try store.markAcknowledged([3])
        try store.applyBlacklist([BlacklistChange(serial: 5, uid: nil, action: .add)], version: 1)
        let check = try store.check()
        #expect(check.isHealthy, "\(check.problems)")
        #expect(check.integrity == ["ok"] && check.schemaVersion == "v2" && check.synchronous == 2 && check.journalMode == "wal")
        #expect(check.counts.entries == 4 && check.counts.open == 1 && check.counts.queued == 1 && check.counts.sent == 1 && check.counts.acknowledged == 1)
        #expect(check.counts.blacklisted == 1 && check.sequenceCounter == 4 && check.highestSequence == 4)
    }

    /// The invariants `check` promises, broken by hand (as a bad migration or manual edit would): each is reported.
    @Test func checkFindsBrokenInvariants() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try TerminalStore(path: directory.store)
        try store.record(intent(1))
        try store.record(intent(2))
        try store.complete(terminalSequence: 1, outcome: .done(balanceAfter: 9_650, counterAfter: 6))
        try store.pool.write { db in
            try db.execute(sql: "UPDATE sequenceCounter SET lastIssued = 1")
            try db.execute(sql: "UPDATE queueTotals SET unacknowledgedDebitFen = 1")
            try db.execute(sql: "PRAGMA ignore_check_constraints = ON")
            try db.execute(sql: "UPDATE journalEntry SET upload = 'acknowledged', acknowledgedAt = 1 WHERE sequence = 2")
            try db.execute(sql: "PRAGMA ignore_check_constraints = OFF")
        }
        let problems = try store.check().problems.joined(separator: "\n")
        #expect(problems.contains("without a decided outcome"))
        #expect(problems.contains("sequence counter 1 is below the highest recorded sequence 2"))
        #expect(problems.contains("unacknowledgedDebitFen"))
    }

    @Test func theSchemaRefusesAnAcknowledgedEntryWithoutAnOutcome() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try TerminalStore(path: directory.store)
        try store.record(intent(1))
        #expect(throws: DatabaseError.self) {
            try store.pool.write { try $0.execute(sql: "UPDATE journalEntry SET upload = 'acknowledged', acknowledgedAt = 1 WHERE sequence = 1") }
        }
        #expect(throwsStoreError(.notInQueue) { try store.markAcknowledged([1]) })
    }

    @Test func aStoreFromANewerVersionIsRefused() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try TerminalStore(path: directory.store).pool.write { db in
            try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99')")
        }
        let error = storeError { _ = try TerminalStore(path: directory.store) }
        #expect(error?.code == .newerSchema)
        #expect(error?.message.contains("v99") == true)
    }

    @Test func aMissingStoreIsNotCreatedWhenAskedNotTo() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        #expect(throwsStoreError(.cannotOpen) { _ = try TerminalStore(path: directory.store, options: .init(createIfMissing: false)) })
        #expect(!FileManager.default.fileExists(atPath: directory.store))
        #expect(throwsStoreError(.cannotOpen) { _ = try TerminalStore(path: directory.path) })  // a directory
        let nested = directory.path + "/a/b/terminal.sqlite"
        _ = try TerminalStore(path: nested)
        let mode = try FileManager.default.attributesOfItem(atPath: nested)[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }
}
