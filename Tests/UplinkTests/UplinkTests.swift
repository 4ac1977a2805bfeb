import CampusCard
import Foundation
import SettlementClient
import SettlementCore
import TestSupport
import Testing

/// cardd's uplink through the real stack: settlementd (SQLite) on loopback, cardd behind pcscd with the emulator,
/// the office's admin calls through the signed client.
@Suite(.serialized) struct UplinkTests {
    static let serial: UInt32 = 20_260_001

    /// A settlementd with terminal 21 registered, an account with `balance` and the harness's card issued to it; a
    /// box online to it.
    func world(mode: String = "pos", balance: Fen = 50_000) async throws -> (SettlementProcess, Office, DaemonHarness, Account) {
        let settlement = try SettlementProcess()
        let office = try Office(settlement)
        var box: DaemonHarness?
        do {
            let secret = try await office.registerTerminal(21, merchant: "canteen-1", loads: mode == "load")
            let account = try await office.openAccount("Li Hua", balance: balance)
            _ = try await office.issueCard(serial: Self.serial, uid: "04A1B2C3", account: account.id)
            box = try DaemonHarness.online(url: settlement.url, secret: secret, mode: mode)
            try box!.start()
            try box!.waitForStatus("a first successful pass") { (($0["uplink"] as? [String: Any])?["lastSuccessAt"]) != nil }
            return (settlement, office, box!, account)
        } catch {
            box?.cleanUp()
            settlement.cleanUp()
            office.close()
            throw error
        }
    }

    @Test func salesAreUploadedOnceAndTheLostCardIsBlacklistedAndLocked() async throws {
        let (settlement, office, box, _) = try await world()
        defer { box.cleanUp(); settlement.cleanUp(); office.close() }

        for amount in ["12.50", "3.00"] {
            async let paid = onThread { try box.daemonCommand(["pos", "charge", amount], timeout: 60) }
            try await onThread { try Self.waitForArmedSale(box); try box.tap() }
            let result = try await paid
            #expect(result.status == 0, "\(result.stderr)")
        }
        let sync = try box.sync()
        #expect(sync.status == 0, "\(sync.stderr)")
        #expect(try box.unacknowledged() == 0)
        // A second pass sends nothing again.
        #expect(try box.sync().answer["sent"] as? Int == 0)

        let entries = try await office.statement(Self.serial)
        let purse = entries.filter { $0.account == "purse:\(Self.serial)" }
        #expect(purse.map(\.amount.rawValue).sorted() == [-1_250, -300], "\(entries)")
        let today = try await office.daily(businessDay()).filter { $0.merchant == "canteen-1" && $0.terminalID == nil }
        #expect(today.first?.count == 2 && today.first?.total == 1_550, "\(today)")

        // Reported lost at the office: the next pass brings the blacklist; the next tap is refused and locks the card.
        let version = try await office.reportLost(Self.serial)
        let pulled = try box.sync()
        #expect(pulled.answer["blacklistVersion"] as? Int == Int(version), "\(pulled.answer)")
        async let refused = onThread { try box.daemonCommand(["pos", "charge", "1.00"], timeout: 60) }
        try await onThread { try Self.waitForArmedSale(box); try box.tap() }
        let answer = try await refused
        #expect(answer.status == 5 && answer.stderr.contains("blacklist"), "\(answer)")
        #expect(try box.cardShown().lowercased().contains("lost"))
        #expect(try box.journal("purse-debit").count == 2)
    }

    /// The tap must come after `cardctl pos charge|load` armed its sale: a fixed pause was too short on a loaded machine.
    static func waitForArmedSale(_ box: DaemonHarness) throws {
        _ = try box.waitForStatus { $0["openSale"] as? String != nil }
    }

    @Test func salesTakenWhileTheServiceIsDownAreUploadedWhenItComesBack() async throws {
        let (settlement, office, box, _) = try await world()
        defer { box.cleanUp(); settlement.cleanUp(); office.close() }
        settlement.stop()
        for _ in 0..<3 {
            async let paid = onThread { try box.daemonCommand(["pos", "charge", "2.00"], timeout: 60) }
            try await onThread { try Self.waitForArmedSale(box); try box.tap() }
            let result = try await paid
            #expect(result.status == 0, "\(result.stderr)\(result.stdout)\n\(box.log.suffix(2_000))")
        }
        let failed = try box.sync()
        #expect(failed.status != 0 && failed.stderr.contains("sync"), "\(failed)")
        #expect(try box.unacknowledged() == 3)
        let status = try box.status()
        #expect(((status["uplink"] as? [String: Any])?["lastError"] as? String)?.contains("cannot reach") == true, "\(status)")

        try settlement.start()
        try box.waitForStatus("the queue uploaded after the service came back") { status in
            (status["queue"] as? [String: Any])?["unacknowledged"] as? Int == 0
        }
        let purse = try await office.statement(Self.serial).filter { $0.account == "purse:\(Self.serial)" }
        #expect(purse.count == 3 && purse.allSatisfy { $0.amount == -200 }, "\(purse)")
    }

    @Test func aLoadStationLoadsTheCardFromTheAccount() async throws {
        let (settlement, office, box, account) = try await world(mode: "load", balance: 20_000)
        defer { box.cleanUp(); settlement.cleanUp(); office.close() }
        async let loaded = onThread { try box.daemonCommand(["pos", "load", "50.00"], timeout: 60) }
        try await onThread { try Self.waitForArmedSale(box); try box.tap() }
        let result = try await loaded
        #expect(result.status == 0 && result.stdout.contains("loaded 50.00"), "\(result)")
        #expect(try box.cardShown().contains("150.00"))
        #expect(try await office.account(account.id).balance == 15_000)
        _ = try box.sync()
        // The uploaded purse-load record is the same money as the confirmation: booked once.
        let purse = try await office.statement(Self.serial).filter { $0.account == "purse:\(Self.serial)" }
        #expect(purse.map(\.amount.rawValue) == [5_000], "\(purse)")

        // More than the account holds: refused by the service before the card is written.
        async let refused = onThread { try box.daemonCommand(["pos", "load", "200.00"], timeout: 60) }
        try await onThread { try Self.waitForArmedSale(box); try box.tap() }
        let answer = try await refused
        #expect(answer.status == 5, "\(answer)")
        #expect(try box.cardShown().contains("150.00"))
        #expect(try await office.account(account.id).balance == 15_000)

        // No longer a load station: the service refuses the prepare, the box says why, the card is not written.
        struct Terminal: Codable { var loads: Bool }
        let denied: Terminal = try await office.client.call("POST", "/v1/admin/terminals/21/deny-loads", body: nil as Terminal?)
        #expect(!denied.loads)
        async let notStation = onThread { try box.daemonCommand(["pos", "load", "10.00"], timeout: 60) }
        try await onThread { try Self.waitForArmedSale(box); try box.tap() }
        let refusal = try await notStation
        #expect(refusal.status == 5 && (refusal.stdout + refusal.stderr).contains("no station"), "\(refusal)")
        #expect(try box.cardShown().contains("150.00"))
        #expect(try await office.account(account.id).balance == 15_000)
    }
}
