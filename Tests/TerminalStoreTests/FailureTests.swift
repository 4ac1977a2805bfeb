import CampusCard
import Foundation
import Testing
import TestSupport
@testable import TerminalStore
#if canImport(Glibc)
import Glibc
#endif

/// What the store does with a damaged file, a full disk and a killed process.
@Suite struct FailureTests {
    enum Damage: String, CaseIterable, CustomTestStringConvertible {
        /// Not an SQLite file at all.
        case garbage
        /// A store whose header was overwritten.
        case header
        /// A store whose b-tree pages were overwritten (the header still says SQLite): only a check finds it.
        case pages
        var testDescription: String { rawValue }
    }

    /// A corrupt or non-SQLite file is refused with the message the card office needs, never crashes, and is kept
    /// byte for byte.
    @Test(arguments: Damage.allCases)
    func aCorruptFileIsRefusedAndKept(_ damage: Damage) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        if damage == .garbage {
            let bytes = (0..<20_000).map { UInt8(truncatingIfNeeded: $0 &* 7919 >> 3) }
            try Data(bytes).write(to: URL(fileURLWithPath: directory.store))
        } else {
            let store = try TerminalStore(path: directory.store)
            _ = try store.importEntries((1...3000).map { (intent(UInt32($0), uid: String(format: "%08X", $0 % 300)), .notDone) })
            try store.close()  // checkpoints the WAL into the file and truncates it
            #expect(try FileManager.default.attributesOfItem(atPath: directory.store + "-wal")[.size] as? Int ?? 0 == 0)
            var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: directory.store)))
            let range = damage == .header ? 0..<32 : bytes.count / 3..<bytes.count * 2 / 3
            for index in range { bytes[index] = UInt8(truncatingIfNeeded: index &* 31 ^ 0xA5) }
            try Data(bytes).write(to: URL(fileURLWithPath: directory.store))
        }
        let before = try Data(contentsOf: URL(fileURLWithPath: directory.store))
        let error = storeError { _ = try TerminalStore(path: directory.store) }
        #expect(error?.code == .corrupt, "\(String(describing: error))")
        let message = error?.message ?? ""
        #expect(message.hasPrefix("the terminal store \(directory.store) is corrupt ("))
        #expect(message.hasSuffix("keep the file for the card office, restore from backup or move it aside; cardd will not start on it"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory.store)) == before)
    }

    static let canMountTmpfs = getuid() == 0 && PCSCDaemon.isolation == .privateNamespace
    static let mountReason: Comment = "needs root in a private mount namespace (scripts/in-namespace, which scripts/test uses) to mount a tiny tmpfs"

    /// A tiny tmpfs in the test's private mount namespace, unmounted by `unmount()`.
    struct TinyFileSystem {
        let path: String
        init(_ directory: TemporaryDirectory, size: String) throws {
            path = directory.path + "/tiny"
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            let result = TestSupport.run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size),mode=0700", "onecard-store-test", path])
            guard result.status == 0 else { throw TestSetupError("mount -t tmpfs failed: \(result.stderr)") }
        }
        func unmount() { TestSupport.run("/bin/umount", [path]) }

        /// Fills the file system with a file until a write fails (ENOSPC).
        func fill() throws -> String {
            let filler = path + "/filler"
            let fd = open(filler, O_WRONLY | O_CREAT, 0o600)
            guard fd >= 0 else { throw TestSetupError("cannot create \(filler)") }
            defer { close(fd) }
            let chunk = [UInt8](repeating: 0xEE, count: 4096)
            var failed: Int32 = 0
            for _ in 0..<100_000 where failed == 0 {
                if chunk.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) != chunk.count { failed = errno }
            }
            guard failed == ENOSPC else { throw TestSetupError("the tmpfs did not fill up (errno \(failed))") }
            return filler
        }
    }

    /// With less free space than the minimum, `record` is refused before it writes anything, with a message that says
    /// no card was written and what to free.
    @Test(.enabled(if: canMountTmpfs, mountReason))
    func recordIsRefusedBeforeWritingWhenFreeSpaceIsBelowTheMinimum() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let tiny = try TinyFileSystem(directory, size: "512k")
        defer { tiny.unmount() }
        let store = try TerminalStore(path: tiny.path + "/terminal.sqlite")  // default minimum: 4 MiB > 512 KiB
        #expect(try TerminalStore.freeBytes(atDirectoryOf: store.path) < store.options.minimumFreeBytes)
        let sequence = try store.nextSequence()
        let error = storeError { try store.record(intent(sequence)) }
        #expect(error?.code == .diskFull)
        #expect(error?.message.contains("refused before any card write") == true)
        #expect(error?.message.contains("free space") == true)
        #expect(try store.entries().isEmpty)
        #expect(try store.queueSummary().openIntents == 0)
    }

    /// A really full file system: SQLite's SQLITE_FULL becomes `diskFull`; nothing half written remains (the earlier
    /// entries intact, the refused one absent, the file sound); once space is freed the same sequence records.
    @Test(.enabled(if: canMountTmpfs, mountReason))
    func sqliteFullIsDiskFullAndLeavesNothingHalfWritten() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let tiny = try TinyFileSystem(directory, size: "512k")
        defer { tiny.unmount() }
        let path = tiny.path + "/terminal.sqlite"
        let store = try TerminalStore(path: path, options: .init(minimumFreeBytes: 0))
        for sequence: UInt32 in 1...5 {
            try store.record(intent(sequence))
            try store.complete(terminalSequence: sequence, outcome: .done(balanceAfter: 9_650, counterAfter: UInt16(5 + sequence)))
        }
        let filler = try tiny.fill()
        var refused: TerminalStoreError?
        // The WAL may still have a page of slack: write until SQLite itself runs out of space.
        var sequence: UInt32 = 6
        while refused == nil && sequence < 200 {
            refused = storeError { try store.record(intent(sequence, kind: .purseLoad)) }
            if refused == nil { sequence += 1 }
        }
        #expect(refused?.code == .diskFull, "\(String(describing: refused))")
        #expect(refused?.message.contains("refused before any card write") == true)
        #expect(try store.transaction(sequence: sequence) == nil)
        #expect(try store.entries(limit: 1000).count == Int(sequence) - 1)
        #expect(try store.outcome(terminalSequence: 5) == .done(balanceAfter: 9_650, counterAfter: 10))

        try FileManager.default.removeItem(atPath: filler)
        try store.record(intent(sequence))
        try store.close()
        let reopened = try TerminalStore(path: path, options: .init(minimumFreeBytes: 0))
        #expect(try reopened.transaction(sequence: sequence)?.intent == intent(sequence))
        let check = try reopened.check()
        #expect(check.isHealthy, "\(check.problems) \(check.integrity)")
        try reopened.close()
    }

    /// A process killed with SIGKILL right after `record` returned: every intent it reported recorded is in the store
    /// when it is opened again (the child is `cardbench store --record-until-killed`).
    @Test func aRecordSurvivesSIGKILLRightAfterItReturned() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let child = Process()
        child.executableURL = URL(fileURLWithPath: try BuiltExecutable.path("cardbench"))
        child.arguments = ["store", "--record-until-killed", directory.store]
        let output = Pipe()
        child.standardOutput = output
        child.standardError = FileHandle.nullDevice
        try child.run()
        var text = "", reported: [UInt32] = []
        let deadline = Date().addingTimeInterval(60)
        while reported.count < 40 && Date() < deadline {
            let data = output.fileHandleForReading.availableData
            if data.isEmpty { break }  // the child ended
            text += String(decoding: data, as: UTF8.self)
            reported = text.split(separator: "\n").filter { text.hasSuffix("\n") || $0 != text.split(separator: "\n").last }
                .compactMap { $0.hasPrefix("recorded ") ? UInt32($0.dropFirst(9)) : nil }
        }
        kill(child.processIdentifier, SIGKILL)
        child.waitUntilExit()
        #expect(child.terminationReason == .uncaughtSignal && child.terminationStatus == SIGKILL)
        try #require(reported.count >= 40, "the child reported \(reported.count) records: \(text.suffix(300))")

        let store = try TerminalStore(path: directory.store)
        let recorded = Set(try store.entries(limit: 100_000).map(\.intent.terminalSequence))
        #expect(reported.allSatisfy(recorded.contains), "missing: \(reported.filter { !recorded.contains($0) })")
        #expect(try store.nextSequence() > reported.max() ?? 0)
        #expect(try store.check().isHealthy)
    }
}
