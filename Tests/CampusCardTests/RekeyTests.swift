import CampusCard
import CardEmulator
import Foundation
import Testing

@Suite struct RekeyTests {
    @Test func rotateThenRekey() throws {
        let bench = try CardBench()
        let pos = Terminal(id: 7, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(5_000, terminal: pos)
        let oldOnly = bench.path + ".v1"
        try FileManager.default.copyItem(atPath: bench.path, toPath: oldOnly)
        defer { try? FileManager.default.removeItem(atPath: oldOnly) }
        let rotated = try FileKeystore.rotate(path: bench.path)
        #expect(rotated.knownVersions == [1, 2] && rotated.currentVersion == 2)
        let mode = try FileManager.default.attributesOfItem(atPath: bench.path)[.posixPermissions] as? Int
        #expect(mode == 0o600)

        // Before re-keying, a v2 terminal still debits the v1 card (it falls back to the v1 keys).
        let beforeRekey = bench.operations(keystore: rotated)
        #expect(try beforeRekey.debit(Fen(100), terminal: pos).balance == Fen(4_900))
        #expect(beforeRekey.session.apduCount > 12, "the fallback costs a failed authentication and a re-select")

        let rekeyed = try bench.operations(keystore: rotated).rekey()
        #expect(Set(rekeyed) == Set([0, 1, 2, 3] + LogRing.current.sectors), "layout v2: the log sectors 4-11 too")
        #expect(try bench.operations(keystore: rotated).rekey().isEmpty, "re-running finds nothing to do")
        let after = bench.operations(keystore: rotated)
        #expect(try after.debit(Fen(100), terminal: pos).balance == Fen(4_800))
        #expect(after.session.apduCount == 12, "v2 keys open every sector at the first try")
        #expect(try bench.operations(keystore: rotated).readIdentity().keyVersion == 1, "the identity keeps the issue version")

        // A box still on the old keystore no longer opens the card.
        let stale = try FileKeystore(path: oldOnly)
        let error = #expect(throws: CardOperationError.self) { try bench.operations(keystore: stale).debit(Fen(1), terminal: pos) }
        #expect(error?.code == .notCampusCard)
    }

    /// A re-key torn at any APDU (block left old, untouched, or written with the answer lost) is finished by running
    /// it again; the balance never changes. A trailer left garbled locks its sector for good (MIFARE), so it is not in
    /// the matrix: re-keying happens at the card office.
    @Test func tornRekeyIsFinishedByRunningItAgain() throws {
        func setUp() throws -> (CardBench, FileKeystore) {
            let bench = try CardBench()
            try bench.issueAndLoad(5_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
            return (bench, try FileKeystore.rotate(path: bench.path))
        }
        let (probe, probeKeys) = try setUp()
        let probeOps = probe.operations(keystore: probeKeys)
        try probeOps.rekey()
        let apdus = probeOps.session.apduCount
        var scenarios = 0
        for index in 1...apdus {
            for effect in [TearEffect.notExecuted, .leftOld, .executed] {
                let (bench, keys) = try setUp()
                bench.tear(atAPDU: index, effect) { try bench.operations(keystore: keys).rekey() }
                try bench.operations(keystore: keys).rekey()
                let ops = bench.operations(keystore: keys)
                #expect(try ops.readPurse().balance == Fen(5_000), "APDU \(index) \(effect)")
                #expect(try bench.operations(keystore: keys).rekey().isEmpty, "APDU \(index) \(effect): not finished")
                scenarios += 1
            }
        }
        print("tear matrix (rekey): \(apdus) APDU indices x 3 effects = \(scenarios) scenarios")
    }
}

@Suite struct IssueTests {
    /// An issue torn at any APDU is finished by issuing again; then the card works. (Garbled trailers are left out
    /// for the same reason as in the re-key matrix.)
    @Test func tornIssueIsFinishedByIssuingAgain() throws {
        let identity = Identity(serial: 5, account: 6, type: .staff, keyVersion: 1, issued: CardDay(rawValue: 9_800), expires: CardDay(rawValue: 12_000))
        let probe = try CardBench()
        let probeOps = probe.operations()
        try probeOps.issue(identity)
        let apdus = probeOps.session.apduCount
        let again = #expect(throws: CardOperationError.self) { try probe.operations().issue(identity) }
        #expect(again?.code == .notBlank)
        var scenarios = 0
        for index in 1...apdus {
            for effect in [TearEffect.notExecuted, .leftOld, .executed] {
                let bench = try CardBench()
                bench.tear(atAPDU: index, effect) { try bench.operations().issue(identity) }
                do { try bench.operations().issue(identity) } catch let error as CardOperationError where error.code == .notBlank && effect != .notExecuted {
                    // The tear came after the last trailer: nothing left to do.
                }
                let pos = Terminal(id: 1, journal: InMemoryTerminalJournal())
                try bench.operations().load(Fen(1_000), terminal: pos)
                #expect(try bench.operations().debit(Fen(100), terminal: pos).balance == Fen(900), "APDU \(index) \(effect)")
                try bench.operations().checkApplication()
                #expect(try bench.operations().readIdentity().serial == 5)
                scenarios += 1
            }
        }
        print("tear matrix (issue): \(apdus) APDU indices x 3 effects = \(scenarios) scenarios")
    }
}
