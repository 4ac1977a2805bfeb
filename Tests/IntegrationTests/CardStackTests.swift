import Foundation
import MifareClassic
import Testing
import TestSupport

/// The whole path through the real pcscd + vpcd ("Virtual PCD 00 00", port 35963): the cardemu and cardctl
/// executables, and two independent clients (pcsc_scan, pyscard). Serialized: one card on one port at a time.
@Suite(.serialized) struct CardStackTests {
    let keyArguments = ["--key", SampleCards.sector1KeyA.hexForTests, "--key-b", SampleCards.sector1KeyB.hexForTests]

    func cardctl(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        run(try BuiltExecutable.path("cardctl"), arguments)
    }

    @Test func readersListsTheVirtualReaderWhileCardemuRuns() throws {
        let emulator = try EmulatorProcess(card: SampleCards.sample1KPath)
        defer { emulator.terminate() }
        let result = try cardctl(["readers"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("0: Virtual PCD 00 00  [card: MIFARE Classic 1K"))
        let json = try cardctl(["readers", "--json"])
        #expect(json.stdout.contains("\"name\" : \"Virtual PCD 00 00\""))
    }

    @Test func infoDecodesTheCardAndProbesTheProfile() throws {
        let emulator = try EmulatorProcess(card: SampleCards.sample1KPath, arguments: ["--profile", "acr122u"])
        defer { emulator.terminate() }
        let result = try cardctl(["info"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("UID       DEADBEEF"))
        #expect(result.stdout.contains("acr122u — ACS ACR122U, chosen by firmware probe (ACR122U215)"))
        #expect(result.stdout.contains("card      MIFARE Classic 1K"))
        let omnikey = try cardctl(["info", "--profile", "omnikey5422", "--json"])
        #expect(omnikey.stdout.contains("\"profileSource\" : \"--profile\""))
    }

    @Test func dumpIsByteIdenticalToTheLoadedImage() throws {
        let emulator = try EmulatorProcess(card: SampleCards.sample1KPath)
        defer { emulator.terminate() }
        let out = NSTemporaryDirectory() + "dump-\(UUID().uuidString).mfd"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let result = try cardctl(["dump", "--out", out] + keyArguments)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(FileManager.default.contents(atPath: out) == FileManager.default.contents(atPath: SampleCards.sample1KPath))
        // The screen never shows keys.
        #expect(!result.stdout.contains("11 22 33 44 55 66") && !result.stdout.contains("66 55 44 33 22 11"))
        // Without key B the dump is still complete for reading, but sector 1's trailer lacks key B: not identical.
        let partial = try cardctl(["dump", "--out", out, "--key", SampleCards.sector1KeyA.hexForTests])
        #expect(partial.status == 0)
        #expect(FileManager.default.contents(atPath: out) != FileManager.default.contents(atPath: SampleCards.sample1KPath))
        // Never through a symlink, a device or to the screen: refused (exit 6), and what is there is left alone.
        let link = NSTemporaryDirectory() + "dump-link-\(UUID().uuidString).mfd"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: out)
        defer { try? FileManager.default.removeItem(atPath: link) }
        for (destination, said) in [(link, "is a symbolic link"), ("/dev/null", "is a device"), ("-", "never written to the screen")] {
            let refused = try cardctl(["dump", "--out", destination] + keyArguments)
            #expect(refused.status == 6 && refused.stderr.contains(said), "\(destination): \(refused.status) \(refused.stderr)")
        }
        var status = stat()
        #expect(lstat(link, &status) == 0 && status.st_mode & S_IFMT == S_IFLNK)
        #expect(!FileManager.default.fileExists(atPath: "-"))
    }

    @Test func pcscScanIdentifiesMifareClassic1K() throws {
        let emulator = try EmulatorProcess(card: SampleCards.sample1KPath)
        defer { emulator.terminate() }
        let result = run("/usr/bin/pcsc_scan", ["-t", "2"], timeout: 20)
        #expect(result.stdout.contains("MIFARE Classic 1K"), "\(result.stdout.suffix(500))")
        #expect(result.stdout.contains("3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 01 00 00 00 00 6A"))
    }

    @Test func pyscardAuthenticatesAndReadsABlock() throws {
        let emulator = try EmulatorProcess(card: SampleCards.sample1KPath)
        defer { emulator.terminate() }
        let script = SampleCards.repositoryRoot.appendingPathComponent("scripts/pyscard-read-block.py").path
        let result = run("/usr/bin/python3", [script, "Virtual PCD 00 00", "4", SampleCards.sector1KeyA.hexForTests])
        #expect(result.status == 0, "\(result.stderr)")
        let image = try CardImage(mfd: SampleCards.sample1K())
        #expect(result.stdout.contains("uid DEADBEEF"))
        #expect(result.stdout.contains("block " + image.block(4).map { String(format: "%02X", $0) }.joined()))
        let wrong = run("/usr/bin/python3", [script, "Virtual PCD 00 00", "4", "000000000000"])
        #expect(wrong.status == 3)
    }

    @Test func removeAndInsertThroughTheControlSocket() throws {
        let emulator = try EmulatorProcess(card: SampleCards.sample1KPath)
        defer { emulator.terminate() }
        #expect(try emulator.ctl("remove").status == 0)
        try EmulatorProcess.waitForPcscd(reader: emulator.readerName, present: false)
        let missing = try cardctl(["info"])
        #expect(missing.status == 3)
        #expect(missing.stderr.contains("no card on \"Virtual PCD 00 00\""))
        #expect(try emulator.ctl("insert").status == 0)
        try EmulatorProcess.waitForPcscd(reader: emulator.readerName, present: true)
        #expect(try cardctl(["info"]).status == 0)
        let status = try emulator.ctl("status", "--json")
        #expect(status.stdout.contains("\"cardPresent\":true"))
        #expect(try emulator.ctl("tear-during", "1", "--effect", "sideways").status == 1)
    }

    @Test func cardTornMidDebitThroughTheStack() throws {
        let work = NSTemporaryDirectory() + "torn-\(UUID().uuidString).mfd"
        try FileManager.default.copyItem(atPath: SampleCards.sample1KPath, toPath: work)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let emulator = try EmulatorProcess(card: work, arguments: ["--save"])
        defer { emulator.terminate() }
        // cardctl value dec: probe, LOAD KEYS, AUTHENTICATE, DECREMENT (4th) torn with the block left old.
        #expect(try emulator.ctl("tear-during", "4", "--effect", "old").status == 0)
        let torn = try cardctl(["value", "dec", "5", "100", "--key", SampleCards.sector1KeyA.hexForTests])
        #expect(torn.status == 3, "card removed: \(torn.stderr)")
        #expect(try emulator.ctl("insert").status == 0)
        try EmulatorProcess.waitForPcscd(reader: emulator.readerName, present: true)
        let value = try cardctl(["value", "get", "5", "--key", SampleCards.sector1KeyA.hexForTests])
        #expect(value.stdout.contains("value 1000"), "left old: nothing was debited")
        #expect(try cardctl(["value", "dec", "5", "100", "--key", SampleCards.sector1KeyA.hexForTests]).stdout.contains("value 900"))
        // --save writes the image within about 0.1 s of a change; on a loaded machine later, so poll (a bound, not a
        // speed claim).
        var saved = Int32.min
        for _ in 0..<100 {
            if let image = try? CardImage(mfd: Array(FileManager.default.contents(atPath: work) ?? Data())),
               let value = try? ValueBlock(block: image.block(5)).value {
                saved = value
                if saved == 900 { break }
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(saved == 900, "the saved image carries the one debit")
    }

    /// `cardctl read` of a sector trailer, plain and --json, shows the access bytes and never a key (as `dump`).
    @Test func readingATrailerMasksItsKeys() throws {
        let emulator = try EmulatorProcess(card: SampleCards.sample1KPath)
        defer { emulator.terminate() }
        for json in [false, true] {
            let read = try cardctl(["read", "7", "--key", SampleCards.sector1KeyA.hexForTests] + (json ? ["--json"] : []))
            #expect(read.status == 0, "\(read.stderr)")
            #expect(read.stdout.contains("••") && !read.stdout.contains(SampleCards.sector1KeyB.hexForTests), "\(read.stdout)")
        }
        // dump --json on the screen: the same mask, never zeros (a real key), and every block's length kept.
        let dump = try cardctl(["dump", "--json", "--key", SampleCards.sector1KeyA.hexForTests, "--key-b", SampleCards.sector1KeyB.hexForTests])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(dump.stdout.utf8)) as? [String: Any], "\(dump.stdout)")
        let blocks = try #require(object["blocks"] as? [String])
        #expect(blocks.count == 64 && blocks[7].hasPrefix("••••••••••••") && blocks[7].hasSuffix("••••••••••••"), "\(blocks[7])")
        #expect(!dump.stdout.contains(SampleCards.sector1KeyA.hexForTests) && !dump.stdout.contains(SampleCards.sector1KeyB.hexForTests))
        #expect((object["sectors"] as? [[String: Any]])?.allSatisfy { $0["keyA"] as? String == "••••••••••••" } == true)
    }

    @Test func refusalsAreOneLineWithTheirExitStatus() throws {
        let emulator = try EmulatorProcess(card: SampleCards.sample1KPath)
        defer { emulator.terminate() }
        let wrongKey = try cardctl(["read", "4", "--key", "000000000000"])
        #expect(wrongKey.status == 4)
        #expect(wrongKey.stderr.split(separator: "\n").count == 1)
        #expect(!wrongKey.stderr.contains("000000000000"), "keys never in messages")
        let refused = try cardctl(["value", "inc", "5", "1", "--key", SampleCards.sector1KeyA.hexForTests])
        #expect(refused.status == 5)
        #expect(try cardctl(["read", "64"]).status == 6)
        #expect(try cardctl(["read", "banana"]).status == 64)
        #expect(try cardctl(["read", "4", "--key", "12345"]).status == 64)
        let badImage = NSTemporaryDirectory() + "bad-\(UUID().uuidString).mfd"
        var bytes = try SampleCards.sample1K()
        bytes[7 * 16 + 7] ^= 0xFF
        _ = FileManager.default.createFile(atPath: badImage, contents: Data(bytes))
        defer { try? FileManager.default.removeItem(atPath: badImage) }
        let restore = try cardctl(["restore", badImage] + keyArguments)
        #expect(restore.status == 6)
        #expect(restore.stderr.contains("invalid sector trailer"))
    }

    @Test func campusCardIssueShowDebitThroughPcscd() throws {
        let blank = NSTemporaryDirectory() + "blank-\(UUID().uuidString).mfd"
        let keystore = NSTemporaryDirectory() + "office-\(UUID().uuidString).json"
        let journal = NSTemporaryDirectory() + "journal-\(UUID().uuidString).sqlite"
        defer { [blank, keystore, journal].forEach { try? FileManager.default.removeItem(atPath: $0) } }
        _ = FileManager.default.createFile(atPath: blank, contents: Data(SampleCards.blank1K()))
        #expect(try cardctl(["keystore", "create", keystore]).status == 0)
        let emulator = try EmulatorProcess(card: blank)
        defer { emulator.terminate() }
        let common = ["--keystore", keystore, "--journal", journal, "--terminal-id", "1"]
        let foreign = try cardctl(["card", "show"] + common)
        #expect(foreign.status == 5 && foreign.stderr.contains("not a campus card"), "\(foreign.stderr)")
        let issued = try cardctl(["card", "issue", "--serial", "20260001", "--account", "3120456", "--type", "student"] + common)
        #expect(issued.status == 0, "\(issued.stderr)")
        #expect(try cardctl(["card", "load", "50"] + common).status == 0)
        // A POS holds an exported keystore: it debits; it cannot load (no loader master).
        let pos = keystore + ".pos"
        defer { try? FileManager.default.removeItem(atPath: pos) }
        #expect(try cardctl(["keystore", "export", keystore, pos]).status == 0)
        // Moving money needs a terminal id: the settlement service tells transactions apart by terminal id + sequence.
        let anonymous = try cardctl(["card", "debit", "1", "--keystore", pos, "--journal", journal])
        #expect(anonymous.status == 6 && anonymous.stderr.contains("--terminal-id"), "\(anonymous.stderr)")
        let posCommon = ["--keystore", pos, "--journal", journal + ".pos", "--terminal-id", "21"]
        let debit = try cardctl(["card", "debit", "12.50"] + posCommon)
        #expect(debit.stdout.contains("balance 37.50 yuan"), "\(debit.stderr)")
        let posLoad = try cardctl(["card", "load", "1"] + posCommon)
        #expect(posLoad.status != 0 && posLoad.stderr.contains("loader"), "\(posLoad.stderr)")
        let shown = try cardctl(["card", "show", "--json"] + common)
        #expect(shown.status == 0, "\(shown.stderr)")
        #expect(shown.stdout.contains("\"balanceFen\" : 3750") && shown.stdout.contains("\"serial\" : 20260001"))
        #expect(shown.stdout.contains("\"type\" : \"student\""))
        #expect(try cardctl(["card", "water", "settle"] + common).stdout.contains("refilled 10.00 yuan"))
        #expect(try cardctl(["card", "water", "debit", "0.05"] + common).stdout.contains("water balance 9.95 yuan"))
        let cancelled = try cardctl(["card", "cancel", "--json"] + common)
        #expect(cancelled.stdout.contains("\"refundPurseYuan\" : \"37.50\"") && cancelled.stdout.contains("\"refundWaterYuan\" : \"9.95\""), "\(cancelled.stdout)\(cancelled.stderr)")
        let refused = try cardctl(["card", "debit", "1"] + common)
        #expect(refused.status == 5 && refused.stderr.contains("cancelled"))
        // Rotation and re-keying through pcscd (the re-select after a failed old-version authentication is
        // SCardReconnect with a reset).
        #expect(try cardctl(["keystore", "rotate", keystore]).stdout.contains("current 2"))
        let rekey = try cardctl(["card", "rekey"] + common)
        #expect(rekey.status == 0 && rekey.stdout.contains("re-keyed sectors 0, 1, 2, 3, 4, 5"), "\(rekey.stdout)\(rekey.stderr)")
        #expect(try cardctl(["card", "rekey"] + common).stdout.contains("already on the current key version"))
        for bad in ["-1", "1.234", "abc", "99999999999"] {
            let refused = try cardctl(["card", "debit", bad] + common)
            #expect(refused.status == 6 || refused.status == 64, "\(bad): \(refused.status)")
        }
    }

    /// Tears through the real stack. A POS debit torn at its log write, after the acknowledged commit: cardctl says at
    /// once that it was committed. A POS debit whose commit lands but whose answer is lost: cardctl cannot know and
    /// says so; the POS's next tap of the card decides it "done" (the record names this POS).
    @Test func tornDebitsAreDecidedThroughPcscd() throws {
        let work = NSTemporaryDirectory() + "torn-campus-\(UUID().uuidString)"
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
        #expect(try cardctl(["card", "issue", "--serial", "7", "--account", "8", "--type", "staff"] + office).status == 0)
        #expect(try cardctl(["card", "load", "50"] + office).status == 0)
        func reinsert() throws {
            #expect(try emulator.ctl("insert").status == 0)
            try EmulatorProcess.waitForPcscd(reader: emulator.readerName, present: true)
        }
        // Probe, then the debit's 12 APDUs: the 13th writes the log entry; the block is left old (not written).
        #expect(try emulator.ctl("tear-during", "13", "--effect", "old").status == 0)
        let afterCommit = try cardctl(["card", "debit", "3", "--json"] + pos)
        #expect(afterCommit.status == 0, "done, though the card left after the commit: \(afterCommit.stderr)")
        #expect(afterCommit.stdout.contains("\"outcome\" : \"done\"") && afterCommit.stdout.contains("\"balanceYuan\" : \"47.00\""), "\(afterCommit.stdout)")
        #expect(afterCommit.stderr.contains("warning: the purse-debit is done (committed on the card), but a step after the commit failed"), "\(afterCommit.stderr)")
        try reinsert()
        #expect(try cardctl(["card", "load", "10"] + office).stdout.contains("57.00"))
        // The 9th APDU is the record write (the commit): it lands, its answer is lost.
        #expect(try emulator.ctl("tear-during", "9", "--effect", "executed").status == 0)
        let unacknowledged = try cardctl(["card", "debit", "2", "--json"] + pos)
        #expect(unacknowledged.status == 7 && unacknowledged.stderr.contains("(terminal sequence 2) may or may not have happened: tap the card again here"), "\(unacknowledged.stderr)")
        #expect(unacknowledged.stdout.contains("\"outcome\" : \"undetermined\""), "\(unacknowledged.stdout)")
        try reinsert()
        let next = try cardctl(["card", "debit", "1"] + pos)
        #expect(next.status == 0 && next.stdout.contains("54.00"), "\(next.stdout)\(next.stderr)")
        #expect(next.stderr.contains("interrupted purse-debit of 2.00 yuan (terminal sequence 2): done (balance after it: 55.00 yuan)"), "\(next.stderr)")
    }

    @Test func cardShowReportsATamperedPurse() throws {
        let work = NSTemporaryDirectory() + "tamper-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let card = work + "/card.mfd", keystore = work + "/office.json", journal = work + "/journal.sqlite"
        _ = FileManager.default.createFile(atPath: card, contents: Data(SampleCards.blank1K()))
        #expect(try cardctl(["keystore", "create", keystore]).status == 0)
        let emulator = try EmulatorProcess(card: card, arguments: ["--save"])
        defer { emulator.terminate() }
        let common = ["--keystore", keystore, "--journal", journal, "--terminal-id", "1"]
        #expect(try cardctl(["card", "issue", "--serial", "1", "--account", "2", "--type", "staff"] + common).status == 0)
        #expect(try cardctl(["card", "load", "5"] + common).status == 0)
        Thread.sleep(forTimeInterval: 0.3)  // --save writes within 0.1 s
        // An attacker with key B writes 1000.00 yuan into both purse value blocks.
        var image = try #require(FileManager.default.contents(atPath: card)).map { $0 }
        let forged = ValueBlock(value: 100_000, address: 9).block
        image.replaceSubrange(9 * 16..<10 * 16, with: forged)
        image.replaceSubrange(10 * 16..<11 * 16, with: forged)
        let forgedPath = work + "/forged.mfd"
        _ = FileManager.default.createFile(atPath: forgedPath, contents: Data(image))
        #expect(try emulator.ctl("remove").status == 0)
        try EmulatorProcess.waitForPcscd(reader: emulator.readerName, present: false)
        Thread.sleep(forTimeInterval: 0.9)
        #expect(try emulator.ctl("insert", forgedPath).status == 0)
        try EmulatorProcess.waitForPcscd(reader: emulator.readerName, present: true)
        let shown = try cardctl(["card", "show"] + common)
        #expect(shown.status == 5, "\(shown.stderr)")
        #expect(shown.stdout.contains("MAC       MISMATCH in purse") && shown.stdout.contains("serial 1"), "\(shown.stdout)")
        let debit = try cardctl(["card", "debit", "1"] + common)
        #expect(debit.status == 5 && debit.stderr.contains("altered without the MAC key"))
    }

    /// Kills pcscd: only the tests' own (see `PCSCDaemon.mayRestart`), else skipped with the reason.
    @Test(.enabled(if: PCSCDaemon.mayRestart(), Comment(rawValue: PCSCDaemon.notOursReason)))
    func watchSurvivesPcscdBeingKilledAndRestarted() throws {
        let emulator = try EmulatorProcess(card: SampleCards.sample1KPath)
        defer { emulator.terminate() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try BuiltExecutable.path("cardctl"))
        process.arguments = ["watch"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        Thread.sleep(forTimeInterval: 1.5)
        try PCSCDaemon.kill()
        Thread.sleep(forTimeInterval: 1)
        try PCSCDaemon.ensureRunning()
        try EmulatorProcess.waitForPcscd(reader: emulator.readerName, present: true, timeout: 10)
        Thread.sleep(forTimeInterval: 1.5)
        // The monitor works on its new context: a removal after the restart is seen.
        #expect(try emulator.ctl("remove").status == 0)
        Thread.sleep(forTimeInterval: 1.5)
        process.interrupt()  // Ctrl-C
        process.waitUntilExit()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0, "Ctrl-C is a clean exit")
        #expect(text.contains("pcscd unreachable"))
        #expect(text.contains("pcscd is back"))
        let afterRestart = try #require(text.components(separatedBy: "pcscd is back").last)
        #expect(afterRestart.contains("card removed from Virtual PCD 00 00"), "\(text)")
    }
}

extension MifareKey {
    var hexForTests: String { bytes.map { String(format: "%02X", $0) }.joined() }
}
