import Foundation
import Testing
import TestSupport

/// cardd as a water controller (simulated valve and meter) and as a settlement station (issue 10, item 7).
@Suite(.serialized) struct WaterDaemonTests {
    /// A box whose card is off the reader once cardd is ready (its start-up session, if any, closed).
    func waterBox(unitPrice: String = "0.05") throws -> (DaemonHarness, EventWatcher) {
        let box = try DaemonHarness(mode: "water", water: true, overrides: ["water": ["unitPrice": unitPrice]])
        try checked(box.emulator.ctl("remove"))  // no session at start-up: the wallet stays full (10.00)
        try box.start()
        let events = try EventWatcher(box)
        #expect(try box.status()["valve"] as? String == "closed")
        return (box, events)
    }

    /// The valve opens only after the first unit is paid; meter pulses debit the next unit before the paid water
    /// runs out; the card leaving closes the valve.
    @Test func aTapPaysBeforeTheValveOpens() throws {
        let (box, events) = try waterBox()
        defer { box.cleanUp(); events.close() }
        try box.cardBack()
        try events.wait(for: "valve-opened")
        let names = events.names
        let debited = try #require(names.firstIndex(of: "water-unit-debited"))
        #expect(debited < names.firstIndex(of: "valve-opened")!, "\(names)")
        let first = try events.wait(for: "water-unit-debited")
        #expect(first["unit"] as? Int == 1 && first["balanceYuan"] as? String == "9.95", "\(first)")
        #expect(try box.status()["valve"] as? String == "open")
        // 10 pulses a unit, the next debited when 3 or fewer paid pulses remain: 7 pulses ask for unit 2.
        let seen = events.events.count
        #expect(try box.daemonCommand(["meter", "7"]).status == 0)
        let second = try events.wait(for: "water-unit-debited", after: seen)
        #expect(second["unit"] as? Int == 2 && second["balanceYuan"] as? String == "9.90", "\(second)")
        #expect(!events.names.dropFirst(seen).contains("valve-closed"), "paid ahead: the water never stops")
        #expect(try box.status()["valve"] as? String == "open")
        try box.takeCard()
        let closed = try events.wait(for: "valve-closed", after: seen)
        #expect(closed["status"] as? String == "card-left")
        let ended = try events.wait(for: "water-session-ended", after: seen)
        #expect(ended["units"] as? Int == 2, "\(ended)")
        #expect(try box.status()["valve"] as? String == "closed")
        #expect(try box.journal("water-debit").count == 2)
        #expect(box.stop() == 0)
    }

    /// A leak (the meter counting with the valve closed) latches a fault that outlives a restart, and only
    /// `cardctl daemon clear-fault` clears it (a technician's walk-through restarted cardd and the valve opened).
    @Test func aLatchedLeakOutlivesARestartUntilClearedByTheOperator() throws {
        let (box, events) = try waterBox()
        defer { box.cleanUp(); events.close() }
        #expect(try box.daemonCommand(["meter", "50"]).status == 0)
        let latched = try events.wait(for: "fault-latched")
        let message = try #require(latched["message"] as? String)
        #expect(try box.status()["fault"] as? String == message)
        #expect(box.stop() == 0)
        try box.start()
        #expect(try box.status()["fault"] as? String == message, "the restart cleared the fault")
        let after = try EventWatcher(box)
        defer { after.close() }
        try box.cardBack()
        let refused = try after.wait(for: "card-refused")
        #expect((refused["reason"] as? [String: Any])?["code"] as? String == "out-of-service", "\(refused)")
        #expect(try box.status()["valve"] as? String == "closed")
        try box.takeCard()
        let cleared = try box.daemonCommand(["daemon", "clear-fault"])
        #expect(cleared.status == 0 && cleared.stdout.contains("fault cleared"), "\(cleared.status) \(cleared.stderr)")
        #expect(try box.status()["fault"] == nil)
        #expect(box.stop() == 0)
        try box.start()
        #expect(try box.status()["fault"] == nil, "a cleared fault came back")
        #expect(box.stop() == 0)
    }

    /// A wallet that cannot pay the next unit: the paid rest runs out, then the valve closes (`wallet-empty`).
    @Test func anEmptyWalletClosesTheValve() throws {
        let (box, events) = try waterBox(unitPrice: "4.00")
        defer { box.cleanUp(); events.close() }
        try box.cardBack()
        try events.wait(for: "valve-opened")
        #expect(try box.daemonCommand(["meter", "7"]).status == 0)
        try events.wait(for: "water-unit-debited") { $0["unit"] as? Int == 2 }  // 10.00 - 2 × 4.00 = 2.00 left
        #expect(try box.daemonCommand(["meter", "10"]).status == 0)  // unit 3 asked for: 2.00 cannot pay it
        Thread.sleep(forTimeInterval: 0.5)
        #expect(try box.status()["valve"] as? String == "open", "the paid rest still runs")
        #expect(try box.daemonCommand(["meter", "3"]).status == 0)
        let closed = try events.wait(for: "valve-closed")
        #expect(closed["status"] as? String == "wallet-empty", "\(closed)")
        #expect(try box.journal("water-debit").count == 2)
        #expect(box.stop() == 0)
    }

    /// SIGTERM during a session: the valve closes and cardd exits 0.
    @Test func stoppingDuringASessionClosesTheValve() throws {
        let (box, events) = try waterBox()
        defer { box.cleanUp(); events.close() }
        try box.cardBack()
        try events.wait(for: "valve-opened")
        #expect(try box.status()["valve"] as? String == "open")
        #expect(box.stop() == 0, "\(box.log)")
        #expect(box.log.contains("\"event\":\"valve-closed\"") && box.log.contains("\"status\":\"stopped\""), "\(box.log)")
    }

    /// A settlement station settles and refills the water wallet once per presence of the card.
    @Test func aSettlementStationSettlesOncePerPresence() throws {
        let keys = NSTemporaryDirectory() + "settle-keys-\(UUID().uuidString.prefix(8)).json"
        let box = try DaemonHarness(mode: "settle", water: true, overrides: ["keystore": keys])
        defer { box.cleanUp(); try? FileManager.default.removeItem(atPath: keys) }
        try checked(box.cardctl(["keystore", "export", box.officeKeystore, keys, "--roles", "terminal,loader,mac"]))
        try checked(box.emulator.ctl("remove"))
        try box.start()
        let events = try EventWatcher(box)
        defer { events.close() }
        try box.cardBack()
        let settled = try events.wait(for: "water-settled")
        #expect(settled["card"] as? String == box.cardUID && settled["balanceYuan"] as? String == "10.00", "\(settled)")
        #expect(settled["refillYuan"] != nil && settled["consumptionYuan"] != nil)
        Thread.sleep(forTimeInterval: 1)
        #expect(events.names.filter { $0 == "water-settled" }.count == 1, "once per presence: \(events.names)")
        let seen = events.events.count
        try box.retap()
        try events.wait(for: "water-settled", after: seen)
        #expect(box.stop() == 0)
    }

    /// A settlement station given a terminal's keystore (no loader master) is refused at start, naming the key,
    /// instead of refusing every card at run time.
    @Test func aSettlementStationWithoutTheLoaderKeyDoesNotStart() throws {
        let box = try DaemonHarness(mode: "settle")
        defer { box.cleanUp() }
        for arguments in [["--config", box.configPath], ["--config", box.configPath, "--check-config"]] {
            let result = try runCardd(arguments)
            #expect(result.status == 78 && result.stderr.contains("keystore") && result.stderr.contains("loader"), "\(result.status) \(result.stderr)")
        }
    }
}
