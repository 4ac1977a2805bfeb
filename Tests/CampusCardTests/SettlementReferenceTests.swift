import CampusCard
import Foundation
import Testing

/// A terminal's own settlement references (no `--reference`) are unique: an open settlement intent is decided "done"
/// exactly when the card carries its reference (docs/card-layout.md, rule 5).
@Suite struct SettlementReferenceTests {
    /// Terminal ids N and N + 32768 once gave the same reference (15 bits of the id): the second station's
    /// settlement was refused as reusing the card's last reference, and an interrupted settlement of one could be
    /// decided by the other's.
    @Test func terminalsHalfTheIdRangeApartGetDistinctReferences() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(0, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let low = Terminal(id: 5, journal: InMemoryTerminalJournal())
        let high = Terminal(id: TerminalID(5 + 32_768), journal: InMemoryTerminalJournal())
        let first = try bench.operations().waterSettle(terminal: low)
        let second = try bench.operations().waterSettle(terminal: high)
        #expect(first.state.record.reference >= CampusCardOperations.terminalReferences)
        #expect(second.state.record.reference >= CampusCardOperations.terminalReferences)
        #expect(first.state.record.reference != second.state.record.reference)
        #expect(try bench.operations().readWater().record.reference == second.state.record.reference)
    }

    /// A station whose sequence wrapped onto the one that wrote the card's current reference skips that sequence
    /// rather than refusing the card.
    @Test(arguments: [false, true])
    func aWrappedSequenceSkipsTheCardsCurrentReference(journalNumbersFromRecords: Bool) throws {
        let bench = try CardBench()
        try bench.issueAndLoad(0, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let first = try bench.operations().waterSettle(terminal: Terminal(id: 5, journal: InMemoryTerminalJournal()))
        // The same station, 65,536 sequences later: sequence 65,537 has the low bits of sequence 1.
        let journal: any TerminalJournal = journalNumbersFromRecords
            ? RecordNumberedJournal(startingSequence: 65_536) : InMemoryTerminalJournal(startingSequence: 65_536)
        let wrapped = try bench.operations().waterSettle(terminal: Terminal(id: 5, journal: journal))
        #expect(wrapped.state.record.reference != first.state.record.reference)
        #expect(wrapped.state.record.reference >= CampusCardOperations.terminalReferences)
        #expect(try journal.outcome(terminalSequence: 65_538) != nil, "sequence 65,537 skipped, 65,538 used")
        #expect(try journal.outcome(terminalSequence: 65_537) == nil)
    }

    @Test func defaultReferencesAreDistinctAcrossTheWholeIdRange() {
        let ids: [UInt16] = [1, 2, 255, 256, 0x7FFF, 0x8000, 0x8001, 0x8005, 0xFFFE, 0xFFFF]
        let sequences: [UInt32] = [1, 2, 255, 256, 0x7FFE, 0x7FFF]
        var seen = Set<UInt32>()
        for id in ids {
            for sequence in sequences {
                let reference = CampusCardOperations.defaultReference(terminal: id, sequence: sequence)
                #expect(reference >= CampusCardOperations.terminalReferences)
                #expect(seen.insert(reference).inserted, "terminal \(id) sequence \(sequence)")
            }
        }
        #expect(CampusCardOperations.defaultReference(terminal: 7, sequence: 3) == CampusCardOperations.defaultReference(terminal: 7, sequence: 3 + 32_768),
                "one terminal repeats after 32,768 sequences (waterSettle skips the card's current one)")
    }
}

/// A journal that numbers from its records, as `FileTerminalJournal` does: asked twice without recording, it gives the
/// same sequence again.
final class RecordNumberedJournal: TerminalJournal, @unchecked Sendable {
    private let inner = InMemoryTerminalJournal()
    private let lock = NSLock()
    private var highest: UInt32

    init(startingSequence: UInt32) { highest = startingSequence }

    func nextSequence() throws -> UInt32 { lock.withLock { highest + 1 } }
    func record(_ intent: TransactionIntent) throws {
        try inner.record(intent)
        lock.withLock { highest = max(highest, intent.terminalSequence) }
    }
    func complete(terminalSequence: UInt32, outcome: TransactionOutcome) throws { try inner.complete(terminalSequence: terminalSequence, outcome: outcome) }
    func openIntents(cardUID: String) throws -> [TransactionIntent] { try inner.openIntents(cardUID: cardUID) }
    func outcome(terminalSequence: UInt32) throws -> TransactionOutcome? { try inner.outcome(terminalSequence: terminalSequence) }
}
