import CampusCard
import CardEmulator
import Foundation
import Testing

/// How an interrupted terminal learns its outcome when another terminal used the card in between.
@Suite struct IntentResolutionTests {
    /// Terminal 7 is torn before its commit (not done); terminal 9 then debits the same card, and the low byte of its
    /// terminal sequence happens to equal terminal 7's (1 in 256). Terminal 7's next tap must still decide "not done":
    /// the record names terminal 9.
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
        #expect(outcome == .notDone)
    }

    /// Terminal 7's debit is torn after its commit, at the log write (APDU 12): done. Before terminal 7 sees the card
    /// again, terminal 9 debits it. Terminal 7's intent must be decided "done": the log has no entry for before + 1
    /// (the torn write), but terminal 9's entry shows the balance before it, which is terminal 7's balance after.
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
        #expect(outcome == .done(balanceAfter: 9_700, counterAfter: 2))
    }

    /// The same, but the card was locked and unlocked at the card office in between: the status changes are logged
    /// (amount 0), so the chain still reaches terminal 7's balance.
    @Test func theChainCrossesStatusChanges() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let seven = Terminal(id: 7, journal: InMemoryTerminalJournal(startingSequence: 0))
        bench.reader.arm(TearPlan(atAPDU: 12, effect: .garbled))
        #expect(throws: (any Error).self) { try bench.operations().debit(Fen(300), terminal: seven) }
        bench.reader.reinsert()
        bench.reader.arm(nil)
        try bench.operations().setStatus(.frozen)
        try bench.operations().setStatus(.normal)
        let log = try bench.operations().readLog(uid: bench.uid, macKey: bench.keystore.macKey(uid: bench.uid, version: 1), version: 1)
        #expect(log.suffix(2).map(\.operation) == [.statusChange, .statusChange] && log.last?.balanceAfter == Fen(9_700))
        // Terminal 7's next tap is a debit: it reads the log to decide, then debits the purse in the same session.
        #expect(try bench.operations().debit(Fen(200), terminal: seven).balance == Fen(9_500))
        #expect(try seven.journal.outcome(terminalSequence: 1) == .done(balanceAfter: 9_700, counterAfter: 2))
    }

    /// A debit torn at its log write, then seven debits elsewhere: the log ring (six entries) no longer holds the
    /// entries for the intent's counter or the one after. The terminal must not guess: undetermined, for the settlement service to decide.
    @Test func pastTheLogRingTheOutcomeIsUndetermined() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let seven = Terminal(id: 7, journal: InMemoryTerminalJournal(startingSequence: 0))
        let nine = Terminal(id: 9, journal: InMemoryTerminalJournal(startingSequence: 100))
        bench.reader.arm(TearPlan(atAPDU: 12, effect: .notExecuted))
        #expect(throws: (any Error).self) { try bench.operations().debit(Fen(300), terminal: seven) }
        bench.reader.reinsert()
        bench.reader.arm(nil)
        for _ in 1...7 { try bench.operations().debit(Fen(100), terminal: nine) }
        try bench.operations().tap(terminal: seven)
        #expect(try seven.journal.outcome(terminalSequence: 1) == .undetermined)
        #expect(try seven.journal.openIntents(cardUID: bench.uidHex).isEmpty, "decided once, not re-read at every tap")
    }

    /// Water: a unit debit committed at controller 7, then the wallet used at controller 9 — the record no longer
    /// shows controller 7's sequence and there is no water log: undetermined, never a wrong "not done".
    @Test func waterUsedElsewhereIsUndetermined() throws {
        let bench = try CardBench()
        let station = Terminal(id: 1, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(10_000, terminal: station)
        try bench.operations().waterSettle(terminal: station, reference: 1)
        let seven = Terminal(id: 7, journal: InMemoryTerminalJournal(startingSequence: 0))
        let nine = Terminal(id: 9, journal: InMemoryTerminalJournal(startingSequence: 100))
        // Torn at the backup copy (APDU 9): committed.
        bench.reader.arm(TearPlan(atAPDU: 9, effect: .notExecuted))
        #expect(throws: (any Error).self) { try bench.operations().waterDebit(Fen(5), terminal: seven) }
        bench.reader.reinsert()
        bench.reader.arm(nil)
        #expect(try bench.operations().waterDebit(Fen(5), terminal: nine).balance == Fen(990))
        try bench.operations().waterTap(terminal: seven)
        #expect(try seven.journal.outcome(terminalSequence: 1) == .undetermined)
    }

    /// The settlement's intent carries the consumption it charged and the card serial (read from the identity).
    @Test func aWaterSettlementIntentCarriesTheConsumption() throws {
        let bench = try CardBench()
        let station = Terminal(id: 1, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(10_000, terminal: station)
        try bench.operations().waterSettle(terminal: station, reference: 1)
        try bench.operations().waterDebit(Fen(35), terminal: Terminal(id: 7, journal: InMemoryTerminalJournal()))
        let result = try bench.operations().waterSettle(terminal: station, reference: 2)
        let intent = try #require((station.journal as? InMemoryTerminalJournal)?.entries.last?.intent)
        #expect(result.consumption == Fen(35) && intent.consumption == 35 && intent.amount == 35 && intent.cardSerial == bench.serial)
    }
}
