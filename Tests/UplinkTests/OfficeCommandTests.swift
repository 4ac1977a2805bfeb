import CampusCard
import Foundation
import SettlementClient
import SettlementCore
import TestSupport
import Testing

/// The card office's `cardctl office` against a real settlementd: a disputed online load settled from the command
/// line, as an operator would after reading the card.
@Suite(.serialized) struct OfficeCommandTests {
    struct Prepare: Codable { var reference: String; var cardSerial: UInt32; var amount: Int; var balanceBefore: Int; var counterBefore: Int }
    struct Confirm: Codable { var balanceAfter: Int; var counterAfter: Int }

    func cardctl(_ settlement: SettlementProcess, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        run(try BuiltExecutable.path("cardctl"), ["office"] + arguments + ["--server", settlement.url, "--admin-key", settlement.adminKeyFile])
    }

    @Test func aDisputedLoadIsSettledWithLoadSettle() async throws {
        let settlement = try SettlementProcess()
        let office = try Office(settlement)
        defer { settlement.cleanUp(); office.close() }
        // Registered as a load station from the command line: the secret is stdout's one line.
        let added = try cardctl(settlement, ["terminal-add", "31", "--merchant", "office", "--loads"])
        #expect(added.status == 0 && added.stderr.contains("as a station"), "\(added)")
        let secretHex = added.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(secretHex.count == 64)
        let account = try await office.openAccount("Wang Fang", balance: 20_000)
        _ = try await office.issueCard(serial: 3101, uid: "04C1C2C3", account: account.id)
        let secret = stride(from: 0, to: secretHex.count, by: 2).compactMap {
            UInt8(secretHex.dropFirst($0).prefix(2), radix: 16)
        }
        let station = try SettlementClient(baseURL: settlement.url, key: .terminal(31), secret: secret)
        do {
            let _: LoadState = try await station.call("POST", "/v1/loads", body: Prepare(reference: "load-t31-s5", cardSerial: 3101, amount: 5_000,
                                                                                         balanceBefore: 100, counterBefore: 2))
            // The card shows another balance: the confirmation is refused and the load disputed.
            let _: LoadState = try await station.call("POST", "/v1/loads/load-t31-s5/confirm", body: Confirm(balanceAfter: 5_099, counterAfter: 3))
            Issue.record("a confirmation with other figures was taken")
        } catch {
            #expect(error.status == 409, "\(error.message)")
        }
        await station.shutdown()
        #expect(try await office.account(account.id).balance == 15_000)

        let flags = try cardctl(settlement, ["flags"])
        #expect(flags.status == 0 && flags.stdout.contains("load-mismatch") && flags.stdout.contains("T31-load-t31-s5"), "\(flags)")
        // A reference that would change the request's path is refused before anything is sent.
        #expect(try cardctl(settlement, ["load-settle", "T31-load/../x", "--credited", "--reason", "x"]).status == 64)
        let settled = try cardctl(settlement, ["load-settle", "T31-load-t31-s5", "--not-credited", "--reason", "the card shows 1.00"])
        #expect(settled.status == 0 && settled.stdout.contains("reversed"), "\(settled)")
        #expect(try await office.account(account.id).balance == 20_000)
        // The other decision now: refused (5), nothing moved; the same again: answered as it stands.
        let other = try cardctl(settlement, ["load-settle", "T31-load-t31-s5", "--credited", "--reason", "changed my mind"])
        #expect(other.status == 5 && other.stderr.split(separator: "\n").count == 1, "\(other)")
        let again = try cardctl(settlement, ["load-settle", "T31-load-t31-s5", "--not-credited", "--reason", "again", "--json"])
        let answer = try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as? [String: Any]
        #expect(again.status == 0 && answer?["phase"] as? String == "reversed", "\(again)")
        #expect(try await office.account(account.id).balance == 20_000)
        #expect(try cardctl(settlement, ["flags"]).stdout.contains("load-settled"))
    }

    @Test func aTerminalIsShownAndMadeALoadStationWithTerminal() async throws {
        let settlement = try SettlementProcess()
        let office = try Office(settlement)
        defer { settlement.cleanUp(); office.close() }
        let added = try cardctl(settlement, ["terminal-add", "32", "--merchant", "canteen-3"])
        #expect(added.status == 0 && !added.stderr.contains("station"), "\(added)")
        let shown = try cardctl(settlement, ["terminal", "32"])
        #expect(shown.status == 0 && shown.stdout == "terminal 32: canteen-3, enabled, not a station\n", "\(shown)")
        let allowed = try cardctl(settlement, ["terminal", "32", "--allow-loads"])
        #expect(allowed.status == 0 && allowed.stdout.contains("enabled, a station"), "\(allowed)")
        let json = try cardctl(settlement, ["terminal", "32", "--json"])
        let answer = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        #expect(answer?["loads"] as? Bool == true && answer?["secret"] == nil, "\(json)")
        #expect(try cardctl(settlement, ["terminal", "32", "--deny-loads"]).stdout.contains("not a station"))
        #expect(try cardctl(settlement, ["terminal", "32", "--disable"]).stdout.contains("disabled, not a station"))
        // Two changes at once, an id out of range, an unknown terminal.
        #expect(try cardctl(settlement, ["terminal", "32", "--enable", "--allow-loads"]).status == 64)
        #expect(try cardctl(settlement, ["terminal", "70000"]).status == 64)
        let unknown = try cardctl(settlement, ["terminal", "33"])
        #expect(unknown.status == 6 && unknown.stderr.split(separator: "\n").count == 1 && unknown.stderr.contains("no terminal 33"), "\(unknown)")
        // Each request's log line names its caller: verified, or the key a refused one claimed.
        let impostor = try SettlementClient(baseURL: settlement.url, key: .terminal(32), secret: Array(repeating: 7, count: 32))
        do {
            let _: LoadState = try await impostor.call("GET", "/v1/parameters", body: nil as Prepare?)
            Issue.record("a wrong secret was taken")
        } catch {
            #expect(error.status == 401)
        }
        await impostor.shutdown()
        let lines = settlement.log.split(separator: "\n")
        #expect(lines.contains { $0.contains("http.path=/v1/admin/terminals/32") && $0.contains("caller=admin:office") }, "\(settlement.log)")
        #expect(lines.contains { $0.contains("http.path=/v1/parameters") && $0.contains("http.status=401") && $0.contains("caller=terminal:32 (unverified)") })
    }
}
