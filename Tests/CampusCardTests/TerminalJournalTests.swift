import CampusCard
import Foundation
import Testing

@Suite struct InMemoryTerminalJournalTests {
    func intent(_ sequence: UInt32, uid: String = "01020304") -> TransactionIntent {
        TransactionIntent(terminalID: 7, terminalSequence: sequence, kind: .purseDebit, cardUID: uid, cardSerial: 42,
                          amount: 350, balanceBefore: 10_000, counterBefore: 5)
    }

    @Test func sequencesAreMonotonic() throws {
        let journal = InMemoryTerminalJournal(startingSequence: 10)
        #expect(try journal.nextSequence() == 11)
        #expect(try journal.nextSequence() == 12)
    }

    @Test func openIntentsUntilCompleted() throws {
        let journal = InMemoryTerminalJournal()
        try journal.record(intent(1))
        try journal.record(intent(2, uid: "AABBCCDD"))
        #expect(try journal.openIntents(cardUID: "01020304").map(\.terminalSequence) == [1])
        try journal.complete(terminalSequence: 1, outcome: .done(balanceAfter: 9_650, counterAfter: 6))
        #expect(try journal.openIntents(cardUID: "01020304").isEmpty)
        #expect(try journal.outcome(terminalSequence: 1) == .done(balanceAfter: 9_650, counterAfter: 6))
        #expect(try journal.outcome(terminalSequence: 2) == nil)
    }

    @Test func completingTwiceMustAgree() throws {
        let journal = InMemoryTerminalJournal()
        try journal.record(intent(1))
        try journal.complete(terminalSequence: 1, outcome: .notDone)
        try journal.complete(terminalSequence: 1, outcome: .notDone)
        #expect(throws: JournalError.self) { try journal.complete(terminalSequence: 1, outcome: .done(balanceAfter: 1, counterAfter: 1)) }
    }

    @Test func refusesReusedSequenceAndFailedRecording() throws {
        let journal = InMemoryTerminalJournal()
        try journal.record(intent(1))
        #expect(throws: JournalError.self) { try journal.record(intent(1)) }
        journal.failRecording = true
        #expect(throws: JournalError.self) { try journal.record(intent(2)) }
        #expect(try journal.openIntents(cardUID: "01020304").count == 1)
    }
}

@Suite struct FileTerminalJournalTests {
    /// Two processes (here two instances) sharing one journal file both get sequence 1; only the first may record it.
    @Test func aSharedJournalRefusesASequenceRecordedByAnother() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("journal-\(UUID().uuidString).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let first = try FileTerminalJournal(path: path), second = try FileTerminalJournal(path: path)
        #expect(try first.nextSequence() == 1 && second.nextSequence() == 1)
        let intent = TransactionIntent(terminalID: 7, terminalSequence: 1, kind: .purseDebit, cardUID: "01020304", cardSerial: nil,
                                       amount: 350, balanceBefore: 10_000, counterBefore: 5)
        try first.record(intent)
        #expect(throws: JournalError.self) { try second.record(intent) }
        #expect(try second.entries().count == 1 && second.nextSequence() == 2)
    }

    /// Two writers racing on one file (separate instances, as two processes would be): every recorded sequence is
    /// unique, because the duplicate check and the append happen under one flock.
    @Test func racingWritersNeverRecordOneSequenceTwice() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("journal-\(UUID().uuidString).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = try FileTerminalJournal(path: path)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<2 {
                group.addTask {
                    guard let journal = try? FileTerminalJournal(path: path) else { return }
                    for _ in 0..<40 {
                        for _ in 0..<100 {
                            guard let sequence = try? journal.nextSequence() else { continue }
                            let intent = TransactionIntent(terminalID: 7, terminalSequence: sequence, kind: .purseDebit, cardUID: "01020304",
                                                           cardSerial: nil, amount: 1, balanceBefore: 100, counterBefore: 1)
                            if (try? journal.record(intent)) != nil { break }
                        }
                    }
                }
            }
        }
        let sequences = try FileTerminalJournal(path: path).entries().map(\.intent.terminalSequence)
        #expect(sequences.count == 80 && Set(sequences).count == 80)
    }

    /// A line cut short at the end (a crash mid-write) does not swallow the next record.
    @Test func aPartialLastLineDoesNotSwallowTheNextRecord() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("journal-\(UUID().uuidString).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let journal = try FileTerminalJournal(path: path)
        let intent = { (sequence: UInt32) in
            TransactionIntent(terminalID: 7, terminalSequence: sequence, kind: .purseDebit, cardUID: "01020304", cardSerial: nil,
                              amount: 1, balanceBefore: 100, counterBefore: 1)
        }
        try journal.record(intent(1))
        let handle = try #require(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data("{\"intent\":{\"termi".utf8))
        handle.closeFile()
        try journal.record(intent(2))
        #expect(try journal.entries().map(\.intent.terminalSequence) == [1, 2])
    }
}
