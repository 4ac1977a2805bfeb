import CampusCard
import Foundation
import Testing
@testable import TerminalStore

@Suite struct UploadQueueTests {
    @Test func decidedEntriesMoveFromQueuedToSentToAcknowledged() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let clock = TestClock()
        let store = try TerminalStore(path: directory.store, clock: { clock.now })
        for sequence: UInt32 in 1...5 {
            try store.record(intent(sequence, kind: sequence == 5 ? .waterDebit : .purseDebit,
                                    createdAt: Date(timeIntervalSinceReferenceDate: 1_000 + Double(sequence))))
        }
        try store.complete(terminalSequence: 1, outcome: .done(balanceAfter: 9_650, counterAfter: 6))
        try store.complete(terminalSequence: 2, outcome: .notDone)
        try store.complete(terminalSequence: 3, outcome: .undetermined)
        try store.complete(terminalSequence: 5, outcome: .done(balanceAfter: 9_650, counterAfter: 6))
        #expect(try store.pendingUpload(limit: 10).map(\.intent.terminalSequence) == [1, 2, 3, 5])
        #expect(try store.queueSummary() == UploadQueueSummary(unacknowledged: 4, unacknowledgedDebits: Fen(350),
                                                          oldestUnacknowledgedAt: Date(timeIntervalSinceReferenceDate: 1_001), openIntents: 1))

        clock.advance(10)
        try store.markSent([1, 2])
        #expect(try store.pendingUpload(limit: 10).map(\.upload) == [.sent, .sent, .queued, .queued])
        #expect(try store.transaction(sequence: 1)?.sentAt == clock.now)
        // An open or unknown entry is not in the queue: refused, and nothing of the batch changes.
        #expect(throwsStoreError(.notInQueue) { try store.markSent([3, 4]) })
        #expect(throwsStoreError(.notInQueue) { try store.markAcknowledged([3, 99]) })
        #expect(try store.transaction(sequence: 3)?.upload == .queued)

        try store.markAcknowledged([1])
        #expect(try store.transaction(sequence: 1)?.acknowledgedAt == clock.now)
        try store.markAcknowledged([1])
        try store.markSent([1])  // a late resend does not take it back
        #expect(try store.transaction(sequence: 1)?.upload == .acknowledged)
        #expect(try store.pendingUpload(limit: 10).map(\.intent.terminalSequence) == [2, 3, 5])
        #expect(try store.pendingUpload(limit: 2).map(\.intent.terminalSequence) == [2, 3])
        // The uplink's cursor: after 2, then after 3 (a record the service refuses does not hold back the rest).
        #expect(try store.pendingUpload(limit: 10, after: 2).map(\.intent.terminalSequence) == [3, 5])
        #expect(try store.pendingUpload(limit: 1, after: 3).map(\.intent.terminalSequence) == [5])
        #expect(try store.pendingUpload(limit: 10, after: 5).isEmpty)
        #expect(try store.queueSummary() == UploadQueueSummary(unacknowledged: 3, unacknowledgedDebits: .zero,
                                                          oldestUnacknowledgedAt: Date(timeIntervalSinceReferenceDate: 1_002), openIntents: 1))
        // Deciding the open one queues it; nothing but markAcknowledged acknowledges.
        try store.complete(terminalSequence: 4, outcome: .done(balanceAfter: 9_300, counterAfter: 7))
        #expect(try store.transaction(sequence: 4)?.upload == .queued)
        #expect(try store.queueSummary().unacknowledgedDebits == Fen(350))
        #expect(try store.check().isHealthy)
    }

    @Test func parametersFromTheServiceAreKeptAcrossReopening() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let clock = TestClock()
        do {
            let store = try TerminalStore(path: directory.store, clock: { clock.now })
            #expect(try store.savedParameters() == nil)
            try store.saveParameters(version: 3, json: #"{"version":3}"#)
            clock.advance(5)
            try store.saveParameters(version: 4, json: #"{"version":4}"#)
            try store.close()
        }
        let reopened = try TerminalStore(path: directory.store, clock: { clock.now })
        let saved = try #require(try reopened.savedParameters())
        #expect(saved.version == 4 && saved.json == #"{"version":4}"# && saved.receivedAt == clock.now)
        #expect(try reopened.check().schemaVersion == "v2")
    }

    @Test func pruneDeletesOnlyAcknowledgedEntriesOlderThanTheDate() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let clock = TestClock()
        let store = try TerminalStore(path: directory.store, clock: { clock.now })
        for sequence: UInt32 in 1...5 { try store.record(intent(sequence, createdAt: Date(timeIntervalSinceReferenceDate: 0))) }
        for sequence: UInt32 in 1...4 { try store.complete(terminalSequence: sequence, outcome: .notDone) }
        try store.markAcknowledged([1])
        let firstAcknowledged = clock.now
        clock.advance(100)
        try store.markSent([3])
        try store.markAcknowledged([2])
        // 3 sent, 4 queued, 5 open: all created long ago, none acknowledged.
        #expect(try store.prune(acknowledgedBefore: firstAcknowledged + 50) == 1)
        #expect(try store.entries().map(\.intent.terminalSequence) == [2, 3, 4, 5])
        #expect(try store.prune(acknowledgedBefore: .distantFuture) == 1)
        #expect(try store.entries().map(\.intent.terminalSequence) == [3, 4, 5])
        #expect(try store.entries().map(\.upload) == [.sent, .queued, .open])
        #expect(try store.nextSequence() == 6)
        #expect(try store.check().isHealthy)
    }
}

@Suite struct BlacklistTests {
    @Test func versionsApplyInOrderAndTheLatestChangeOfACardWins() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let clock = TestClock()
        let store = try TerminalStore(path: directory.store, clock: { clock.now })
        #expect(try store.blacklistStatus() == BlacklistStatus(version: 0, updatedAt: nil, count: 0))
        try store.applyBlacklist([BlacklistChange(serial: 1001, uid: "0a0b0c0d", action: .add, reason: "lost"),
                                  BlacklistChange(serial: 1002, uid: nil, action: .add, reason: "stolen")], version: 3)
        #expect(try store.blacklisted(cardUID: "0A0B0C0D", serial: nil)?.serial == 1001)
        #expect(try store.blacklisted(cardUID: "0a0b0c0d", serial: nil)?.reason == "lost")
        #expect(try store.blacklisted(cardUID: nil, serial: 1002)?.version == 3)
        #expect(try store.blacklisted(cardUID: "11223344", serial: nil) == nil)
        #expect(try store.blacklisted(cardUID: nil, serial: 1003) == nil)

        #expect(throwsStoreError(.staleBlacklist) { try store.applyBlacklist([BlacklistChange(serial: 1001, uid: nil, action: .remove)], version: 2) })
        #expect(try store.blacklisted(cardUID: "0A0B0C0D", serial: nil) != nil)
        #expect(throwsStoreError(.badInput) { try store.applyBlacklist([BlacklistChange(serial: 9, uid: "XYZ", action: .add)], version: 9) })
        #expect(try store.blacklistStatus().version == 3)

        clock.advance(60)
        // A removal by serial alone lifts the card for UID look-ups too; an add that names the UID lets a POS find it.
        try store.applyBlacklist([BlacklistChange(serial: 1001, uid: nil, action: .remove, reason: "found"),
                                  BlacklistChange(serial: 1002, uid: "04A1B2C3D4E5F6", action: .add, reason: "stolen")], version: 4)
        #expect(try store.blacklisted(cardUID: "0A0B0C0D", serial: nil) == nil)
        #expect(try store.blacklisted(cardUID: "04a1b2c3d4e5f6", serial: nil)?.serial == 1002)
        #expect(try store.blacklisted(cardUID: "04A1B2C3D4E5F6", serial: nil)?.since == clock.now)
        try store.applyBlacklist([BlacklistChange(serial: 1003, uid: nil, action: .add)], version: 4)  // the same version, in parts
        try store.applyBlacklist([BlacklistChange(serial: 1004, uid: nil, action: .add), BlacklistChange(serial: 1004, uid: nil, action: .remove),
                                  BlacklistChange(serial: 1005, uid: nil, action: .remove), BlacklistChange(serial: 1005, uid: nil, action: .add)], version: 5)
        #expect(try store.blacklisted(cardUID: nil, serial: 1004) == nil)
        #expect(try store.blacklisted(cardUID: nil, serial: 1005) != nil)
        #expect(try store.blacklistStatus() == BlacklistStatus(version: 5, updatedAt: clock.now, count: 3))
        #expect(try store.blacklistEntries().map(\.serial) == [1002, 1003, 1005])
        #expect(try store.check().counts.blacklistChanges == 9)
    }
}

@Suite struct ImportExportTests {
    /// A journal as cardctl wrote it: three intents, two outcomes, and a last line cut short by a crash.
    func legacyJournal(_ directory: TemporaryDirectory) throws -> (path: String, entries: [(intent: TransactionIntent, outcome: TransactionOutcome?)]) {
        let path = directory.path + "/cardctl-journal.jsonl"
        let journal = try FileTerminalJournal(path: path)
        try journal.record(intent(1))
        try journal.record(intent(2, uid: "AABBCCDD", kind: .waterSettle))
        try journal.complete(terminalSequence: 1, outcome: .done(balanceAfter: 9_650, counterAfter: 6))
        try journal.record(intent(3))
        try journal.complete(terminalSequence: 2, outcome: .notDone)
        let handle = try #require(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data("{\"intent\":{\"termi".utf8))
        handle.closeFile()
        return (path, try journal.entries())
    }

    @Test func importIsIdempotentKeepsOutcomesAndRaisesTheCounter() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let legacy = try legacyJournal(directory)
        let store = try TerminalStore(path: directory.store)
        let first = try store.importJSONLines(path: legacy.path)
        #expect(first.intentsAdded == 3 && first.outcomesAdded == 2 && first.alreadyPresent == 0)
        #expect(first.partialLastLine && first.conflicts.isEmpty && first.unreadable.isEmpty)
        let second = try store.importJSONLines(path: legacy.path)
        #expect(second.intentsAdded == 0 && second.outcomesAdded == 0 && second.alreadyPresent == 5)
        let stored = try store.entries()
        #expect(stored.map(\.intent) == legacy.entries.map(\.intent))
        #expect(stored.map(\.outcome) == legacy.entries.map(\.outcome))
        #expect(stored.map(\.upload) == [.queued, .queued, .open])
        #expect(try store.nextSequence() == 4)
        #expect(try store.lastSeenCounter(cardUID: "01020304") == 6)
    }

    @Test func aLineThatContradictsTheStoreIsRefusedAndTheRestImported() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try TerminalStore(path: directory.store)
        try store.record(intent(1))
        try store.record(intent(2))
        try store.complete(terminalSequence: 2, outcome: .notDone)
        let encoder = JSONEncoder()
        func line(_ value: JournalLine) throws -> String { String(decoding: try encoder.encode(value), as: UTF8.self) }
        let text = [
            try line(JournalLine(intent: intent(1, amount: 999))),  // different content: refused
            try line(JournalLine(sequence: 1, outcome: .notDone)),  // its outcome: refused too
            try line(JournalLine(sequence: 2, outcome: .undetermined)),  // contradicts the stored outcome
            "this is not json",
            try line(JournalLine(sequence: 77, outcome: .notDone)),  // no such intent
            try line(JournalLine(intent: intent(10))),
        ].joined(separator: "\n") + "\n"
        let path = directory.path + "/conflicting.jsonl"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let report = try store.importJSONLines(path: path)
        #expect(report.conflicts.map(\.line) == [1, 2, 3, 5])
        #expect(report.unreadable.map(\.line) == [4])
        #expect(report.intentsAdded == 1 && !report.partialLastLine)
        #expect(try store.transaction(sequence: 1)?.intent.amount == 350)
        #expect(try store.outcome(terminalSequence: 1) == nil && store.outcome(terminalSequence: 2) == .notDone)
        #expect(try store.nextSequence() == 11)
    }

    @Test func exportedJSONLinesReadAsTheOldJournalAndReimportIdentically() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let legacy = try legacyJournal(directory)
        let store = try TerminalStore(path: directory.store)
        _ = try store.importJSONLines(path: legacy.path)
        var text = ""
        try store.exportJSONLines { text += $0 }
        #expect(text.split(separator: "\n").count == 5)
        let exported = directory.path + "/exported.jsonl"
        try text.write(toFile: exported, atomically: true, encoding: .utf8)
        // FileTerminalJournal reads the export as its own file.
        let asOld = try FileTerminalJournal(path: exported).entries()
        #expect(asOld.map(\.intent) == legacy.entries.map(\.intent) && asOld.map(\.outcome) == legacy.entries.map(\.outcome))
        // Into the same store: nothing new. Into a new store: the same entries.
        #expect(try store.importJSONLines(path: exported).alreadyPresent == 5)
        let copy = try TerminalStore(path: directory.path + "/copy.sqlite")
        let report = try copy.importJSONLines(path: exported)
        #expect(report.intentsAdded == 3 && report.outcomesAdded == 2)
        #expect(try copy.entries().map(\.intent) == store.entries().map(\.intent))
        #expect(try copy.entries().map(\.outcome) == store.entries().map(\.outcome))
    }

    @Test func csvHasAHeaderAndAmountsInFenAndYuan() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try TerminalStore(path: directory.store)
        try store.record(intent(1, amount: 1_205))
        try store.complete(terminalSequence: 1, outcome: .done(balanceAfter: 8_795, counterAfter: 6))
        try store.record(intent(2, kind: .waterSettle))
        var lines: [String] = []
        try store.exportCSV { lines.append($0) }
        #expect(lines.count == 3 && lines.allSatisfy { $0.hasSuffix("\r\n") })
        // "\r\n" is one Character: drop it as one.
        let header = lines[0].dropLast().split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        #expect(header == CSVColumns.header)
        let first = Dictionary(uniqueKeysWithValues: zip(header, lines[1].dropLast().split(separator: ",", omittingEmptySubsequences: false).map(String.init)))
        #expect(first["sequence"] == "1" && first["kind"] == "purse-debit" && first["card_uid"] == "01020304")
        #expect(first["amount_fen"] == "1205" && first["amount_yuan"] == "12.05")
        #expect(first["balance_before_fen"] == "10000" && first["balance_before_yuan"] == "100.00")
        #expect(first["outcome"] == "done" && first["balance_after_fen"] == "8795" && first["balance_after_yuan"] == "87.95" && first["counter_after"] == "6")
        #expect(first["upload"] == "queued" && first["created_at"]?.hasPrefix("2026-") == true)
        let second = Dictionary(uniqueKeysWithValues: zip(header, lines[2].dropLast().split(separator: ",", omittingEmptySubsequences: false).map(String.init)))
        #expect(second["outcome"] == "open" && second["balance_after_fen"] == "" && second["consumption_fen"] == "120" && second["consumption_yuan"] == "1.20")
        #expect(TerminalStore.csvField("a,\"b\"") == "\"a,\"\"b\"\"\"")
    }

    @Test func openingWithALegacyJournalImportsItOnce() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let legacy = try legacyJournal(directory)
        let (store, report) = try TerminalStore.open(path: directory.store, importingLegacyJournal: legacy.path)
        #expect(report?.intentsAdded == 3)
        #expect(!FileManager.default.fileExists(atPath: legacy.path) && FileManager.default.fileExists(atPath: legacy.path + ".imported"))
        try store.close()
        let (again, none) = try TerminalStore.open(path: directory.store, importingLegacyJournal: legacy.path)
        #expect(none == nil)
        #expect(try again.entries().count == 3)
    }
}
