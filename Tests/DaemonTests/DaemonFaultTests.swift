import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// cardd under faults (issue 10, item 9): pcscd killed and restarted, the card pulled at every APDU of a sale, the
/// store's disk full. Whatever happens: no transaction lost or duplicated, every open intent decided at the card's
/// next tap, the card never left half written, cardd keeps running.
@Suite(.serialized) struct DaemonFaultTests {
    static let initialFen = 100_00

    /// pcscd dies and comes back while cardd runs with a sale armed: `daemon status` shows it unreachable, then up;
    /// cardd does not exit; the sale armed before is paid after the restart (or refused cleanly), once.
    @Test(.enabled(if: PCSCDaemon.mayRestart(), "\(PCSCDaemon.notOursReason)"))
    func pcscdRestartWhileASaleIsArmed() throws {
        let box = try DaemonHarness()
        defer { box.cleanUp() }
        try box.start()
        let hand = CardHand(box)
        let watcher = try EventWatcher(box)
        defer { watcher.close() }
        try box.waitForLastTap()
        try hand.take()
        try box.waitForStatus { $0["pcscd"] as? String == "up" }
        let charge = Task.detached { try box.charge(amount: "1.00", saleID: "p-1", timeout: 120) }
        try box.waitForStatus { $0["openSale"] as? String == "p-1" }

        try PCSCDaemon.kill()
        try box.waitForStatus { $0["pcscd"] as? String == "unreachable" }
        #expect(box.process?.isRunning == true, "cardd exited when pcscd died: \(box.log.suffix(2000))")
        try PCSCDaemon.ensureRunning()
        try box.waitForStatus(timeout: 30) { $0["pcscd"] as? String == "up" }
        #expect(box.process?.isRunning == true)

        // The emulator reconnects to the new pcscd's vpcd on its own; then the card arrives.
        try EmulatorProcess.waitForPcscd(reader: box.emulator.readerName, present: false, timeout: 20)
        try hand.put()
        let sale = try awaitResult(charge, timeout: 140)
        let result = sale.result
        #expect(result == "sale-done" || result == "sale-refused", "the armed sale after the restart: \(sale.lines) \(box.log.suffix(3000))")
        #expect(box.process?.isRunning == true)
        try hand.take()
        try decideAndCheck(box, hand, watcher, expectDebited: result == "sale-done" ? 100 : nil)
        #expect(box.stop() == 0)
    }

    /// The card torn during APDU N of a sale (ACR122U profile), for every N of a sale (at least 1...12), one effect per
    /// N rotating through executed, old and garbled (every N and every effect covered); ONECARD_FULL_TEAR_MATRIX=1 runs
    /// all three effects at every N. Each sale ends done, refused or undetermined (or timed out / cancelled when the
    /// tear kept cardd from reading the card); the next tap decides it; after every case the card's balance is the load
    /// less the store's done debits and nothing is open.
    @Test func cardTornDuringEveryAPDUOfASale() throws {
        let effects = ["executed", "old", "garbled"]
        let full = ProcessInfo.processInfo.environment["ONECARD_FULL_TEAR_MATRIX"] == "1"
        try pullMatrix { apdus in
            (1...apdus).flatMap { n in
                (full ? effects : [effects[(n - 1) % effects.count]]).map { effect in
                    ("tear-during \(n) \(effect)", ["tear-during", "\(n)", "--effect", effect])
                }
            }
        }
    }

    /// The card removed between two APDUs of a sale (`tear-after N`: gone before APDU N+1), for every N of a sale.
    @Test func cardRemovedBetweenAPDUsOfASale() throws {
        try pullMatrix { apdus in (0...apdus).map { ("tear-after \($0)", ["tear-after", "\($0)"]) } }
    }

    /// Runs one sale per case with the case's tear armed before the card arrives (the APDUs counted from there: the
    /// reader probe, the UID, the reads, the writes), then the deciding tap and the checks. `cases` gets the number of
    /// APDUs of a clean sale, measured first.
    private func pullMatrix(_ cases: (Int) -> [(name: String, arguments: [String])]) throws {
        let began = Date()
        let box = try DaemonHarness()
        defer { box.cleanUp() }
        try box.start()
        let hand = CardHand(box)
        let watcher = try EventWatcher(box)
        defer { watcher.close() }
        try box.waitForLastTap()
        try hand.take()
        let before = try emulatorAPDUs(box)
        let clean = try sale(box, hand, watcher, id: "clean", tear: nil)
        #expect(clean == "sale-done", "the sale with no tear")
        let apdus = max(12, try emulatorAPDUs(box) - before)
        try decidingTap(box, hand, watcher, name: "clean")
        let all = cases(apdus)
        print("a sale takes \(apdus) APDUs from the card's arrival; \(all.count) cases")
        var results: [String: Int] = [:]
        for (index, tear) in all.enumerated() {
            let outcome = try sale(box, hand, watcher, id: "t-\(index)", tear: tear)
            results[outcome, default: 0] += 1
            // Timed out or cancelled: the tear hit the reader probe or the UID read, the card was never read (nothing
            // written).
            #expect(["sale-done", "sale-refused", "sale-undetermined", "sale-timed-out", "sale-cancelled"].contains(outcome), "\(tear.name): \(outcome)")
            try decidingTap(box, hand, watcher, name: tear.name)
            try checkStore(box, name: tear.name)
        }
        print("card pulled: \(all.count) cases in \(Int(Date().timeIntervalSince(began))) s: \(results.sorted { $0.key < $1.key })")
        try hand.putAndWait()
        try box.waitForLastTap()
        #expect(box.stop() == 0)
        let report = try box.cardReport()
        #expect(report.resolution == "consistent" && report.mac == "valid", "\(report)")
        let debited = try box.storedEntries().filter { $0.outcome == "done" && $0.kind == "purse-debit" }.reduce(0) { $0 + $1.amountFen }
        #expect(report.balanceFen == Self.initialFen - debited)
    }

    /// One sale of 0.10 with `tear` armed before the card arrives; returns how it ended. Leaves the card off the reader
    /// and no tear armed.
    @discardableResult
    private func sale(_ box: DaemonHarness, _ hand: CardHand, _ watcher: EventWatcher, id saleID: String,
                      tear: (name: String, arguments: [String])?) throws -> String {
        let charge = Background { try box.charge(amount: "0.10", saleID: saleID, timeout: 6) }
        try box.waitForStatus { $0["openSale"] as? String == saleID }
        if let tear {
            let armed = run(try BuiltExecutable.path("cardemu"), ["ctl", "--control", box.emulator.controlPath] + tear.arguments)
            #expect(armed.status == 0, "\(tear.name): \(armed.stderr)")
        }
        let seen = watcher.events.count
        try hand.put()
        var result = "none"
        var cancelled = false
        let deadline = Date().addingTimeInterval(45)
        while true {
            if let ended = charge.poll(timeout: 0.05) {
                do { result = try ended.get().result ?? "none" } catch { Issue.record("\(tear?.name ?? saleID): the sale: \(error)") }
                break
            }
            // The tear kept cardd from reading the card: no card will pay this sale; cancel it rather than wait.
            if !cancelled, watcher.events.dropFirst(seen).contains(where: { $0["event"] as? String == "card-unreadable" }) {
                _ = try? box.control(["command": "cancel", "saleID": saleID])
                cancelled = true
            }
            if Date() > deadline {
                Issue.record("\(tear?.name ?? saleID): the sale did not end within 45 s: \(watcher.names.suffix(10))")
                break
            }
        }
        try hand.disarmTear()
        try hand.take()
        return result
    }

    private func emulatorAPDUs(_ box: DaemonHarness) throws -> Int {
        let answer = try box.emulator.ctl("status", "--json").stdout
        guard let start = answer.firstIndex(of: "{"),
              let object = try JSONSerialization.jsonObject(with: Data(answer[start...].utf8)) as? [String: Any],
              let apdus = object["apdus"] as? Int else { throw TestSetupError("emulator status: \(answer)") }
        return apdus
    }

    /// The store's disk full: the sale is refused before any card write (balance and counter unchanged) with a message
    /// that says the disk is full and what to do; cardd keeps running, and sells again once space is freed.
    @Test func diskFullRefusesTheSaleBeforeAnyCardWrite() throws {
        let full = NSTemporaryDirectory() + "cardd-full-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: full, withIntermediateDirectories: true)
        let mounted = run("/bin/mount", ["-t", "tmpfs", "-o", "size=8m", "onecard-full", full])
        try #require(mounted.status == 0, "mount tmpfs (tests run as root in a private mount namespace): \(mounted.stderr)")
        defer {
            _ = run("/bin/umount", ["-l", full])
            try? FileManager.default.removeItem(atPath: full)
        }
        let store = full + "/cardd.sqlite"
        let box = try DaemonHarness(overrides: ["store": ["path": store]])
        defer { box.cleanUp() }
        let blacklist = box.work + "/blacklist-full.csv"
        try "version,serial,uid,action,reason\n1,99999999,0A0B0C0D,add,reported lost\n".write(toFile: blacklist, atomically: true, encoding: .utf8)
        #expect(try box.cardctl(["blacklist", "import", blacklist, "--journal", store]).status == 0)
        // The office reads the card before cardd runs (two PC/SC clients on one card reset it under each other).
        let before = try box.cardReport()
        try box.start()
        let hand = CardHand(box)
        try box.waitForLastTap()
        try hand.take()

        // Fill the file system up to the last byte.
        let filled = run("/bin/dd", ["if=/dev/zero", "of=\(full)/filler", "bs=64k"])
        #expect(filled.stderr.contains("No space left"), "\(filled.stderr)")
        let charge = Task.detached { try box.charge(amount: "1.00", saleID: "full-1") }
        try box.waitForStatus { $0["openSale"] as? String == "full-1" }
        try hand.put()
        let refused = try awaitResult(charge, timeout: 45)
        #expect(refused.result == "sale-refused", "\(refused.lines)")
        let message = refused.refusalMessage ?? ""
        #expect(message.contains("disk is full") && message.contains("free space"), "the refusal says why and what to do: \(message)")
        #expect(box.process?.isRunning == true, "cardd exited on a full disk: \(box.log.suffix(2000))")
        #expect((try? box.status())?["mode"] as? String == "pos", "cardd answers status on a full disk")
        try hand.take()

        // Space freed: the next sale is paid.
        try FileManager.default.removeItem(atPath: full + "/filler")
        let again = Task.detached { try box.charge(amount: "1.00", saleID: "full-2") }
        try box.waitForStatus { $0["openSale"] as? String == "full-2" }
        try hand.put()
        let paid = try awaitResult(again, timeout: 45)
        #expect(paid.result == "sale-done", "\(paid.lines)")
        #expect(box.stop() == 0)
        let after = try box.cardReport()
        #expect(after.balanceFen == before.balanceFen - 100, "only the sale after the space was freed is on the card")
        #expect(after.counter == before.counter + 1, "the refused sale wrote nothing: counter \(before.counter) → \(after.counter)")
        let entries = try box.storedEntries(path: store)
        #expect(entries.filter { $0.outcome == "done" }.count == 1 && !entries.contains { $0.outcome == "open" }, "\(entries)")
    }

    // MARK: Helpers

    /// Puts the card on the reader with no sale armed (a tap decides what is open) and waits for the tap's result;
    /// retries when the tap itself could not read the card. Leaves the card off the reader.
    private func decidingTap(_ box: DaemonHarness, _ hand: CardHand, _ watcher: EventWatcher, name: String) throws {
        let ends: Set<String> = ["balance", "card-refused", "card-locked", "card-unreadable"]
        for attempt in 1...3 {
            let seen = watcher.events.count
            try hand.put()
            let ended = try? waitForEvent(watcher, after: seen, among: ends, timeout: 10)
            var result = ended?["event"] as? String ?? "no tap result"
            if result == "balance" {
                // The balance is told once the earlier intents are decided: nothing open from here on.
                let open = (try box.status()["queue"] as? [String: Any])?["openIntents"] as? Int
                if open != 0 { result = "balance with \(open.map(String.init) ?? "?") intents open" }
            }
            try hand.take()
            if result == "balance" { return }
            if attempt == 3 { Issue.record("\(name): the deciding tap: \(result); events \(watcher.names.suffix(10))") }
        }
    }

    private func waitForEvent(_ watcher: EventWatcher, after index: Int, among names: Set<String>, timeout: TimeInterval) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let hit = watcher.events.dropFirst(index).first(where: { names.contains($0["event"] as? String ?? "") }) { return hit }
            Thread.sleep(forTimeInterval: 0.02)
        }
        throw TestSetupError("none of \(names.sorted()) within \(timeout) s; seen: \(watcher.names.suffix(10))")
    }

    /// The store against the card, without the office tools (the card is off the reader): nothing open, no counter twice,
    /// and cardd's last tap's balance equal to the load less the done debits.
    private func checkStore(_ box: DaemonHarness, name: String) throws {
        let entries = try box.storedEntries()
        let open = entries.filter { $0.outcome == "open" }
        #expect(open.isEmpty, "\(name): open after the next tap: \(open)")
        let done = entries.filter { $0.outcome == "done" }
        let counters = done.compactMap(\.counterAfter)
        #expect(Set(counters).count == counters.count, "\(name): two done records share a counter: \(counters)")
        let debited = done.filter { $0.kind == "purse-debit" }.reduce(0) { $0 + $1.amountFen }
        let tap = ((try box.status()["lastTap"] as? [String: Any])?["result"] as? String) ?? ""
        if let balance = fen(tap.replacingOccurrences(of: "balance ", with: "")) {
            #expect(balance == Self.initialFen - debited, "\(name): the card shows \(balance) fen, the store's done debits leave \(Self.initialFen - debited)")
        }
    }

    /// Taps with no sale, checks the store and the card: nothing open; the balance is the load less the done debits.
    private func decideAndCheck(_ box: DaemonHarness, _ hand: CardHand, _ watcher: EventWatcher, expectDebited: Int?) throws {
        try decidingTap(box, hand, watcher, name: "after the restart")
        try checkStore(box, name: "after the restart")
        let debited = try box.storedEntries().filter { $0.outcome == "done" && $0.kind == "purse-debit" }.reduce(0) { $0 + $1.amountFen }
        if let expectDebited { #expect(debited == expectDebited, "the sale is paid once") }
    }

    private func fen(_ yuan: String) -> Int? {
        let parts = yuan.split(separator: ".")
        guard parts.count == 2, let whole = Int(parts[0]), let cents = Int(parts[1]) else { return nil }
        return whole * 100 + cents
    }
}
