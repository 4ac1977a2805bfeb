import Foundation
import Testing
import TestSupport

/// A POS vendor's view of cardd: every way a sale can end, through `cardctl pos` and the event stream (issue 10,
/// items 3 and 6). Each test starts with the card on the reader (its first tap only shows the balance), takes it off,
/// arms the sale and puts the card back.
@Suite(.serialized) struct PosSaleTests {
    /// A started box whose card is off the reader, and its event watcher (close it, then clean the box up).
    func startedWithTheCardOff(load: String = "100") throws -> (DaemonHarness, EventWatcher) {
        let box = try DaemonHarness(load: load)
        do {
            try box.start()
            let events = try EventWatcher(box)
            do { try box.takeCard() } catch {
                events.close()
                throw error
            }
            return (box, events)
        } catch {
            box.cleanUp()
            throw error
        }
    }

    /// A card without the money: refused with the reason, exit 5, nothing debited.
    @Test func insufficientFundsIsRefusedWithTheReason() throws {
        let (box, events) = try startedWithTheCardOff(load: "10")
        defer { events.close(); box.cleanUp() }
        let charge = try box.charge("12.50", sale: "poor", watcher: events)
        try box.cardBack()
        let result = try charge.value()
        #expect(result.status == 5, "\(result.stderr)")
        #expect(result.stderr.contains("insufficient-funds"), "\(result.stderr)")
        let refused = try events.wait(for: "sale-refused") { $0["saleID"] as? String == "poor" }
        #expect((refused["reason"] as? [String: Any])?["code"] as? String == "insufficient-funds")
        #expect(try box.journal("purse-debit").filter { $0.contains("done") && !$0.contains("not-done") }.isEmpty)
        // The card still holds 10.00: the next tap shows it.
        let seen = events.events.count
        try box.retap()
        let balance = try events.wait(for: "balance", after: seen)
        #expect(balance["balanceYuan"] as? String == "10.00")
        #expect(box.stop() == 0)
    }

    /// Over the holder's per-transaction limit: `pin-required`, then a wrong PIN (asked again, tries left), then the
    /// right one pays the sale once.
    @Test func aSaleOverTheLimitAsksForThePIN() throws {
        let box = try DaemonHarness()
        defer { box.cleanUp() }
        #expect(try box.cardctl(["card", "set-pin", "--pin-stdin"] + box.office, stdin: "123456\n").status == 0)
        #expect(try box.cardctl(["card", "set-limits", "--per-transaction", "50.00", "--daily", "100.00"] + box.office).status == 0)
        try box.start()
        let events = try EventWatcher(box)
        defer { events.close() }
        try box.takeCard()
        let charge = try box.charge("60.00", sale: "big", watcher: events)
        try box.cardBack()
        let asked = try events.wait(for: "pin-required") { $0["saleID"] as? String == "big" }
        #expect(asked["card"] as? String == box.cardUID)
        let seen = events.events.count
        let wrong = try box.daemonCommand(["pos", "pin", "big", "--pin-stdin"], stdin: "654321\n")
        #expect(wrong.status == 0, "\(wrong.stderr)")
        let again = try events.wait(for: "pin-required", after: seen) { $0["saleID"] as? String == "big" }
        #expect(again["pinTriesLeft"] as? Int != nil, "the wrong PIN's tries left: \(again)")
        let right = try box.daemonCommand(["pos", "pin", "big", "--pin-stdin"], stdin: "123456\n")
        #expect(right.status == 0, "\(right.stderr)")
        let result = try charge.value()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("paid 60.00 yuan") && result.stdout.contains("balance 40.00 yuan"), "\(result.stdout)")
        #expect(try box.journal("purse-debit").count == 1)
        #expect(box.stop() == 0)
    }

    /// `pos cancel` ends an armed sale: exit 3, and the card that arrives afterwards is only read.
    @Test func aCancelledSaleDebitsNothing() throws {
        let (box, events) = try startedWithTheCardOff()
        defer { events.close(); box.cleanUp() }
        let charge = try box.charge("5.00", sale: "oops", watcher: events)
        let cancel = try box.daemonCommand(["pos", "cancel", "oops"])
        #expect(cancel.status == 0, "\(cancel.stderr)")
        let result = try charge.value()
        #expect(result.status == 3 && result.stderr.contains("cancelled"), "\(result.stderr)")
        // Cancelling it again: there is no such sale any more, and the cashier is told so.
        let twice = try box.daemonCommand(["pos", "cancel", "oops"])
        #expect(twice.status != 0 && twice.stderr.contains("unknown-sale"), "\(twice.status) \(twice.stderr)")
        let seen = events.events.count
        try box.cardBack()
        #expect(try events.wait(for: "balance", after: seen)["balanceYuan"] as? String == "100.00")
        #expect(try box.journal("purse-debit").isEmpty)
        #expect(box.stop() == 0)
    }

    /// A sale nobody pays times out (exit 3); the card arriving later is not charged for it.
    @Test func aTimedOutSaleDebitsNothing() throws {
        let (box, events) = try startedWithTheCardOff()
        defer { events.close(); box.cleanUp() }
        let charge = try box.charge("5.00", sale: "late", timeout: 1, watcher: events)
        let result = try charge.value()
        #expect(result.status == 3 && result.stderr.contains("timed out"), "\(result.stderr)")
        try events.wait(for: "sale-timed-out") { $0["saleID"] as? String == "late" }
        let seen = events.events.count
        try box.cardBack()
        #expect(try events.wait(for: "balance", after: seen)["balanceYuan"] as? String == "100.00")
        #expect(try box.journal("purse-debit").isEmpty)
        #expect(box.stop() == 0)
    }

    /// cardd killed while a sale is armed: the till hears "undetermined" (exit 7), never "failed" (exit 1), which a
    /// till reads as not paid and charges again (a technician's walk-through killed cardd mid-debit: exit 1, and the
    /// card had been debited).
    @Test func aDaemonGoneDuringAnArmedSaleIsUndeterminedToTheTill() throws {
        let (box, events) = try startedWithTheCardOff()
        defer { events.close(); box.cleanUp() }
        let charge = try box.charge("2.00", sale: "gone", watcher: events)
        box.kill9()
        let result = try charge.value()
        #expect(result.status == 7 && result.stderr.contains("undetermined: cardd went away during the sale gone"), "\(result.status) \(result.stderr)")
    }

    /// A second sale while one is open is rejected (with another id, or the same one); the open sale is untouched and
    /// its client still gets its result.
    @Test func aSecondArmIsRejected() throws {
        let (box, events) = try startedWithTheCardOff()
        defer { events.close(); box.cleanUp() }
        let first = try box.charge("2.00", sale: "first", watcher: events)
        let other = try box.daemonCommand(["pos", "charge", "3.00", "--sale-id", "second", "--timeout", "5"])
        #expect(other.status == 6 && other.stderr.contains("sale-already-armed"), "\(other.status) \(other.stderr)")
        let same = try box.daemonCommand(["pos", "charge", "3.00", "--sale-id", "first", "--timeout", "5"])
        #expect(same.status == 6 && same.stderr.contains("sale-already-armed"), "\(same.status) \(same.stderr)")
        // A PIN for a sale that asked for none: rejected, told to the sender only.
        let pin = try box.daemonCommand(["pos", "pin", "first", "--pin-stdin"], stdin: "123456\n")
        #expect(pin.status != 0 && pin.stderr.contains("pin-not-requested"), "\(pin.status) \(pin.stderr)")
        #expect(try box.status()["openSale"] as? String == "first")
        try box.cardBack()
        let result = try first.value()
        #expect(result.status == 0 && result.stdout.contains("paid 2.00 yuan"), "\(result.stdout)\(result.stderr)")
        #expect(try box.journal("purse-debit").count == 1)
        #expect(box.stop() == 0)
    }

    /// A fixed-price window covering now debits every arriving card its price, with no sale armed; a card left on
    /// the reader is not charged twice.
    @Test func aFixedPriceWindowDebitsEveryArrivingCard() throws {
        let box = try DaemonHarness(overrides: ["pos": ["windows": [["name": "all-day", "start": "00:00", "end": "24:00", "price": "3.50"]]],
                                                "timeZone": "UTC"])
        defer { box.cleanUp() }
        try box.start()
        let events = try EventWatcher(box)
        defer { events.close() }
        // The card was on the reader at start: charged once (wait for that tap to end before taking the card off).
        try box.waitForLastTap()
        #expect((try box.status()["lastTap"] as? [String: Any])?["result"] as? String == "debited 3.50, balance 96.50")
        var seen = events.events.count
        try box.retap()
        let second = try events.wait(for: "sale-done", after: seen)
        #expect(second["source"] as? String == "window all-day" && second["amountYuan"] as? String == "3.50", "\(second)")
        #expect(second["balanceYuan"] as? String == "93.00", "\(second)")
        seen = events.events.count
        Thread.sleep(forTimeInterval: 1)
        #expect(!events.names.dropFirst(seen).contains("sale-done"), "a card left on the reader is not charged again")
        seen = events.events.count
        try box.retap()
        let third = try events.wait(for: "sale-done", after: seen)
        #expect(third["source"] as? String == "window all-day")
        #expect(box.stop() == 0)
    }

    /// A tap with no sale and no window shows the balance (`cardctl daemon events --count`).
    @Test func aTapWithNoSaleShowsTheBalance() throws {
        let box = try DaemonHarness(load: "42.10")
        defer { box.cleanUp() }
        try box.start()
        try box.takeCard()
        let stream = Background { try box.daemonCommand(["daemon", "events", "--count", "2"], timeout: 20) }
        Thread.sleep(forTimeInterval: 0.5)
        try box.cardBack()
        let result = try stream.value()
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(lines.map { $0["event"] as? String } == ["card-arrived", "balance"], "\(result.stdout)")
        #expect(lines.last?["balanceYuan"] as? String == "42.10" && lines.last?["card"] as? String == box.cardUID)
        let status = try box.status()
        #expect((status["lastTap"] as? [String: Any])?["result"] as? String == "balance 42.10")
        #expect(box.stop() == 0)
    }

    /// The offline policy: with `offline.maxDebit` 5.00 a 12.50 sale is refused with its code, nothing written.
    @Test func theOfflinePolicyRefusesABigSale() throws {
        let box = try DaemonHarness(overrides: ["offline": ["maxDebit": "5.00"]])
        defer { box.cleanUp() }
        try box.start()
        let events = try EventWatcher(box)
        defer { events.close() }
        try box.takeCard()
        let charge = try box.charge("12.50", sale: "over", watcher: events)
        try box.cardBack()
        let result = try charge.value()
        #expect(result.status == 5 && result.stderr.contains("offline-amount-over-limit"), "\(result.stderr)")
        #expect(try box.journal("purse-debit").isEmpty)
        // A sale within the limit is paid.
        try box.takeCard()
        let small = try box.charge("4.00", sale: "small", watcher: events)
        try box.cardBack()
        #expect(try small.value().status == 0)
        #expect(box.stop() == 0)
    }

    /// A card put on the blacklist while cardd runs: refused, locked on the card (`card-locked`; the office sees it
    /// lost), never debited.
    @Test func aBlacklistedCardIsRefusedAndLocked() throws {
        let (box, events) = try startedWithTheCardOff()
        defer { events.close(); box.cleanUp() }
        let list = box.work + "/lost.csv"
        try "version,serial,uid,action,reason\n2,20260001,\(box.cardUID),add,reported lost\n".write(toFile: list, atomically: true, encoding: .utf8)
        let imported = try box.cardctl(["blacklist", "import", list, "--journal", box.storePath])
        #expect(imported.status == 0, "\(imported.stderr)")
        let charge = try box.charge("8.00", sale: "thief", watcher: events)
        try box.cardBack()
        let result = try charge.value()
        #expect(result.status == 5 && result.stderr.contains("blacklisted"), "\(result.stderr)")
        let locked = try events.wait(for: "card-locked")
        #expect(locked["status"] as? String == "lost" && locked["card"] as? String == box.cardUID)
        // Its next tap is refused again; nothing is ever debited.
        let seen = events.events.count
        try box.retap()
        try events.wait(for: "card-refused", after: seen)
        #expect(try box.journal("purse-debit").isEmpty)
        #expect(box.stop() == 0)
        let shown = try box.showCard()
        #expect(shown.contains("lost"), "\(shown)")
        #expect(shown.contains("100.00"), "\(shown)")
    }
}
