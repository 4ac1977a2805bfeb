import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Bad input to cardctl, refused before any reader is opened: one line on stderr saying what is wrong, why, and what
/// to do; never ArgumentParser's "Missing expected argument" for a negative number, never a raw Swift error.
@Suite struct CardctlInputTests {
    func cardctl(_ arguments: [String], timeout: TimeInterval = 60) throws -> (status: Int32, stdout: String, stderr: String) {
        run(try BuiltExecutable.path("cardctl"), arguments, timeout: timeout)
    }

    let common = ["--keystore", "/nonexistent/keystore.json", "--journal", "/nonexistent/journal.sqlite"]

    /// ArgumentParser reads `-1` as an option; every numeric input of cardctl says what the value may be instead.
    @Test func negativeNumbersSayWhatIsWrong() throws {
        let cases: [(arguments: [String], says: String)] = [
            (["card", "debit", "-1", "--terminal-id", "1"] + common, "an amount is positive yuan"),
            (["card", "load", "-12.50", "--terminal-id", "1"] + common, "an amount is positive yuan"),
            (["card", "water", "debit", "-.05", "--terminal-id", "1"] + common, "an amount is positive yuan"),
            (["card", "water", "refill", "-1", "--terminal-id", "1"] + common, "an amount is positive yuan"),
            (["card", "debit", "1", "--terminal-id", "-1"] + common, "--terminal-id -1: a terminal id is 1-65535"),
            (["card", "issue", "--serial", "-1", "--account", "1", "--type", "student"] + common, "--serial -1: a card serial is a whole number"),
            (["card", "issue", "--serial", "1", "--account", "-7", "--type", "student"] + common, "--account -7: a card account is a whole number"),
            (["card", "water", "settle", "--reference", "-5", "--terminal-id", "1"] + common, "--reference -5: a settlement reference"),
            (["value", "set", "9", "-5"], "put `--` before a negative value"),
            (["value", "inc", "9", "-1"], "use `inc` to add and `dec` to take off"),
            (["read", "-1"], "never negative"),
            (["read", "-0x10"], "never negative"),
        ]
        for (arguments, says) in cases {
            let result = try cardctl(arguments)
            let line = arguments.joined(separator: " ")
            #expect(result.status == 64, "\(line): \(result.status)")
            #expect(result.stderr.contains(says), "\(line): \(result.stderr)")
            #expect(!result.stderr.contains("Missing"), "\(line): \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(line): \(result.stderr)")
        }
    }

    /// Out of range, not negative: the reason, not just "invalid".
    @Test func outOfRangeNumbersSayTheRange() throws {
        let cases: [(arguments: [String], says: String)] = [
            (["card", "debit", "1", "--terminal-id", "70000"] + common, "a terminal id is a whole number 1-65535"),
            (["card", "debit", "1", "--terminal-id", "0"] + common, "a terminal id is a whole number 1-65535"),
            (["card", "issue", "--serial", "4294967296", "--account", "1", "--type", "student"] + common, "a serial is a whole number 0-4294967295"),
            (["card", "water", "settle", "--reference", "2147483648", "--terminal-id", "1"] + common, "the settlement service's, a whole number 1-2147483647"),
        ]
        for (arguments, says) in cases {
            let result = try cardctl(arguments)
            #expect(result.status == 64 && result.stderr.contains(says), "\(arguments.joined(separator: " ")): \(result.status) \(result.stderr)")
        }
    }

    /// The card holds an expiry as a u16 of days since 2000-01-01: 2199-12-31 was stored as 2179-06-06.
    @Test func anExpiryTheCardCannotHoldIsRefused() throws {
        let issue = ["card", "issue", "--serial", "1", "--account", "1", "--type", "student"] + common
        let late = try cardctl(issue + ["--expires", "2199-12-31"])
        #expect(late.status == 6, "\(late.stderr)")
        #expect(late.stderr.contains("beyond 2179-06-06") && late.stderr.split(separator: "\n").count == 1, "\(late.stderr)")
        let past = try cardctl(issue + ["--expires", "2001-01-01"])
        #expect(past.status == 6 && past.stderr.contains("not in the future"), "\(past.stderr)")
        let garbage = try cardctl(issue + ["--expires", "next year"])
        #expect(garbage.status == 6 && garbage.stderr.contains("is not a date YYYY-MM-DD"), "\(garbage.stderr)")
    }

    /// A debit or load of nothing is a typing error (exit 6) told before a card is looked for, not the card's refusal.
    @Test func anAmountOfNothingIsATypingError() throws {
        for command in [["card", "debit", "0"], ["card", "load", "0.00"], ["card", "water", "debit", "0"]] {
            let result = try cardctl(command + ["--terminal-id", "1"] + common)
            #expect(result.status == 6 && result.stderr.contains("moves nothing"), "\(command): \(result.status) \(result.stderr)")
        }
    }

    /// `keystore show` of a FIFO used to wait for a writer forever.
    @Test func aFIFOKeystoreIsRefusedAtOnce() throws {
        let path = NSTemporaryDirectory() + "ks-fifo-\(UUID().uuidString)"
        #expect(mkfifo(path, 0o600) == 0)
        defer { unlink(path) }
        let started = Date()
        let shown = try cardctl(["keystore", "show", path], timeout: 10)
        #expect(Date().timeIntervalSince(started) < 5, "did not block")
        #expect(shown.status == 6 && shown.stderr.contains("not a regular file"), "\(shown.status) \(shown.stderr)")
    }

    /// `restore` of a malformed JSON dump: where and what, in one line, not a DecodingError dump.
    @Test func malformedJSONDumpsAreExplained() throws {
        let cases: [(json: String, says: String)] = [
            ("{ not json", "it is not JSON"),
            ("{}", "blocks is missing"),
            (#"{"blocks": "00"}"#, "blocks is not a list of strings"),
            (#"{"blocks": [1, 2]}"#, "blocks[0] is not a string"),
            (#"{"blocks": ["00"]}"#, "blocks: block 0 is not 32 hex digits"),
            (#"{"blocks": []}"#, "blocks: a MIFARE Classic dump is 1024 (1K) or 4096 (4K) bytes"),
        ]
        for (json, says) in cases {
            let path = NSTemporaryDirectory() + "dump-\(UUID().uuidString).json"
            _ = FileManager.default.createFile(atPath: path, contents: Data(json.utf8))
            defer { try? FileManager.default.removeItem(atPath: path) }
            let restored = try cardctl(["restore", path])
            #expect(restored.status == 6, "\(json): \(restored.status) \(restored.stderr)")
            #expect(restored.stderr.contains(says), "\(json): \(restored.stderr)")
            #expect(restored.stderr.split(separator: "\n").count == 1, "\(json): \(restored.stderr)")
            for raw in ["DecodingError", "codingPath", "Context(", "underlyingError"] {
                #expect(!restored.stderr.contains(raw), "\(json): \(restored.stderr)")
            }
        }
    }
}
