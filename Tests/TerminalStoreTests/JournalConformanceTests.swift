import CampusCard
import Foundation
import Testing
import TerminalStore

/// The `TerminalJournal` contract, checked on every implementation: the in-memory journal, the JSON-lines file and
/// the SQLite store (the same checks as Tests/CampusCardTests/TerminalJournalTests.swift, run on all three).
@Suite struct JournalConformanceTests {
    enum Implementation: String, CaseIterable, CustomTestStringConvertible {
        case inMemory, jsonLines, sqlite
        var testDescription: String { rawValue }

        func make(_ directory: TemporaryDirectory) throws -> any TerminalJournal {
            switch self {
            case .inMemory: InMemoryTerminalJournal()
            case .jsonLines: try FileTerminalJournal(path: directory.path + "/journal.jsonl")
            case .sqlite: try TerminalStore(path: directory.store)
            }
        }
    }

    @Test(arguments: Implementation.allCases)
    func sequencesAreMonotonicAndNeverReused(_ implementation: Implementation) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let journal = try implementation.make(directory)
        let first = try journal.nextSequence()
        try journal.record(intent(first))
        let second = try journal.nextSequence()
        #expect(first == 1 && second == 2)
    }

    @Test(arguments: Implementation.allCases)
    func openIntentsUntilCompleted(_ implementation: Implementation) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let journal = try implementation.make(directory)
        try journal.record(intent(1))
        try journal.record(intent(2, uid: "AABBCCDD"))
        try journal.record(intent(3))
        #expect(try journal.openIntents(cardUID: "01020304").map(\.terminalSequence) == [1, 3])
        #expect(try journal.openIntents(cardUID: "01020304").first == intent(1))
        try journal.complete(terminalSequence: 1, outcome: .done(balanceAfter: 9_650, counterAfter: 6))
        #expect(try journal.openIntents(cardUID: "01020304").map(\.terminalSequence) == [3])
        #expect(try journal.outcome(terminalSequence: 1) == .done(balanceAfter: 9_650, counterAfter: 6))
        #expect(try journal.outcome(terminalSequence: 2) == nil)
        #expect(try journal.outcome(terminalSequence: 99) == nil)
    }

    @Test(arguments: Implementation.allCases)
    func completingTwiceMustAgree(_ implementation: Implementation) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let journal = try implementation.make(directory)
        try journal.record(intent(1))
        try journal.complete(terminalSequence: 1, outcome: .notDone)
        try journal.complete(terminalSequence: 1, outcome: .notDone)
        #expect(throws: (any Error).self) { try journal.complete(terminalSequence: 1, outcome: .done(balanceAfter: 1, counterAfter: 1)) }
        #expect(try journal.outcome(terminalSequence: 1) == .notDone)
    }

    @Test(arguments: Implementation.allCases)
    func refusesAReusedSequence(_ implementation: Implementation) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let journal = try implementation.make(directory)
        try journal.record(intent(1))
        #expect(throws: (any Error).self) { try journal.record(intent(1, uid: "AABBCCDD")) }
        #expect(try journal.openIntents(cardUID: "01020304").count == 1)
        #expect(try journal.openIntents(cardUID: "AABBCCDD").isEmpty)
    }

    /// Two instances on one store (as cardd and cardctl would be): both may be handed numbers, only one may record a
    /// given sequence, and the store's own counter never hands out the same number twice.
    @Test func twoInstancesOnOneStoreNeverShareASequence() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        _ = try TerminalStore(path: directory.store)
        let first = try TerminalStore(path: directory.store), second = try TerminalStore(path: directory.store)
        try first.record(intent(1))
        #expect(throwsStoreError(.sequenceReused) { try second.record(intent(1)) })
        await withTaskGroup(of: Void.self) { group in
            for store in [first, second] {
                group.addTask {
                    for _ in 0..<40 {
                        guard let sequence = try? store.nextSequence() else { continue }
                        _ = try? store.record(intent(sequence))
                    }
                }
            }
        }
        let sequences = try first.entries(limit: 1000).map(\.intent.terminalSequence)
        #expect(sequences.count == 81 && Set(sequences).count == 81)
        #expect(try second.nextSequence() == 82)
    }
}
