import Foundation
import Testing
import TestSupport

/// The unit file checked by systemd's own tools. Where they are missing (a CI image without the systemd package),
/// the tests are skipped with the reason; scripts/bootstrap installs `systemd` so CI has them.
@Suite(.enabled(if: tool("systemd-analyze") != nil, "systemd-analyze is not installed: run scripts/bootstrap (it installs systemd)"))
struct SystemdUnitTests {
    static let unit = packageRoot.appendingPathComponent("systemd/cardd.service").path
    static let maximumExposure = 1.5

    @Test func securityExposureIsAtMost1Point5() throws {
        let analyze = try #require(tool("systemd-analyze"))
        // --threshold is in tenths: exit 1 above it.
        let result = run(analyze, ["security", "--offline=true", "--threshold=\(Int(Self.maximumExposure * 10))", Self.unit])
        let output = result.stdout + result.stderr
        let match = try #require(output.firstMatch(of: /Overall exposure level for cardd\.service: ([0-9]+\.[0-9]+)/), "no score in: \(output)")
        let exposure = try #require(Double(match.output.1))
        print("cardd.service: systemd-analyze security exposure \(exposure)")
        #expect(exposure <= Self.maximumExposure, "\(output)")
        #expect(result.status == 0, "\(output)")
        // The directives the daemon's reachability depends on are there (a score can be reached by locking it out).
        let text = try String(contentsOfFile: Self.unit, encoding: .utf8)
        for line in ["Type=notify", "NotifyAccess=main", "WatchdogSec=30",
                     "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "IPAddressDeny=any", "DeviceAllow=char-gpiochip rw", "StateDirectory=onecard", "RuntimeDirectory=onecard",
                     "ConfigurationDirectory=onecard", "User=onecard", "SupplementaryGroups=gpio",
                     "ExecStart=/usr/local/bin/cardd --config /etc/onecard/cardd.json", "Wants=pcscd.socket"] {
            #expect(text.split(separator: "\n").contains { $0 == line }, "\(line) is missing from cardd.service")
        }
    }

    /// `systemd-analyze verify` checks that ExecStart's binary exists and is executable, and needs the units the
    /// unit refers to (sysinit.target, pcscd.socket, …). So: install into a temporary root (scripts/install --root,
    /// with the built binaries; cardctl stands in for cardd until it exists), copy the host's unit directory into that
    /// root, and verify the installed unit with --root: the unit's text as shipped, its binary at its real path.
    @Test func theInstalledUnitVerifiesClean() throws {
        let analyze = try #require(tool("systemd-analyze"))
        let hostUnits = ["/usr/lib/systemd/system", "/lib/systemd/system"].first { FileManager.default.fileExists(atPath: $0 + "/sysinit.target") }
        let units = try #require(hostUnits, "no systemd unit directory with sysinit.target on this machine")
        let directory = try TemporaryDirectory("onecard-verify")
        defer { directory.remove() }
        let root = directory.path + "/root"
        let installed = install(["--root", root, "--bin-dir", try stagedBinaries(in: directory)])
        try #require(installed.status == 0, "\(installed.stdout)\(installed.stderr)")
        try FileManager.default.createDirectory(atPath: root + "/usr/lib/systemd", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: units, toPath: root + "/usr/lib/systemd/system")

        let verified = run(analyze, ["verify", "--man=no", "--root=\(root)", "cardd.service"])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        #expect(verified.stderr.isEmpty && verified.stdout.isEmpty, "verify printed warnings: \(verified.stdout)\(verified.stderr)")

        // The check has teeth: without the binary the same verify fails.
        try FileManager.default.removeItem(atPath: root + "/usr/local/bin/cardd")
        let missing = run(analyze, ["verify", "--man=no", "--root=\(root)", "cardd.service"])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("/usr/local/bin/cardd"))
    }
}
