import CampusCard
import CardEmulator
import Foundation
import Testing

/// How an interrupted terminal learns its outcome when another terminal used the card in between.
@Suite struct IntentResolutionTests {
    /// Terminal 7 is torn before its commit (not done); terminal 9 then debits the same card, and the low byte of its
    /// terminal sequence happens to equal terminal 7's (1 in 256). Terminal 7's next tap must still decide "not done":
    /// the record names terminal 9. Known issue: the resolution compares the sequence's low byte but not the terminal
    /// id (PurseOperations.settleOpenIntents), so it decides "done" — a debit booked that never happened.
    @Test func anotherTerminalsCommitWithTheSameSequenceByteIsNotOurs() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let seven = Terminal(id: 7, journal: InMemoryTerminalJournal(startingSequence: 0))  // next sequence 1
        let nine = Terminal(id: 9, journal: InMemoryTerminalJournal(startingSequence: 256))  // next sequence 257: low byte 1
        // Tear terminal 7's debit at its first write (APDU 7, the decrement): not executed.
        bench.reader.arm(TearPlan(atAPDU: 7, effect: .notExecuted))
        #expect(throws: (any Error).self) { try bench.operations().debit(Fen(300), terminal: seven) }
        bench.reader.reinsert()
        bench.reader.arm(nil)
        #expect(try seven.journal.openIntents(cardUID: "5A170199").count == 1)
        #expect(try bench.operations().debit(Fen(500), terminal: nine).balance == Fen(9_500))
        let state = try bench.operations().tap(terminal: seven)
        #expect(state.balance == Fen(9_500) && state.record.terminalID == 9)
        let outcome = try seven.journal.outcome(terminalSequence: 1)
        #expect(outcome != nil, "decided at the next tap")
        withKnownIssue("settleOpenIntents ignores the record's terminal id") {
            #expect(outcome == .notDone)
        }
    }

    /// Terminal 7's debit is torn after its commit, at the log write (APDU 12): done. Before terminal 7 sees the card
    /// again, terminal 9 debits it. Terminal 7's intent must be decided "done". Known issue: the counter moved past
    /// before + 1, the log has no entry for before + 1 (the torn write), so the intent is decided "not done" — money
    /// moved that this terminal's journal says did not.
    @Test func aDebitTornAtItsLogWriteStaysDoneAfterAnotherTerminalsDebit() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let seven = Terminal(id: 7, journal: InMemoryTerminalJournal(startingSequence: 0))
        let nine = Terminal(id: 9, journal: InMemoryTerminalJournal(startingSequence: 100))
        bench.reader.arm(TearPlan(atAPDU: 12, effect: .notExecuted))
        #expect(throws: (any Error).self) { try bench.operations().debit(Fen(300), terminal: seven) }
        bench.reader.reinsert()
        bench.reader.arm(nil)
        #expect(try bench.operations().debit(Fen(500), terminal: nine).balance == Fen(9_200), "the torn debit was committed")
        try bench.operations().tap(terminal: seven)
        let outcome = try seven.journal.outcome(terminalSequence: 1)
        #expect(outcome != nil, "decided at the next tap")
        withKnownIssue("an intent whose log entry was torn is decided from the log alone once the counter moved on") {
            #expect(outcome == .done(balanceAfter: 9_700, counterAfter: 2))
        }
    }
}
