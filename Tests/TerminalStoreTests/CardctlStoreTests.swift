import CampusCard
import Foundation
import Testing
import TestSupport
@testable import TerminalStore

/// `cardctl journal` and `cardctl blacklist` as a technician runs them: output, files and exit statuses.
@Suite struct CardctlStoreTests {
    func cardctl(_ arguments: String...) throws -> (status: Int32, stdout: String, stderr: String) {
        TestSupport.run(try BuiltExecutable.path("cardctl"), arguments)
    }

    @Test func importCheckListAndExportAJournal() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let legacy = directory.path + "/cardctl-journal.jsonl"
        let journal = try FileTerminalJournal(path: legacy)
        try journal.record(intent(1, amount: 1_205))
        try journal.complete(terminalSequence: 1, outcome: .done(balanceAfter: 8_795, counterAfter: 6))
        try journal.record(intent(2))

        #expect(try cardctl("journal", "check", "--journal", directory.store).status == 6)  // no store yet: not created
        #expect(!FileManager.default.fileExists(atPath: directory.store))
        let imported = try cardctl("journal", "import", legacy, "--journal", directory.store)
        #expect(imported.status == 0 && imported.stdout.contains("imported 2 intents and 1 outcomes"), "\(imported)")
        let again = try cardctl("journal", "import", legacy, "--journal", directory.store)
        #expect(again.stdout.contains("imported 0 intents and 0 outcomes") && again.stdout.contains("3 already there"), "\(again)")
        // A file of other lines: each skipped, and the exit status says so (1), naming the first.
        let other = directory.path + "/not-a-journal.jsonl"
        try "{\"hello\": 1}\nplain text\n".write(toFile: other, atomically: true, encoding: .utf8)
        let refused = try cardctl("journal", "import", other, "--journal", directory.store)
        #expect(refused.status == 1 && refused.stderr.contains("2 lines") && refused.stderr.contains("line 1"), "\(refused)")

        let check = try cardctl("journal", "check", "--journal", directory.store, "--json")
        #expect(check.status == 0, "\(check)")
        let report = try JSONDecoder().decode(CheckSummary.self, from: Data(check.stdout.utf8))
        #expect(report.integrity == ["ok"] && report.schemaVersion == "v2" && report.synchronous == 2 && report.problems.isEmpty)

        let list = try cardctl("journal", "list", "--journal", directory.store, "--open")
        #expect(list.status == 0 && list.stdout.split(separator: "\n").count == 2 && list.stdout.contains("open"))

        let csv = directory.path + "/journal.csv"
        #expect(try cardctl("journal", "export", "--format", "csv", "--output", csv, "--journal", directory.store).status == 0)
        let text = try String(contentsOfFile: csv, encoding: .utf8)
        #expect(text.hasPrefix("sequence,terminal_id,kind,") && text.contains(",1205,12.05,"))
        #expect(try FileManager.default.attributesOfItem(atPath: csv)[.posixPermissions] as? Int == 0o600)
        let jsonl = try cardctl("journal", "export", "--format", "jsonl", "--journal", directory.store)
        #expect(jsonl.stdout.split(separator: "\n").count == 3)
    }

    /// Only what the tests read of `cardctl journal check --json`.
    struct CheckSummary: Decodable {
        var integrity: [String]
        var schemaVersion: String
        var synchronous: Int
        var problems: [String]
    }

    @Test func aCorruptStoreFailsTheCheckWithTheCardOfficeMessage() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try Data(repeating: 0x42, count: 10_000).write(to: URL(fileURLWithPath: directory.store))
        let result = try cardctl("journal", "check", "--journal", directory.store)
        #expect(result.status == 1)
        #expect(result.stderr.contains("is corrupt") && result.stderr.contains("cardd will not start on it"), "\(result.stderr)")
    }

    @Test func blacklistImportAppliesVersionsAndRefusesABadLineByNumber() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let file = directory.path + "/blacklist.csv"
        try """
            version,serial,uid,action,reason
            # the card office's list of 2026-11-30
            12,100234,0be7c401,add,reported lost
            12,100235,,add,"stolen, reported by holder"
            13,100234,,remove,found

            """.write(toFile: file, atomically: true, encoding: .utf8)
        let applied = try cardctl("blacklist", "import", file, "--journal", directory.store)
        #expect(applied.status == 0 && applied.stdout.contains("now version 13, 1 cards blacklisted"), "\(applied)")
        let store = try TerminalStore(path: directory.store)
        #expect(try store.blacklisted(cardUID: nil, serial: 100235)?.reason == "stolen, reported by holder")
        #expect(try store.blacklisted(cardUID: "0BE7C401", serial: nil) == nil)
        let listed = try cardctl("blacklist", "list", "--journal", directory.store)
        #expect(listed.stdout.contains("version 13") && listed.stdout.contains("100235"))

        try "version,serial,uid,action,reason\n14,1,,add,ok\n14,2,0BE7C4,add,short uid\n".write(toFile: file, atomically: true, encoding: .utf8)
        let bad = try cardctl("blacklist", "import", file, "--journal", directory.store)
        #expect(bad.status == 6)
        #expect(bad.stderr.contains("line 3") && bad.stderr.contains("nothing was applied"), "\(bad.stderr)")
        try "12,3,,add,too old\n".write(toFile: file, atomically: true, encoding: .utf8)
        let stale = try cardctl("blacklist", "import", file, "--journal", directory.store)
        #expect(stale.status == 6 && stale.stderr.contains("line 1") && stale.stderr.contains("older than the version 13"), "\(stale.stderr)")
        #expect(try store.blacklistStatus().version == 13 && store.blacklistStatus().count == 1)
    }
}
