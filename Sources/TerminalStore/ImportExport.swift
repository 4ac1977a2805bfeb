import CampusCard
import Foundation
import GRDB

/// What an import did.
public struct ImportReport: Sendable, Hashable, Codable {
    /// A line (or entry) not imported, and why.
    public struct Problem: Sendable, Hashable, Codable, CustomStringConvertible {
        /// 1-based line number in the file (entry index + 1 for `importEntries`).
        public var line: Int
        public var sequence: UInt32?
        public var message: String
        public var description: String { "line \(line): \(message)" }
    }
    public var intentsAdded = 0
    public var outcomesAdded = 0
    /// Intents and outcomes the store already had, identical (a second import adds nothing).
    public var alreadyPresent = 0
    /// Lines naming a sequence the store has with different content: refused, the rest imported.
    public var conflicts: [Problem] = []
    /// Lines that are not a journal line (not JSON, or neither an intent nor an outcome).
    public var unreadable: [Problem] = []
    /// The file ended in a line cut short (a crash mid-write): ignored.
    public var partialLastLine = false

    public init() {}
}

extension TerminalStore {
    /// Imports a JSON-lines journal (`FileTerminalJournal`'s format) in one transaction. Idempotent: what the store
    /// already has is counted in `alreadyPresent`, not added again. Keeps outcomes (a decided intent is queued for
    /// upload). Tolerates a partial last line. A line whose sequence the store has with different content is
    /// refused and reported (`conflicts`), and so is a later outcome line of that sequence; the rest is imported.
    /// The sequence counter ends above the highest sequence imported.
    public func importJSONLines(path file: String) throws -> ImportReport {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw TerminalStoreError(.badInput, "cannot read the journal \(file): no such file or no permission; give the .jsonl file itself")
        }
        var items: [(line: Int, item: JournalLine?)] = []
        var report = ImportReport()
        let segments = data.split(separator: 0x0A, omittingEmptySubsequences: false)
        let decoder = JSONDecoder()
        for (index, segment) in segments.enumerated() {
            let isLast = index == segments.count - 1
            if segment.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { continue }
            if let line = try? decoder.decode(JournalLine.self, from: Data(segment)), line.intent != nil || (line.sequence != nil && line.outcome != nil) {
                items.append((index + 1, line))
            } else if isLast {
                report.partialLastLine = true  // no newline after it: a write cut short
            } else {
                report.unreadable.append(.init(line: index + 1, sequence: nil, message: "not a journal line (neither an intent nor an outcome); skipped"))
            }
        }
        return try importItems(items, into: report)
    }

    /// Imports entries (intents with their outcomes) in one transaction, with `importJSONLines`'s rules; problems
    /// name the entry's index + 1. For migrations and for filling a store fast (benchmarks).
    public func importEntries(_ entries: [(intent: TransactionIntent, outcome: TransactionOutcome?)]) throws -> ImportReport {
        var items: [(line: Int, item: JournalLine?)] = []
        items.reserveCapacity(entries.count * 2)
        for (index, entry) in entries.enumerated() {
            items.append((index + 1, JournalLine(intent: entry.intent)))
            if let outcome = entry.outcome { items.append((index + 1, JournalLine(sequence: entry.intent.terminalSequence, outcome: outcome))) }
        }
        return try importItems(items, into: ImportReport())
    }

    private func importItems(_ items: [(line: Int, item: JournalLine?)], into start: ImportReport) throws -> ImportReport {
        try requireFreeSpace(for: .importing)
        // A big import leaves a big WAL, and every later read and commit searches its index until a checkpoint
        // copies it into the file (measured: a tap at 1M entries took 11.7 ms instead of 1.5 ms): checkpoint now.
        defer { checkpoint() }
        return try write(.importing) { db in
            var report = start
            var refused = Set<UInt32>()
            let select = try db.cachedStatement(sql: "SELECT \(IntentColumns.selectList) FROM journalEntry WHERE sequence = ?")
            for (line, item) in items {
                guard let item else { continue }
                if let intent = item.intent {
                    if let row = try Row.fetchOne(select, arguments: [Int64(intent.terminalSequence)]) {
                        if try IntentColumns.decode(row, path: self.path).intent == intent {
                            report.alreadyPresent += 1
                        } else {
                            refused.insert(intent.terminalSequence)
                            report.conflicts.append(.init(line: line, sequence: intent.terminalSequence,
                                                          message: "terminal sequence \(intent.terminalSequence) is already in the store with different content; refused (compare both with the card office)"))
                        }
                    } else {
                        try self.insert(intent, db)
                        report.intentsAdded += 1
                    }
                } else if let sequence = item.sequence, let outcome = item.outcome {
                    if refused.contains(sequence) {
                        report.conflicts.append(.init(line: line, sequence: sequence, message: "the outcome of terminal sequence \(sequence), whose intent was refused; refused"))
                        continue
                    }
                    do {
                        if try self.decide(sequence, outcome, db) { report.outcomesAdded += 1 } else { report.alreadyPresent += 1 }
                    } catch let error as TerminalStoreError where error.code == .conflictingOutcome || error.code == .unknownSequence {
                        report.conflicts.append(.init(line: line, sequence: sequence, message: error.message))
                    }
                }
            }
            return report
        }
    }

    /// Writes every entry in `FileTerminalJournal`'s JSON-lines format (each intent, then its outcome when decided),
    /// in sequence order; `sink` receives one line at a time, each ending in a newline. Re-importing the output into
    /// this store adds nothing.
    public func exportJSONLines(into sink: (String) throws -> Void) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        func emit(_ line: JournalLine) throws { try sink(String(decoding: try encoder.encode(line), as: UTF8.self) + "\n") }
        try forEachEntry { entry in
            try emit(JournalLine(intent: entry.intent))
            if let outcome = entry.outcome { try emit(JournalLine(sequence: entry.intent.terminalSequence, outcome: outcome)) }
        }
    }

    /// Writes every entry as CSV (RFC 4180, a header row first), in sequence order: amounts as integer fen and as yuan
    /// text, dates in ISO 8601 UTC. `sink` receives one line at a time, each ending in CRLF.
    public func exportCSV(into sink: (String) throws -> Void) throws {
        try sink(CSVColumns.header.joined(separator: ",") + "\r\n")
        try forEachEntry { entry in
            try sink(CSVColumns.fields(entry).map(Self.csvField).joined(separator: ",") + "\r\n")
        }
    }

    /// Quotes a CSV field when it holds a comma, a quote or a line break.
    static func csvField(_ text: String) -> String {
        guard text.contains(where: { $0 == "," || $0 == "\"" || $0.isNewline }) else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// Opens the store at `path`; when `legacyJournal` (a `FileTerminalJournal` file) exists, imports it and, when
    /// no line was refused for conflicting content, renames it to `<name>.imported` so that it is not read again. Returns the import's report
    /// (`nil` when there was nothing to import). For moving a box from the JSON-lines journal to the store.
    public static func open(path: String, importingLegacyJournal legacyJournal: String?, options: Options = Options()) throws -> (TerminalStore, ImportReport?) {
        let store = try TerminalStore(path: path, options: options)
        guard let legacyJournal, FileManager.default.fileExists(atPath: legacyJournal) else { return (store, nil) }
        let report = try store.importJSONLines(path: legacyJournal)
        if report.conflicts.isEmpty {  // unreadable lines: FileTerminalJournal skips them too
            do { try FileManager.default.moveItem(atPath: legacyJournal, toPath: legacyJournal + ".imported") } catch {
                throw TerminalStoreError(.failed, "imported \(legacyJournal) into \(path) but cannot rename it (\(error.localizedDescription)): rename or remove it by hand (importing it again adds nothing)")
            }
        }
        return (store, report)
    }
}
