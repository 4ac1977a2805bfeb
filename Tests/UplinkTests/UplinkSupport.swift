import CampusCard
import Foundation
import SettlementClient
import SettlementCore
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The card office's side of the uplink tests: the admin API of a test settlementd, through the signed client.
struct Office {
    let client: SettlementClient

    init(_ settlement: SettlementProcess) throws {
        client = try SettlementClient(baseURL: settlement.url, key: .admin("office"), secret: settlement.adminSecret)
    }

    /// Ends the client (AsyncHTTPClient traps on a client dropped without shutdown); the task keeps it alive until then.
    func close() {
        let client = client
        Task { await client.shutdown() }
    }

    struct TerminalRegister: Codable { var id: Int64; var merchant: String; var loads: Bool }
    struct RegisteredTerminal: Codable { var id: UInt16; var merchant: String; var enabled: Bool; var loads: Bool; var secret: String? }
    struct AccountOpen: Codable { var name: String; var initialBalance: Int }
    struct CardIssue: Codable { var serial: UInt32; var uid: String; var accountID: Int64 }
    struct StatusChange: Codable { var reason: String? }
    struct StatusChanged: Codable { var blacklistVersion: Int64 }
    struct Statement: Codable { var serial: UInt32; var entries: [LedgerEntry] }
    struct Daily: Codable { var day: String; var totals: [DailyTotal] }

    /// Registers a terminal (`loads`: a load station); returns its secret (hex), shown only now.
    func registerTerminal(_ id: UInt16, merchant: String, loads: Bool = false) async throws -> String {
        let registered: RegisteredTerminal = try await client.call("POST", "/v1/admin/terminals",
                                                                   body: TerminalRegister(id: Int64(id), merchant: merchant, loads: loads))
        guard let secret = registered.secret else { throw TestSetupError("the terminal registration showed no secret") }
        return secret
    }

    func openAccount(_ name: String, balance: Fen) async throws -> Account {
        try await client.call("POST", "/v1/admin/accounts", body: AccountOpen(name: name, initialBalance: balance.rawValue))
    }

    func account(_ id: Int64) async throws -> Account {
        try await client.call("GET", "/v1/admin/accounts/\(id)", body: nil as StatusChange?)
    }

    func issueCard(serial: UInt32, uid: String, account: Int64) async throws -> Card {
        try await client.call("POST", "/v1/admin/cards", body: CardIssue(serial: serial, uid: uid, accountID: account))
    }

    func card(_ serial: UInt32) async throws -> Card {
        try await client.call("GET", "/v1/admin/cards/\(serial)", body: nil as StatusChange?)
    }

    func reportLost(_ serial: UInt32) async throws -> Int64 {
        let changed: StatusChanged = try await client.call("POST", "/v1/admin/cards/\(serial)/lost", body: StatusChange(reason: "reported lost at the office"))
        return changed.blacklistVersion
    }

    func statement(_ serial: UInt32) async throws -> [LedgerEntry] {
        let statement: Statement = try await client.call("GET", "/v1/admin/reports/cards/\(serial)/statement", body: nil as StatusChange?)
        return statement.entries
    }

    struct FlagList: Codable { var flags: [OperatorFlag] }

    func flags() async throws -> [OperatorFlag] {
        let list: FlagList = try await client.call("GET", "/v1/admin/reports/flags?limit=1000", body: nil as StatusChange?)
        return list.flags
    }

    func daily(_ day: String) async throws -> [DailyTotal] {
        let report: Daily = try await client.call("GET", "/v1/admin/reports/daily?day=\(day)", body: nil as StatusChange?)
        return report.totals
    }
}

extension DaemonHarness {
    /// A box that uploads to `url` as terminal 21 with `secret` (hex), passes every `interval` seconds.
    static func online(url: String, secret: String, mode: String = "pos", load: String = "100", extra: [String: Any] = [:]) throws -> DaemonHarness {
        let secretFile = NSTemporaryDirectory() + "uplink-\(UUID().uuidString.prefix(8)).secret"
        try secret.write(toFile: secretFile, atomically: true, encoding: .utf8)
        chmod(secretFile, 0o600)
        var uplink: [String: Any] = ["url": url, "secretFile": secretFile, "intervalSeconds": 1, "maxBackoffSeconds": 2, "timeoutSeconds": 10]
        uplink.merge(extra) { $1 }
        // A load station writes the purse with key B: its keystore carries the loader master.
        let keys = NSTemporaryDirectory() + "uplink-keys-\(UUID().uuidString.prefix(8)).json"
        let box = try DaemonHarness(mode: mode, load: load, localBlacklist: false,
                                    overrides: mode == "load" ? ["uplink": uplink, "keystore": keys] : ["uplink": uplink])
        if mode == "load" {
            let export = try box.cardctl(["keystore", "export", box.officeKeystore, keys, "--roles", "terminal,loader,mac"])
            guard export.status == 0 else { throw TestSetupError("keystore export: \(export.stderr)") }
        }
        // The card starts off the reader: each test taps it.
        let removed = try box.emulator.ctl("remove")
        guard removed.status == 0 else { throw TestSetupError("remove: \(removed.stderr)") }
        return box
    }

    /// `cardctl daemon sync --json` as a dictionary (exit status, the answer).
    func sync() throws -> (status: Int32, answer: [String: Any], stderr: String) {
        let result = try daemonCommand(["daemon", "sync", "--json"], timeout: 120)
        let answer = (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any] ?? [:]
        return (result.status, answer, result.stderr)
    }

    /// Waits until `condition` holds on the daemon's status (checked every 100 ms).
    func waitForStatus(timeout: TimeInterval = 60, _ what: String, _ condition: ([String: Any]) -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let status = try? status(), condition(status) { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw TestSetupError("cardd's status never showed \(what) within \(Int(timeout)) s: \((try? status()) ?? [:])\n\(log)")
    }

    /// `cardctl card show` with the card put on the reader for it (then taken off again).
    func cardShown() throws -> String {
        try card(present: true)
        defer { try? card(present: false); Thread.sleep(forTimeInterval: 1) }
        return try showCard()
    }

    func unacknowledged() throws -> Int {
        ((try status())["queue"] as? [String: Any])?["unacknowledged"] as? Int ?? -1
    }

    /// One tap: the card comes and goes (pcscd saw both).
    func tap() throws {
        try card(present: true)
        try card(present: false)
        Thread.sleep(forTimeInterval: 1)  // a card back within ~1 s is missed through vpcd (HardwareNotes)
    }
}

/// The day of a date as the service's reports name it (UTC+8).
func businessDay(_ date: Date = Date()) -> String {
    var calendar = Calendar(identifier: .gregorian)
    calendar.timeZone = TimeZone(secondsFromGMT: 8 * 3600)!
    let parts = calendar.dateComponents([.year, .month, .day], from: date)
    return String(format: "%04d-%02d-%02d", parts.year!, parts.month!, parts.day!)
}
