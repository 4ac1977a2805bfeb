import CardReader
import Foundation
import Testing
import TestSupport

/// Checks udev/ without hardware: the rules are parsed here, and `udevadm verify` (systemd 254+) runs too where it
/// exists; where it does not (Debian 12 has systemd 252) that test is reported skipped, not passed.
@Suite struct UdevRulesTests {
    let rulesPath = SampleCards.repositoryRoot.appendingPathComponent("udev/70-onecard-readers.rules").path
    let modprobePath = SampleCards.repositoryRoot.appendingPathComponent("udev/blacklist-pn533.conf").path

    /// KEY{attr}OP"value" pairs separated by commas, operators as udev(7) defines them.
    nonisolated(unsafe) static let pair = #/^\s*([A-Z_]+)(\{[A-Za-z0-9_]+\})?\s*(==|!=|=|\+=|-=|:=)\s*"([^"]*)"\s*$/#
    static let knownKeys: Set<String> = ["ACTION", "SUBSYSTEM", "ENV", "ATTRS", "GROUP", "MODE", "SYMLINK", "GOTO", "LABEL", "TAG"]

    @Test func everyRuleLineIsWellFormed() throws {
        let text = try String(contentsOfFile: rulesPath, encoding: .utf8)
        var ruleLines = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) where !line.isEmpty && !line.hasPrefix("#") {
            ruleLines += 1
            for part in line.split(separator: ",") {
                let match = try #require(try Self.pair.wholeMatch(in: String(part)), "malformed: \(part)")
                #expect(Self.knownKeys.contains(String(match.1)), "unknown key \(match.1)")
                if match.1 == "MODE" { #expect(match.4.count == 4 && Int(match.4, radix: 8) != nil) }
            }
        }
        #expect(ruleLines >= 6)
        // Every GOTO has its LABEL.
        let gotos = Set(text.matches(of: #/GOTO="([a-z_]+)"/#).map { String($0.1) })
        let labels = Set(text.matches(of: #/LABEL="([a-z_]+)"/#).map { String($0.1) })
        #expect(gotos.isSubset(of: labels))
    }

    @Test func rulesCoverExactlyTheProfilesReaders() throws {
        let text = try String(contentsOfFile: rulesPath, encoding: .utf8)
        let ids = Set(text.matches(of: #/ATTRS\{idVendor\}=="([0-9a-f]{4})", ATTRS\{idProduct\}=="([0-9a-f]{4})", ENV\{ONECARD_PROFILE\}="([a-z0-9]+)"/#)
            .map { "\($0.3) \($0.1):\($0.2)" })
        let expected = Set([ReaderProfile.acr122u, .acr1252u, .omnikey5422].map { "\($0.kind.rawValue) \($0.usbID!)" })
        #expect(ids == expected)
    }

    @Test func modprobeBlacklistKeepsPN533Off() throws {
        let text = try String(contentsOfFile: modprobePath, encoding: .utf8)
        var blacklisted: Set<String> = []
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let words = line.split(separator: " ")
            #expect(["blacklist", "install"].contains(words.first ?? ""), "modprobe.d line: \(line)")
            if words.first == "blacklist" { #expect(words.count == 2); blacklisted.insert(String(words[1])) }
        }
        #expect(blacklisted == ["pn533_usb", "pn533", "nfc"])
    }

    /// Whether this machine's udevadm has `verify` (systemd 254+).
    static var udevadmCanVerify: Bool { run("/usr/bin/env", ["udevadm", "verify", "--help"]).status == 0 }

    @Test(.enabled(if: UdevRulesTests.udevadmCanVerify, "this machine's udevadm has no `verify` (systemd < 254): only the parse above checks the rules"))
    func udevadmVerifyAcceptsTheRules() throws {
        let result = run("/usr/bin/env", ["udevadm", "verify", rulesPath])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
    }
}
