import Foundation
import Testing
import TestSupport

@Suite struct CardctlKeystoreTests {
    @Test func createShowAndRefusals() throws {
        let cardctl = try BuiltExecutable.path("cardctl")
        let path = NSTemporaryDirectory() + "ks-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let created = run(cardctl, ["keystore", "create", path, "--roles", "terminal,mac"])
        #expect(created.status == 0, "\(created.stderr)")
        #expect(created.stdout.contains("versions 1 (mac+terminal)"))
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let masters = text.matches(of: #/"([0-9A-F]{32})"/#).map { String($0.1) }
        #expect(masters.count == 2)
        let shown = run(cardctl, ["keystore", "show", path])
        #expect(shown.status == 0)
        for master in masters { #expect(!shown.stdout.contains(master) && !created.stdout.contains(master)) }
        #expect(run(cardctl, ["keystore", "create", path]).status == 6, "never overwrites")
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
        let open = run(cardctl, ["keystore", "show", path])
        #expect(open.status == 6 && open.stderr.contains("chmod 600"))
        #expect(run(cardctl, ["keystore", "create", path + ".2", "--roles", "loader"]).status == 6)
    }
}
