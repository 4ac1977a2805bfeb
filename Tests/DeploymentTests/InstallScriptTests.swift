import Foundation
import Testing
import TestSupport

/// scripts/install into a temporary --root, with the built binaries (--bin-dir: no release build in the test).
@Suite struct InstallScriptTests {
    @Test func installsEverythingIntoARootAndKeepsAnExistingConfig() throws {
        let directory = try TemporaryDirectory("onecard-install")
        defer { directory.remove() }
        let root = directory.path + "/root"
        let bin = try stagedBinaries(in: directory)
        let first = install(["--root", root, "--bin-dir", bin])
        try #require(first.status == 0, "\(first.stdout)\(first.stderr)")
        // No live steps into a root: nothing ran systemctl or sysusers against this machine.
        #expect(first.stdout.contains("without live steps"))

        let expected: [(String, Int)] = [
            ("/usr/local/bin/cardctl", 0o755), ("/usr/local/bin/cardd", 0o755), ("/usr/local/bin/cardemu", 0o755),
            ("/etc/systemd/system/cardd.service", 0o644), ("/etc/sysusers.d/onecard.conf", 0o644),
            ("/etc/udev/rules.d/70-onecard-readers.rules", 0o644), ("/etc/udev/rules.d/60-onecard-gpio.rules", 0o644),
            ("/etc/modprobe.d/blacklist-pn533.conf", 0o644), ("/etc/onecard/cardd.json", 0o640),
        ]
        for (path, permissions) in expected {
            #expect(mode(of: root + path) == permissions, "\(path)")
        }
        // Binaries are copies (not links into the build directory), and the right ones.
        let attributes = try FileManager.default.attributesOfItem(atPath: root + "/usr/local/bin/cardctl")
        #expect(attributes[.type] as? FileAttributeType == .typeRegular)
        #expect(run(root + "/usr/local/bin/cardctl", ["--version"]).status == 0)
        #expect(FileManager.default.contentsEqual(atPath: root + "/etc/systemd/system/cardd.service",
                                                   andPath: packageRoot.appendingPathComponent("systemd/cardd.service").path))

        // A second run keeps the administrator's configuration.
        let edited = Data(#"{"terminal": "T-0042"}"#.utf8)
        try edited.write(to: URL(fileURLWithPath: root + "/etc/onecard/cardd.json"))
        let second = install(["--root", root, "--bin-dir", bin])
        try #require(second.status == 0, "\(second.stdout)\(second.stderr)")
        #expect(second.stdout.contains("/etc/onecard/cardd.json exists: kept"))
        #expect(FileManager.default.contents(atPath: root + "/etc/onecard/cardd.json") == edited)
    }

    @Test func thePrefixMovesTheBinariesAndTheUnitFollows() throws {
        let directory = try TemporaryDirectory("onecard-install")
        defer { directory.remove() }
        let root = directory.path + "/root"
        let result = install(["--prefix", "/opt/onecard", "--root", root, "--bin-dir", try stagedBinaries(in: directory)])
        try #require(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(FileManager.default.isExecutableFile(atPath: root + "/opt/onecard/bin/cardd"))
        #expect(!FileManager.default.fileExists(atPath: root + "/usr/local/bin/cardd"))
        let unit = try String(contentsOfFile: root + "/etc/systemd/system/cardd.service", encoding: .utf8)
        #expect(unit.contains("\nExecStart=/opt/onecard/bin/cardd --config /etc/onecard/cardd.json\n"))
    }

    @Test func missingBinariesAndBadArgumentsAreRefused() throws {
        let directory = try TemporaryDirectory("onecard-install")
        defer { directory.remove() }
        let empty = directory.path + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        let missing = install(["--root", directory.path + "/root", "--bin-dir", empty])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("cardctl is missing"))
        #expect(!FileManager.default.fileExists(atPath: directory.path + "/root/etc"))
        #expect(install(["--bogus"]).status == 64)
        #expect(install(["--prefix", "relative"]).status == 64)
    }

    /// The sysusers file, applied by the real systemd-sysusers to the temporary root: user onecard, groups onecard
    /// and gpio, onecard a member of gpio.
    @Test(.enabled(if: tool("systemd-sysusers") != nil, "systemd-sysusers is not installed: run scripts/bootstrap (it installs systemd)"))
    func sysusersCreatesTheUserAndItsGroups() throws {
        let sysusers = try #require(tool("systemd-sysusers"))
        let directory = try TemporaryDirectory("onecard-sysusers")
        defer { directory.remove() }
        let root = directory.path + "/root"
        let installed = install(["--root", root, "--bin-dir", try stagedBinaries(in: directory)])
        try #require(installed.status == 0, "\(installed.stdout)\(installed.stderr)")
        let result = run(sysusers, ["--root=\(root)"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let passwd = try String(contentsOfFile: root + "/etc/passwd", encoding: .utf8)
        let group = try String(contentsOfFile: root + "/etc/group", encoding: .utf8)
        let user = try #require(passwd.split(separator: "\n").first { $0.hasPrefix("onecard:") }).split(separator: ":", omittingEmptySubsequences: false)
        #expect(user[5] == "/var/lib/onecard")
        #expect(user[6] == "/usr/sbin/nologin")
        let uid = try #require(Int(user[2]))
        #expect(uid > 0 && uid < 1000, "a system user")
        #expect(group.split(separator: "\n").contains { $0.hasPrefix("onecard:") })
        let gpio = try #require(group.split(separator: "\n").first { $0.hasPrefix("gpio:") })
        #expect(gpio.split(separator: ":", omittingEmptySubsequences: false).last?.split(separator: ",").contains("onecard") == true)
    }
}
