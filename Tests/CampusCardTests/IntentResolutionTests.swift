import CampusCard
import CardEmulator
import Foundation
import Testing

/// How an interrupted terminal learns its outcome when another terminal used the card in between.
@Suite struct IntentResolutionTests {
    /// Terminal 7's commit write goes unanswered (block left old: not done); terminal 9 then debits the same amount
    /// from the same balance with a sequence whose low byte equals terminal 7's, so counter, balance and sequence byte
    /// all match 7's intent: only the terminal id the record names tells them apart. 7's next tap decides "not done".
    @Test func anotherTerminalsCommitWithTheSameSequenceByteIsNotOurs() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let seven = Terminal(id: 7, journal: InMemoryTerminalJournal(startingSequence: 0))  // next sequence 1
        let nine = Terminal(id: 9, journal: InMemoryTerminalJournal(startingSequence: 256))  // next sequence 257: low byte 1
        // Tear terminal 7's debit at its commit write (APDU 8), the block left old: 7 cannot know whether it landed.
        bench.tear(atAPDU: 8, .leftOld) { try bench.operations().debit(Fen(300), terminal: seven) }
        #expect(try seven.journal.openIntents(cardUID: "5A170199").count == 1)
        #expect(try bench.operations().debit(Fen(300), terminal: nine).balance == Fen(9_700))
        let state = try bench.operations().tap(terminal: seven)
        #expect(state.balance == Fen(9_700) && state.record.terminalID == 9 && state.record.terminalSequence == 1)
        let outcome = try seven.journal.outcome(terminalSequence: 1)
        #expect(outcome == .notDone)
    }

    /// Terminal 7's debit is torn after its acknowledged commit, at the log write (APDU 12): the terminal knows the
    /// record was written, so it completes the intent "done" itself, before the card is seen again. Its next tap (a
    /// debit, after terminal 9 used the card) has nothing left to decide and debits.
    @Test func aDebitTornAfterItsCommitIsDecidedDoneAtOnce() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let seven = Terminal(id: 7, journal: InMemoryTerminalJournal(startingSequence: 0))
        let nine = Terminal(id: 9, journal: InMemoryTerminalJournal(startingSequence: 100))
        bench.tearAfterCommit(atAPDU: 12, .notExecuted) { try bench.operations().debit(Fen(300), terminal: seven).warnings }
        #expect(try seven.journal.outcome(terminalSequence: 1) == .done(balanceAfter: 9_700, counterAfter: 2))
        #expect(try bench.operations().debit(Fen(500), terminal: nine).balance == Fen(9_200), "the torn debit was committed")
        #expect(try bench.operations().debit(Fen(200), terminal: seven).balance == Fen(9_000))
    }

    /// Terminal 7's commit lands but its answer is lost (APDU 8 executed, card gone): 7 cannot know. Terminal 9 then
    /// debits the same card: the backup lagged, so 9 writes the log entry 7 never wrote (naming 7 and its sequence,
    /// tearing rule 6). 7's next tap finds its entry in the log: done.
    @Test func anUnacknowledgedCommitIsDecidedFromTheBackfilledLogEntry() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let seven = Terminal(id: 7, journal: InMemoryTerminalJournal(startingSequence: 0))
        let nine = Terminal(id: 9, journal: InMemoryTerminalJournal(startingSequence: 100))
        bench.tear(atAPDU: 8, .executed) { try bench.operations().debit(Fen(300), terminal: seven) }
        #expect(try seven.journal.outcome(terminalSequence: 1) == nil)
        #expect(try bench.operations().debit(Fen(500), terminal: nine).balance == Fen(9_200))
        let macKey = try bench.keystore.macKey(uid: bench.uid, version: 1)
        let entry = try #require(try bench.operations().readLog(uid: bench.uid, macKey: macKey, version: 1).first { $0.counter == 2 })
        #expect(entry.operation == .debit && entry.amount == Fen(300) && entry.balanceAfter == Fen(9_700) && entry.terminal.terminalID == 7)
        try bench.operations().tap(terminal: seven)
        #expect(try seven.journal.outcome(terminalSequence: 1) == .done(balanceAfter: 9_700, counterAfter: 2))
    }

    /// Issue 8, 5b: a debit torn after its commit and before its log entry, then the next debit's commit torn
    /// garbled. The first tap after the first tear back-fills the missing entry, so the torn record is rebuilt from it
    /// (before: every terminal refused the card as tampered and the first debit was never decided).
    @Test func twoTornDebitsInARowLeaveAWorkingCard() throws {
        var seven = Terminal(id: 7, journal: InMemoryTerminalJournal(startingSequence: 0))
        func scene() throws -> (CardBench, Terminal) {
            seven = Terminal(id: 7, journal: InMemoryTerminalJournal(startingSequence: 0))
            let bench = try CardBench()
            try bench.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
            try bench.setPIN()
            bench.tear(atAPDU: 8, .executed) { try bench.operations().debit(Fen(300), terminal: seven) }
            return (bench, Terminal(id: 9, journal: InMemoryTerminalJournal(startingSequence: 100)))
        }
        let commit = try CardBench.commitIndex(scene: scene) { bench, nine in try bench.operations().debit(Fen(500), terminal: nine) }
        let (bench, nine) = try scene()
        bench.tear(atAPDU: commit, .garbled) { try bench.operations().debit(Fen(500), terminal: nine) }
        let state = try bench.operations().readPurse()
        #expect(state.resolution == .recordRebuilt && state.balance == Fen(9_700))
        try bench.operations().tap(terminal: nine)
        #expect(try nine.journal.outcome(terminalSequence: 101) == .notDone)
        try bench.operations().tap(terminal: seven)
        #expect(try seven.journal.outcome(terminalSequence: 1) == .done(balanceAfter: 9_700, counterAfter: 2))
        #expect(try bench.operations().debit(Fen(100), terminal: nine, pin: CardBench.pin).balance == Fen(9_600))
    }

    /// The case that makes the last one undetermined: terminal 7's commit write is torn with the block left old (not
    /// done, but 7 cannot know); terminal 9
    /// debits the same 3.00 and its log write is torn (9 decides "done" itself); one more debit elsewhere. Terminal 7
    /// must not take 9's debit for its own.
    @Test func anotherTerminalsSameAmountDebitWithATornLogIsNotTakenForOurs() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let seven = Terminal(id: 7, journal: InMemoryTerminalJournal(startingSequence: 0))
        let nine = Terminal(id: 9, journal: InMemoryTerminalJournal(startingSequence: 0))  // same sequences as 7
        bench.tear(atAPDU: 8, .leftOld) { try bench.operations().debit(Fen(300), terminal: seven) }
        bench.tearAfterCommit(atAPDU: 12, .garbled) { try bench.operations().debit(Fen(300), terminal: nine).warnings }
        #expect(try nine.journal.outcome(terminalSequence: 1) == .done(balanceAfter: 9_700, counterAfter: 2))
        try bench.operations().debit(Fen(100), terminal: Terminal(id: 11, journal: InMemoryTerminalJournal()))
        try bench.operations().tap(terminal: seven)
        #expect(try seven.journal.outcome(terminalSequence: 1) == .undetermined)
    }

    /// Terminal 7's commit write torn (block left old); terminal 9 (a fresh journal: the same sequence 1) debits the same amount and
    /// logs it; after one more debit the record no longer shows who took the counter, the log does: the entry names
    /// terminal 9 (the terminal id byte differs), so 7's intent is not done.
    @Test func theLogEntryNamesTheTerminal() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let seven = Terminal(id: 7, journal: InMemoryTerminalJournal(startingSequence: 0))
        let nine = Terminal(id: 9, journal: InMemoryTerminalJournal(startingSequence: 0))
        bench.tear(atAPDU: 8, .leftOld) { try bench.operations().debit(Fen(300), terminal: seven) }
        try bench.operations().debit(Fen(300), terminal: nine)
        try bench.operations().setStatus(.frozen)
        try bench.operations().setStatus(.normal)
        let log = try bench.operations().readLog(uid: bench.uid, macKey: bench.keystore.macKey(uid: bench.uid, version: 1), version: 1)
        #expect(log.suffix(2).map(\.operation) == [.statusChange, .statusChange] && log.last?.balanceAfter == Fen(9_700))
        #expect(try bench.operations().debit(Fen(100), terminal: seven).balance == Fen(9_600))
        #expect(try seven.journal.outcome(terminalSequence: 1) == .notDone)
    }

    /// A debit whose commit write went unanswered (block left old), then 26 debits elsewhere: the log ring (24 entries on
    /// a layout v2 card; six on v1: `LogRingTests`) no longer holds the entry for the intent's counter nor the one after.
    /// The terminal must not guess: undetermined, for the settlement service to decide.
    @Test func pastTheLogRingTheOutcomeIsUndetermined() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let seven = Terminal(id: 7, journal: InMemoryTerminalJournal(startingSequence: 0))
        let nine = Terminal(id: 9, journal: InMemoryTerminalJournal(startingSequence: 100))
        bench.tear(atAPDU: 8, .leftOld) { try bench.operations().debit(Fen(300), terminal: seven) }
        for _ in 1...26 { try bench.operations().debit(Fen(300), terminal: nine) }
        try bench.operations().tap(terminal: seven)
        #expect(try seven.journal.outcome(terminalSequence: 1) == .undetermined)
        #expect(try seven.journal.openIntents(cardUID: bench.uidHex).isEmpty, "decided once, not re-read at every tap")
    }

    /// Water: a unit debit committed at controller 7 with its answer lost, then the wallet used at controller 9 — the
    /// record no longer shows controller 7 and there is no water log: undetermined, never a wrong "not done".
    @Test func waterUsedElsewhereIsUndetermined() throws {
        let bench = try CardBench()
        let station = Terminal(id: 1, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(10_000, terminal: station)
        try bench.operations().waterSettle(terminal: station, reference: 1)
        let seven = Terminal(id: 7, journal: InMemoryTerminalJournal(startingSequence: 0))
        let nine = Terminal(id: 9, journal: InMemoryTerminalJournal(startingSequence: 100))
        bench.tear(atAPDU: 13, .executed) { try bench.operations().waterDebit(Fen(5), terminal: seven) }
        #expect(try bench.operations().waterDebit(Fen(5), terminal: nine).balance == Fen(990))
        try bench.operations().waterTap(terminal: seven)
        #expect(try seven.journal.outcome(terminalSequence: 1) == .undetermined)
    }

    /// Two settlement stations whose journals are both at sequence 1: station 3's commit write goes unanswered, station 4
    /// settles the same card (same refill, same sequence). Station 3 decides by settlement references, never by the
    /// sequence: its reference is not on the card, but another settlement's is, so the card cannot say whether 3's
    /// landed before it: undetermined. The settlement service can: station 4's intent shows the reference it replaced.
    @Test func aSettlementIsDecidedByItsReference() throws {
        let bench = try CardBench()
        let three = Terminal(id: 3, journal: InMemoryTerminalJournal()), four = Terminal(id: 4, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(0, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        bench.tear(atAPDU: 15, .leftOld) { try bench.operations().waterSettle(terminal: three, reference: 1_001) }
        #expect(try bench.operations().waterSettle(terminal: four, reference: 1_002).refill == Fen(1_000))
        try bench.operations().waterTap(terminal: three)
        #expect(try three.journal.outcome(terminalSequence: 1) == .undetermined)
        #expect((four.journal as? InMemoryTerminalJournal)?.entries.last?.intent.referenceBefore == 0, "4 replaced the issue's reference, not 3's")
        // Its commit write unanswered (left old), tapped again before anyone else settled: the reference read before.
        try bench.operations().waterDebit(Fen(5), terminal: Terminal(id: 40, journal: InMemoryTerminalJournal()))  // so it refills (APDU 14)
        bench.tear(atAPDU: 15, .leftOld) { try bench.operations().waterSettle(terminal: three, reference: 1_003) }
        try bench.operations().waterTap(terminal: Terminal(id: 40, journal: InMemoryTerminalJournal()))
        try bench.operations().waterTap(terminal: three)
        #expect(try three.journal.outcome(terminalSequence: 2) == .notDone)
        let reused = #expect(throws: CardOperationError.self) { try bench.operations().waterSettle(terminal: three, reference: 1_002) }
        #expect(reused?.message.contains("new reference") == true)
        let reserved = #expect(throws: CardOperationError.self) {
            try bench.operations().waterSettle(terminal: three, reference: CampusCardOperations.terminalReferences + 1)
        }
        #expect(reserved?.message.contains("terminals number their own") == true)
        let own = try bench.operations().waterSettle(terminal: three)
        let sequence = try #require((three.journal as? InMemoryTerminalJournal)?.entries.last?.intent.terminalSequence)
        #expect(own.state.record.reference == CampusCardOperations.terminalReferences | 3 << 15 | sequence & 0x7FFF, "terminal 3 and its sequence")
    }

    /// Torn before its commit write was sent (here at the decrement): the card can never show it done, so the terminal
    /// decides "not done" at once, whatever happens to the card afterwards.
    @Test func tornBeforeTheCommitIsNotDoneAtOnce() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let seven = Terminal(id: 7, journal: InMemoryTerminalJournal())
        bench.reader.arm(TearPlan(atAPDU: 7, effect: .executed))  // the decrement happened, its answer was lost
        #expect(throws: (any Error).self) { try bench.operations().debit(Fen(300), terminal: seven) }
        #expect(try seven.journal.outcome(terminalSequence: 1) == .notDone)
        bench.reader.reinsert()
        bench.reader.arm(nil)
        let state = try bench.operations().readPurse()
        #expect(state.balance == Fen(10_000) && state.resolution == .rolledBack)
    }

    /// Two tears in a row (issue 8, 5a): a settlement's commit lands unanswered (block 6 lags it), then a shower's
    /// commit tears the record (garbled). Nothing on the card vouches for the wallet's balance any more: another shower
    /// refuses it, the interrupted shower restores it from its journal; had it not, the station resets the wallet
    /// instead of refusing every settlement.
    @Test func aSettlementThenATornShowerRecordNeverStrandsTheCard() throws {
        for showerComesBack in [true, false] {
            let bench = try CardBench()
            try bench.issueAndLoad(0, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
            let three = Terminal(id: 3, journal: InMemoryTerminalJournal())
            try bench.operations().waterSettle(terminal: three, reference: 1, maximumRefill: Fen(600))
            bench.tear(atAPDU: 15, .executed) { try bench.operations().waterSettle(terminal: three, reference: 2) }
            let shower = Terminal(id: 40, journal: InMemoryTerminalJournal())
            _ = try bench.operations().readWater()  // any tap repairs the backup (the refill is done)
            bench.tear(atAPDU: 13, .garbled) { try bench.operations().waterDebit(Fen(5), terminal: shower) }
            let other = #expect(throws: CardOperationError.self) {
                try bench.operations().waterDebit(Fen(5), terminal: Terminal(id: 41, journal: InMemoryTerminalJournal()))
            }
            #expect(other?.code == .waterInterrupted)
            if showerComesBack {
                let restored = try bench.operations().waterTap(terminal: shower)
                #expect(restored.balance == Fen(1_000) && restored.resolution == .rolledBack && restored.record.reference == 2)
                #expect(try shower.journal.outcome(terminalSequence: 1) == .notDone)
                try bench.operations().waterTap(terminal: three)
                #expect(try three.journal.outcome(terminalSequence: 2) == .done(balanceAfter: 1_000, counterAfter: 2))
                let settled = try bench.operations().waterSettle(terminal: three, reference: 3)
                #expect(settled.consumption == .zero && settled.state.balance == Fen(1_000))
            } else {
                let reset = try bench.operations().waterSettle(terminal: three, reference: 3)
                #expect(reset.consumption == nil && reset.unverifiedBalance == Fen(1_000) && reset.state.balance == Fen(1_000))
                #expect(try bench.operations().waterDebit(Fen(5), terminal: shower).balance == Fen(995))
                #expect(try three.journal.outcome(terminalSequence: 2) == .undetermined, "the reset replaced reference 2")
            }
        }
    }

    /// Adjacent terminals whose sequences drifted apart (POS 1 at sequence 258, POS 2 at 1): POS 1's commit goes
    /// unanswered (not done), the student pays the same amount at POS 2, then once more elsewhere. The log entry names
    /// POS 2 by its full id: POS 1's intent is not done (a hashed two-byte tag took POS 2's entry for POS 1's).
    @Test func aLogEntryNamesItsTerminalByFullID() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(10_000, terminal: Terminal(id: 9, journal: InMemoryTerminalJournal()))
        let one = Terminal(id: 1, journal: InMemoryTerminalJournal(startingSequence: 257))
        let two = Terminal(id: 2, journal: InMemoryTerminalJournal(startingSequence: 0))
        bench.tear(atAPDU: 8, .leftOld) { try bench.operations().debit(Fen(800), terminal: one) }
        try bench.operations().debit(Fen(800), terminal: two)
        try bench.operations().debit(Fen(100), terminal: Terminal(id: 3, journal: InMemoryTerminalJournal()))
        #expect(try bench.operations().debit(Fen(100), terminal: one).balance == Fen(9_000))
        #expect(try one.journal.outcome(terminalSequence: 258) == .notDone)
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
