import CampusCard
import CardEmulator
import Foundation
import Testing

/// `Terminal.perform`: one card session's result as a value — its money's outcome and the earlier interrupted
/// operations it decided — which cardctl and cardd report from (issue 10, item 1).
@Suite struct OperationReportTests {
    @Test func aDoneDebitReportsDoneWithItsIntent() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let seven = Terminal(id: 7, journal: InMemoryTerminalJournal())
        let report = seven.perform { terminal in try bench.operations().debit(Fen(300), terminal: terminal) }
        #expect(report.outcome == .done && report.error == nil && report.value?.balance == Fen(9_700))
        let done = try #require(report.doneIntent)
        #expect(done.intent.terminalID == 7 && done.intent.amount == Fen(300) && done.balanceAfter == Fen(9_700) && done.counterAfter == 2)
        #expect(report.decided.isEmpty)
    }

    @Test func aRefusalBeforeAnyIntentIsNotDone() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(100, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let seven = Terminal(id: 7, journal: InMemoryTerminalJournal())
        let report = seven.perform { terminal in try bench.operations().debit(Fen(300), terminal: terminal) }
        #expect(report.outcome == .notDone && report.intents.isEmpty && report.doneIntent == nil)
        #expect((report.error as? CardOperationError)?.code == .insufficientFunds)
    }

    @Test func aReadMovesNoMoney() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(100, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let report = Terminal(id: 7, journal: InMemoryTerminalJournal()).perform { _ in try bench.operations().readPurse() }
        #expect(report.outcome == nil && report.value?.balance == Fen(100))
    }

    /// The commit write's answer is lost: undetermined in that session; the card's next tap at this terminal decides
    /// it, and that tap's report names the decided intent (not as its own).
    @Test func anUnansweredCommitIsUndeterminedThenDecidedAtTheNextTap() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let seven = Terminal(id: 7, journal: InMemoryTerminalJournal())
        var torn: OperationReport<PurseState>?
        bench.tear(atAPDU: 8, .executed) {
            let report = seven.perform { terminal in try bench.operations().debit(Fen(300), terminal: terminal) }
            torn = report
            if let error = report.error { throw error }
        }
        #expect(torn?.outcome == .undetermined && torn?.intents.count == 1 && torn?.intents.first?.outcome == nil)
        let tap = seven.perform { terminal in try bench.operations().tap(terminal: terminal) }
        #expect(tap.outcome == nil && tap.intents.isEmpty)
        let decided = try #require(tap.decided.first)
        #expect(tap.decided.count == 1 && decided.intent.amount == Fen(300) && decided.outcome == .done(balanceAfter: 9_700, counterAfter: 2))
    }

    /// Torn after the commit was acknowledged: done, with the failure kept as the report's warning-error or the
    /// state's warnings, never as not done.
    @Test func tornAfterItsCommitIsDone() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let seven = Terminal(id: 7, journal: InMemoryTerminalJournal())
        var report: OperationReport<PurseState>?
        bench.tearAfterCommit(atAPDU: 12, .notExecuted) {
            let result = seven.perform { terminal in try bench.operations().debit(Fen(300), terminal: terminal) }
            report = result
            return try result.get().warnings
        }
        #expect(report?.outcome == .done && report?.doneIntent?.balanceAfter == Fen(9_700))
    }
}
