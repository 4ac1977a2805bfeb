import Foundation
import Testing
import TestSupport

/// A POS debit's result is reported done whenever the card carries it (even when a later step failed), never done
/// when it does not, and undetermined only when the commit write went unanswered; an undetermined sale is decided
/// at the card's next tap here, never retried on its own (issue 10, item 6).
@Suite(.serialized) struct PosInterruptedTests {
    /// The card leaves during the commit write, which lands: `sale-undetermined` (exit 7); the next tap reports
    /// `earlier-decided` done with the sale's id, and the card was debited once.
    @Test func aSaleTornAtItsCommitIsDecidedAtTheNextTap() throws {
        let box = try DaemonHarness()
        defer { box.cleanUp() }
        try box.start()
        let events = try EventWatcher(box)
        defer { events.close() }
        try box.card(present: false)
        let charge = try box.charge("12.50", sale: "torn", watcher: events)
        // Counted from the card's arrival: the UID read, then the debit's APDUs; the 9th is the purse record write.
        #expect(try box.emulator.ctl("tear-during", "9", "--effect", "executed").status == 0)
        try box.card(present: true)
        let result = try charge.value()
        #expect(result.status == 7 && result.stderr.contains("undetermined"), "\(result.status) \(result.stdout) \(result.stderr)")
        try events.wait(for: "sale-undetermined") { $0["saleID"] as? String == "torn" }
        try EmulatorProcess.waitForPcscd(reader: box.emulator.readerName, present: false)
        // Nothing happens on its own: no retry while the card is away.
        Thread.sleep(forTimeInterval: 0.5)
        #expect(try box.journal("purse-debit").count == 1)
        let seen = events.events.count
        try box.card(present: true)
        let decided = try events.wait(for: "earlier-decided", after: seen)
        let decisions = decided["decisions"] as? [[String: Any]] ?? []
        #expect(decisions.count == 1 && decisions.first?["outcome"] as? String == "done", "\(decided)")
        #expect(decisions.first?["amountYuan"] as? String == "12.50" && decisions.first?["balanceAfterYuan"] as? String == "87.50", "\(decided)")
        #expect(decided["saleIDs"] as? [String] == ["torn"], "\(decided)")
        #expect(try events.wait(for: "balance", after: seen)["balanceYuan"] as? String == "87.50")
        let journal = try box.journal("purse-debit")
        #expect(journal.count == 1 && journal.first?.contains(" done") == true, "\(journal)")
        #expect(box.stop() == 0)
    }

    /// The card leaves during the write after the commit (the log entry): the sale is done (exit 0, the balance
    /// after it), with a warning; the money is not taken twice.
    @Test func aSaleTornAfterItsCommitIsReportedDone() throws {
        let box = try DaemonHarness()
        defer { box.cleanUp() }
        try box.start()
        let events = try EventWatcher(box)
        defer { events.close() }
        try box.card(present: false)
        let charge = try box.charge("12.50", sale: "late-tear", watcher: events)
        #expect(try box.emulator.ctl("tear-during", "13", "--effect", "old").status == 0)
        try box.card(present: true)
        let result = try charge.value()
        #expect(result.status == 0 && result.stdout.contains("balance 87.50 yuan"), "\(result.status) \(result.stdout) \(result.stderr)")
        let done = try events.wait(for: "sale-done") { $0["saleID"] as? String == "late-tear" }
        #expect((done["warnings"] as? [String])?.isEmpty == false, "a step after the commit failed: \(done)")
        let seen = events.events.count
        try box.card(present: true)
        #expect(try events.wait(for: "balance", after: seen)["balanceYuan"] as? String == "87.50")
        #expect(box.stop() == 0)
    }

    /// The card leaves before the commit (the value write is torn, left as it was): refused, nothing debited.
    @Test func aSaleTornBeforeItsCommitIsNotDone() throws {
        let box = try DaemonHarness()
        defer { box.cleanUp() }
        try box.start()
        let events = try EventWatcher(box)
        defer { events.close() }
        try box.card(present: false)
        let charge = try box.charge("12.50", sale: "early-tear", watcher: events)
        #expect(try box.emulator.ctl("tear-during", "4", "--effect", "old").status == 0)
        try box.card(present: true)
        let result = try charge.value()
        #expect(result.status == 5 || result.status == 7, "\(result.status) \(result.stdout) \(result.stderr)")
        #expect(!result.stdout.contains("paid"))
        let seen = events.events.count
        try box.card(present: true)
        #expect(try events.wait(for: "balance", after: seen)["balanceYuan"] as? String == "100.00")
        #expect(box.stop() == 0)
    }
}
