import Foundation
import Testing
import TestSupport

/// The names the unit, the sysusers file and the udev rule must agree on (a typo in one leaves the daemon without its
/// GPIO chips, or systemd refusing to start it for an unknown group).
@Suite struct ConsistencyTests {
    static func text(_ path: String) throws -> String {
        try String(contentsOfFile: packageRoot.appendingPathComponent(path).path, encoding: .utf8)
    }

    /// `KEY=value` lines of a file (comments skipped).
    static func assignments(_ text: String, _ key: String) -> [String] {
        text.split(separator: "\n").filter { !$0.hasPrefix("#") && $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
    }

    @Test func userAndGroupsAgreeAcrossUnitSysusersAndUdev() throws {
        let unit = try Self.text("systemd/cardd.service")
        let sysusers = try Self.text("systemd/onecard.sysusers").split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.isEmpty }
            .map { $0.split(separator: " ").map(String.init) }
        let rule = try Self.text("udev/60-onecard-gpio.rules").split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.isEmpty }

        let user = try #require(Self.assignments(unit, "User").first)
        let group = try #require(Self.assignments(unit, "Group").first)
        let supplementary = Self.assignments(unit, "SupplementaryGroups").flatMap { $0.split(separator: " ").map(String.init) }
        #expect(sysusers.contains { $0.count >= 2 && $0[0] == "u" && $0[1] == user }, "sysusers creates the unit's User=")
        // A `u` line creates a group of the same name too.
        #expect(group == user || sysusers.contains { $0[0] == "g" && $0[1] == group })
        for extra in supplementary {
            #expect(sysusers.contains { $0.count >= 2 && $0[0] == "g" && $0[1] == extra }, "sysusers creates group \(extra)")
            #expect(sysusers.contains { $0.count >= 3 && $0[0] == "m" && $0[1] == user && $0[2] == extra }, "\(user) is a member of \(extra)")
        }
        // The udev rule gives the GPIO chips to a group the daemon has, readable and writable by it.
        #expect(rule.count == 1)
        let line = try #require(rule.first)
        let ruleGroup = try #require(line.firstMatch(of: /GROUP="([^"]+)"/)).output.1
        #expect(supplementary.contains(String(ruleGroup)))
        #expect(line.contains(#"SUBSYSTEM=="gpio""#) && line.contains(#"KERNEL=="gpiochip[0-9]*""#) && line.contains(#"MODE="0660""#))
        // And the unit lets the daemon open them.
        #expect(Self.assignments(unit, "DeviceAllow").contains("char-gpiochip rw"))
        #expect(Self.assignments(unit, "PrivateDevices").allSatisfy { $0 == "no" })
    }

    @Test func theControlSocketLivesInTheRuntimeDirectory() throws {
        let unit = try Self.text("systemd/cardd.service")
        let config = try JSONSerialization.jsonObject(with: Data(try Self.text("systemd/cardd.example.json").utf8)) as? [String: Any]
        let runtime = try #require(Self.assignments(unit, "RuntimeDirectory").first)
        #expect((config?["control"] as? [String: Any])?["socket"] as? String == "/run/\(runtime)/cardd.sock")
    }
}

/// cardd's hot-function list (Sources/cardd/hot-functions.order, the order lld lays its text out in) still names
/// cardd's functions. A stale list breaks nothing but memory: code that moved goes back to being spread over the text,
/// and ~7 MiB more of it becomes resident (HardwareNotes "cardd's memory"). The list is of a release build; a debug
/// build has the same names for our own modules' unspecialized functions (91 % of them at the list's making).
@Suite(.enabled(if: tool("nm") != nil, "nm (binutils) is not installed"))
struct HotFunctionListTests {
    @Test func theListStillNamesCarddsOwnFunctions() throws {
        let list = try String(contentsOfFile: packageRoot.appendingPathComponent("Sources/cardd/hot-functions.order").path, encoding: .utf8)
        let ownModules = ["CampusCard", "CardDaemon", "TerminalStore", "cardd", "DaemonSupport", "CardSession", "SettlementCore"]
            .map { "$s\($0.utf8.count)\($0)" }
        // Specializations (Tf…) and merged functions (Tm) exist in optimized builds only.
        let names = list.split(separator: "\n").map(String.init)
            .filter { name in ownModules.contains { name.hasPrefix($0) } && !name.contains("Tf") && !name.hasSuffix("Tm") }
        #expect(names.count > 300, "the list names \(names.count) of our own functions: rerun scripts/cardd-hot-functions")
        let symbols = run(try #require(tool("nm")), ["--defined-only", try BuiltExecutable.path("cardd")])
        #expect(symbols.status == 0, "\(symbols.stderr)")
        let defined = Set(symbols.stdout.split(separator: "\n").compactMap { $0.split(separator: " ").last.map(String.init) })
        let found = names.filter(defined.contains).count
        #expect(found * 100 >= names.count * 80,
                "\(found) of the \(names.count) own functions in Sources/cardd/hot-functions.order are still cardd's: the code moved on; rerun scripts/cardd-hot-functions")
    }
}
