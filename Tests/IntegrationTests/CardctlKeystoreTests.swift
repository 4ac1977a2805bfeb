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

    /// The card office exports a POS keystore: the same terminal and MAC masters, no loader master, 0600.
    @Test func exportForATerminal() throws {
        let cardctl = try BuiltExecutable.path("cardctl")
        let office = NSTemporaryDirectory() + "office-\(UUID().uuidString).json", pos = office + ".pos"
        defer { [office, pos].forEach { try? FileManager.default.removeItem(atPath: $0) } }
        #expect(run(cardctl, ["keystore", "create", office]).status == 0)
        #expect(run(cardctl, ["keystore", "rotate", office]).status == 0)
        let exported = run(cardctl, ["keystore", "export", office, pos])
        #expect(exported.status == 0, "\(exported.stderr)")
        #expect(exported.stdout.contains("versions 1 (mac+terminal), 2 (mac+terminal)"), "\(exported.stdout)")
        #expect(try FileManager.default.attributesOfItem(atPath: pos)[.posixPermissions] as? Int == 0o600)
        let masters = { (path: String) in try String(contentsOfFile: path, encoding: .utf8).matches(of: #/"([0-9A-F]{32})"/#).map { String($0.1) } }
        let officeMasters = try masters(office), posMasters = try masters(pos)
        #expect(posMasters.count == 4 && officeMasters.count == 6 && Set(posMasters).isSubset(of: Set(officeMasters)))
        for master in officeMasters { #expect(!exported.stdout.contains(master) && !exported.stderr.contains(master)) }
        #expect(run(cardctl, ["keystore", "export", office, pos]).status == 6, "never overwrites")
        let noTerminal = run(cardctl, ["keystore", "export", office, pos + ".2", "--roles", "loader,mac"])
        #expect(noTerminal.status == 6 && noTerminal.stderr.contains("terminal and mac"))
        let fromPOS = run(cardctl, ["keystore", "export", pos, pos + ".3", "--roles", "terminal,loader,mac"])
        #expect(fromPOS.status == 6 && fromPOS.stderr.contains("no loader master"), "\(fromPOS.stderr)")
        #expect(!FileManager.default.fileExists(atPath: pos + ".3"))
    }
}
