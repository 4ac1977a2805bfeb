import Foundation
import Testing
import TestSupport

/// 一密两限 through cardctl and pcscd (part of the serialized CardStackTests: one card on one port at a time).
extension CardStackTests {
    func cardctl(_ arguments: [String], stdin: String) throws -> (status: Int32, stdout: String, stderr: String) {
        run(try BuiltExecutable.path("cardctl"), arguments, stdin: stdin)
    }

    @Test func holderLimitsAndPINThroughCardctl() throws {
        let work = NSTemporaryDirectory() + "pin-campus-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let card = work + "/card.mfd"
        _ = FileManager.default.createFile(atPath: card, contents: Data(SampleCards.blank1K()))
        #expect(try cardctl(["keystore", "create", work + "/office.json"]).status == 0)
        #expect(try cardctl(["keystore", "export", work + "/office.json", work + "/pos.json"]).status == 0)
        let emulator = try EmulatorProcess(card: card)
        defer { emulator.terminate() }
        let office = ["--keystore", work + "/office.json", "--journal", work + "/office.sqlite", "--terminal-id", "1"]
        let pos = ["--keystore", work + "/pos.json", "--journal", work + "/pos.sqlite", "--terminal-id", "21"]
        #expect(try cardctl(["card", "issue", "--serial", "7", "--account", "8", "--type", "student"] + office).status == 0)
        #expect(try cardctl(["card", "load", "500"] + office).status == 0)
        // A card as issued has no PIN: over the default 50.00 it cannot be debited, whatever PIN is typed.
        let noPIN = try cardctl(["card", "debit", "50.01", "--pin", "123456"] + pos)
        #expect(noPIN.status == 5 && noPIN.stderr.contains("carries no PIN"), "\(noPIN.stderr)")
        #expect(try cardctl(["card", "set-pin"] + office).status == 6, "no terminal and no --pin-stdin: refused, nothing read from argv")
        let setPIN = try cardctl(["card", "set-pin", "--pin-stdin"] + office, stdin: "123456\n")
        #expect(setPIN.status == 0 && !setPIN.stdout.contains("123456"), "\(setPIN.stderr)")
        let limits = try cardctl(["card", "set-limits", "--per-transaction", "20.00", "--daily", "60.00"] + office)
        #expect(limits.status == 0 && limits.stdout.contains("20.00 yuan per transaction, 60.00 yuan a day"), "\(limits.stderr)")
        #expect(try cardctl(["card", "set-limits", "--per-transaction", "70.00", "--daily", "60.00"] + office).status == 6)
        // The POS applies the holder's limits: exactly 20.00 passes, 20.01 asks for the PIN.
        #expect(try cardctl(["card", "debit", "20.00"] + pos).status == 0)
        let required = try cardctl(["card", "debit", "20.01"] + pos)
        #expect(required.status == 5 && required.stderr.contains("ask for the PIN"), "\(required.stderr)")
        let wrong = try cardctl(["card", "debit", "20.01", "--pin-stdin"] + pos, stdin: "000000\n")
        #expect(wrong.status == 5 && wrong.stderr.contains("2 tries left") && !wrong.stderr.contains("000000"), "\(wrong.stderr)")
        let shown = try cardctl(["card", "show"] + office)
        #expect(shown.stdout.contains("limits    20.00 yuan per transaction, 60.00 yuan a day  PIN set, 2 tries left"), "\(shown.stdout)")
        let right = try cardctl(["card", "debit", "20.01", "--pin", "123456"] + pos)
        #expect(right.status == 0 && right.stdout.contains("balance 459.99 yuan"), "\(right.stdout)\(right.stderr)")
        #expect(try cardctl(["card", "debit", "1", "--pin", "1", "--pin-stdin"] + pos, stdin: "1\n").status == 64, "--pin and --pin-stdin together")
        for _ in 1...3 { _ = try cardctl(["card", "debit", "20.01", "--pin", "999999"] + pos) }
        let blocked = try cardctl(["card", "debit", "20.01", "--pin", "123456"] + pos)
        #expect(blocked.status == 5 && blocked.stderr.contains("the card office resets it"), "\(blocked.stderr)")
        let json = try cardctl(["card", "show", "--json"] + office)
        #expect(json.stdout.contains("\"pin\" : \"blocked (the card office resets it)\""), "\(json.stdout)")
        #expect(try cardctl(["card", "reset-pin-tries"] + office).status == 0)
        #expect(try cardctl(["card", "debit", "20.01", "--pin", "123456"] + pos).status == 0)
    }
}
