import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A durable `TerminalJournal` in an append-only JSON-lines file, each line fsync'ed before `record` returns.
/// For `cardctl` on a technician's box; the daemon's SQLite journal replaces it in `cardd`.
public final class FileTerminalJournal: TerminalJournal, @unchecked Sendable {
    public let path: String
    private let lock = NSLock()

    private struct Line: Codable {
        var intent: TransactionIntent?
        var sequence: UInt32?
        var outcome: TransactionOutcome?
    }

    public init(path: String) throws {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        if !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                throw JournalError("cannot create the journal \(path): the directory is not writable; choose another --journal")
            }
        }
    }

    private func lines() throws -> [Line] { try lines(orPartialTail: false).lines }

    /// The decodable lines, and whether the file ends without a newline (a write cut short by a crash).
    private func lines(orPartialTail: Bool) throws -> (lines: [Line], partialTail: Bool) {
        guard let data = FileManager.default.contents(atPath: path) else { throw JournalError("cannot read the journal \(path)") }
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { try? JSONDecoder().decode(Line.self, from: Data($0.utf8)) }
        return (lines, data.last.map { $0 != 0x0A } ?? false)
    }

    /// Appends one line, fsync'ed. `check` runs under an exclusive `flock` of the file, on its lines as they are
    /// then: two processes sharing a journal cannot both record the same sequence.
    private func append(_ line: Line, check: ([Line]) throws -> Void = { _ in }) throws {
        var data = try JSONEncoder().encode(line)
        data.append(0x0A)
        let fd = open(path, O_WRONLY | O_APPEND)
        guard fd >= 0 else { throw JournalError("cannot open the journal \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard flock(fd, LOCK_EX) == 0 else { throw JournalError("cannot lock the journal \(path): \(String(cString: strerror(errno)))") }
        let existing = try lines(orPartialTail: true)
        try check(existing.lines)
        // A line cut short (a crash mid-write) must not swallow this one: start on a new line.
        if existing.partialTail { data.insert(0x0A, at: 0) }
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw JournalError("cannot read the journal \(path)'s size: \(String(cString: strerror(errno)))") }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, data.count) }
        guard written == data.count, fsync(fd) == 0 else {
            _ = ftruncate(fd, status.st_size)  // leave no partial line behind
            throw JournalError("cannot write the journal \(path) (disk full?); free space and retry")
        }
    }

    public func nextSequence() throws -> UInt32 {
        try lock.withLock { (try lines().compactMap { $0.intent?.terminalSequence }.max() ?? 0) + 1 }
    }

    public func record(_ intent: TransactionIntent) throws {
        try lock.withLock {
            try append(Line(intent: intent)) { lines in
                guard !lines.contains(where: { $0.intent?.terminalSequence == intent.terminalSequence }) else {
                    throw JournalError("terminal sequence \(intent.terminalSequence) is already used in \(path) (another process shares this journal?); nothing was written to the card; retry")
                }
            }
        }
    }

    public func complete(terminalSequence: UInt32, outcome: TransactionOutcome) throws {
        try lock.withLock {
            let existing = try lines().last { $0.sequence == terminalSequence }?.outcome
            if let existing {
                if existing == outcome { return }
                throw JournalError("terminal sequence \(terminalSequence) was already completed differently: report it")
            }
            try append(Line(sequence: terminalSequence, outcome: outcome))
        }
    }

    public func openIntents(cardUID: String) throws -> [TransactionIntent] {
        try lock.withLock {
            let all = try lines()
            let decided = Set(all.compactMap { $0.outcome != nil ? $0.sequence : nil })
            return all.compactMap(\.intent).filter { $0.cardUID == cardUID && !decided.contains($0.terminalSequence) }
        }
    }

    /// Every intent with its outcome (`nil` while open), for every card, oldest first.
    public func entries() throws -> [(intent: TransactionIntent, outcome: TransactionOutcome?)] {
        try lock.withLock {
            let all = try lines()
            var outcomes: [UInt32: TransactionOutcome] = [:]
            for line in all { if let sequence = line.sequence, let outcome = line.outcome { outcomes[sequence] = outcome } }
            return all.compactMap(\.intent).map { ($0, outcomes[$0.terminalSequence]) }
        }
    }

    public func outcome(terminalSequence: UInt32) throws -> TransactionOutcome? {
        try lock.withLock { try lines().last { $0.sequence == terminalSequence }?.outcome }
    }
}
