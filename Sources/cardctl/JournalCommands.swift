import ArgumentParser
import CampusCard
import Foundation
import TerminalStore

/// `cardctl journal`: the terminal store (SQLite) of this box: check, list, export, import.
struct JournalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "journal",
        abstract: "Check, list, export or import the terminal store (the SQLite journal of card transactions).",
        discussion: """
            The store holds every card transaction this terminal recorded (the intent before the card write, the outcome \
            after), its upload state (open, queued, sent, acknowledged) and the blacklist. See docs/terminal-store.md. \
            Exit status: 0 ok, 1 failed (or the check found problems, or an import refused lines), 6 bad input, 64 bad arguments.
            """,
        subcommands: [Check.self, List.self, Export.self, Import.self]
    )

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check the store: integrity_check, schema version, counts, queue, invariants (exit 1 when not healthy).")
        @OptionGroup var store: StoreOptions

        func run() throws {
            try reportingStoreFailures {
                let check = try store.open(create: false).check()
                if store.json { try printStoreJSON(check) } else { printCheck(check) }
                if !check.isHealthy {
                    throw CLIError(.failed, "the terminal store \(store.journal) is not healthy (\((check.problems + (check.integrity == ["ok"] ? [] : check.integrity)).first ?? "")): keep the file for the card office")
                }
            }
        }

        private func printCheck(_ check: StoreCheck) {
            let counts = check.counts
            print("store      \(store.journal)")
            print("integrity  \(check.integrity.joined(separator: "; "))")
            print("schema     \(check.schemaVersion) (journal mode \(check.journalMode), synchronous \(check.synchronous == 2 ? "FULL" : String(check.synchronous)))")
            print("entries    \(counts.entries) (open \(counts.open), queued \(counts.queued), sent \(counts.sent), acknowledged \(counts.acknowledged))")
            print("sequence   last issued \(check.sequenceCounter), highest recorded \(check.highestSequence.map(String.init) ?? "none")")
            let oldest = check.queue.oldestUnacknowledgedAt.map { " since \($0.formatted(.iso8601))" } ?? ""
            print("upload     \(check.queue.unacknowledged) unacknowledged\(oldest), done debits \(check.queue.unacknowledgedDebits.yuan) yuan; \(check.queue.openIntents) open intents")
            print("blacklist  \(counts.blacklisted) cards (\(counts.blacklistChanges) changes received)")
            print("problems   \(check.problems.isEmpty ? "none" : check.problems.joined(separator: "\n           "))")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List entries in sequence order.")
        @OptionGroup var store: StoreOptions
        @Option(help: "Only this card's entries (UID hex).") var card: String?
        @Option(help: "Start at this terminal sequence.") var from: UInt32 = 0
        @Option(help: "At most this many entries.") var limit = 100
        @Flag(help: "Only intents not yet decided.") var open = false

        func validate() throws {
            guard limit >= 0 else { throw ValidationError("--limit \(limit) is negative: give 0 or more") }
            if let card, TerminalStore.normalizedUID(card) == nil {
                throw ValidationError("--card \(card) is not a card UID: give 8, 14 or 20 hex digits")
            }
        }

        func run() throws {
            try reportingStoreFailures {
                let entries = try store.open(create: false).entries(from: from, limit: limit, cardUID: card.flatMap(TerminalStore.normalizedUID), openOnly: open)
                if store.json { return try printStoreJSON(entries) }
                print("sequence  created               kind           card UID        amount  outcome       balance after  upload")
                for entry in entries {
                    let intent = entry.intent
                    var after = ""
                    if case .done(let balance, _)? = entry.outcome { after = balance.yuan }
                    let outcome: String = switch entry.outcome {
                    case nil: "open"
                    case .done?: "done"
                    case .notDone?: "not-done"
                    case .undetermined?: "undetermined"
                    }
                    print(String(intent.terminalSequence).rightPadded(to: 10) + intent.createdAt.formatted(.iso8601).rightPadded(to: 22)
                          + intent.kind.rawValue.rightPadded(to: 15) + intent.cardUID.rightPadded(to: 14)
                          + intent.amount.yuan.leftPadded(to: 8) + "  " + outcome.rightPadded(to: 14) + after.leftPadded(to: 13) + "  " + entry.upload.rawValue)
                }
            }
        }
    }

    struct Export: ParsableCommand {
        enum Format: String, ExpressibleByArgument, CaseIterable { case jsonl, csv }
        static let configuration = CommandConfiguration(
            abstract: "Export every entry as JSON lines (the old journal's format, re-importable) or CSV (amounts in fen and yuan).")
        @OptionGroup var store: StoreOptions
        @Option(help: "jsonl or csv.") var format: Format
        @Option(help: "Write to this file (created with mode 0600, replaced atomically). Default: standard output.") var output: String?

        func run() throws {
            try reportingStoreFailures {
                let opened = try store.open(create: false)
                var buffer = Data()
                let sink: (String) throws -> Void
                var file: FileHandle?
                var temporary: String?
                if let output {
                    let path = output + ".partial-\(getpid())"
                    guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]),
                          let handle = FileHandle(forWritingAtPath: path) else {
                        throw CLIError(.badInput, "cannot create \(output): check the directory and its permissions")
                    }
                    (file, temporary) = (handle, path)
                }
                let out = file ?? FileHandle.standardOutput
                sink = { line in
                    buffer.append(contentsOf: line.utf8)
                    if buffer.count >= 1 << 16 { try out.write(contentsOf: buffer); buffer.removeAll(keepingCapacity: true) }
                }
                do {
                    switch format {
                    case .jsonl: try opened.exportJSONLines(into: sink)
                    case .csv: try opened.exportCSV(into: sink)
                    }
                    try out.write(contentsOf: buffer)
                    if let file, let temporary, let output {
                        try file.synchronize()
                        try file.close()
                        guard rename(temporary, output) == 0 else {  // atomic: a reader sees the old file or the whole new one
                            throw CLIError(.failed, "cannot move the export to \(output) (\(String(cString: strerror(errno)))): check the directory")
                        }
                    }
                } catch {
                    if let temporary { try? FileManager.default.removeItem(atPath: temporary) }
                    throw error
                }
            }
        }
    }

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Import a JSON-lines journal (cardctl's old --journal file) into the store; importing it again adds nothing.")
        @Argument(help: "The .jsonl journal file.") var file: String
        @OptionGroup var store: StoreOptions

        func run() throws {
            try reportingStoreFailures {
                guard FileManager.default.fileExists(atPath: file) else {
                    throw CLIError(.badInput, "\(file): no such file; give the JSON-lines journal to import")
                }
                let report = try store.open(create: true).importJSONLines(path: file)
                if store.json { try printStoreJSON(report) } else {
                    print("imported \(report.intentsAdded) intents and \(report.outcomesAdded) outcomes into \(store.journal); \(report.alreadyPresent) already there")
                    if report.partialLastLine { print("the last line was cut short (a crash mid-write): ignored") }
                    for problem in report.unreadable { printError("cardctl: \(file) \(problem)") }
                    for problem in report.conflicts { printError("cardctl: \(file) \(problem)") }
                }
                if !report.conflicts.isEmpty {
                    throw CLIError(.failed, "\(report.conflicts.count) lines of \(file) were refused (their sequence is in the store with different content); the rest was imported: compare them with the card office")
                }
                if !report.unreadable.isEmpty {
                    throw CLIError(.failed, "\(report.unreadable.count) lines of \(file) are not journal lines and were skipped (the first: line \(report.unreadable[0].line)); the rest was imported: is it a cardctl journal?")
                }
            }
        }
    }
}

/// The store every journal and blacklist command opens.
struct StoreOptions: ParsableArguments {
    @Option(help: "The terminal store (SQLite file).") var journal = TerminalStore.defaultPath()
    @Flag(help: "Print data as JSON.") var json = false

    func open(create: Bool) throws -> TerminalStore {
        try TerminalStore(path: journal, options: TerminalStore.Options(createIfMissing: create))
    }
}

/// Runs a store command body; a `TerminalStoreError` becomes a `CLIError` with its exit status, then the usual one
/// line on stderr (`reportingFailures`' conventions, for synchronous commands).
func reportingStoreFailures(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as ExitCode {
        throw error
    } catch {
        let (status, message) = explain(storeFailure(error))
        printError("cardctl: \(message)")
        throw ExitCode(status.rawValue)
    }
}

/// A store error as cardctl reports it: input problems exit 6, everything else 1.
func storeFailure(_ error: any Error) -> any Error {
    guard let error = error as? TerminalStoreError else { return error }
    switch error.code {
    case .badInput, .staleBlacklist, .cannotOpen, .unknownSequence, .notInQueue: return CLIError(.badInput, error.message)
    default: return CLIError(.failed, error.message)
    }
}

/// JSON on standard output (dates in ISO 8601, keys sorted).
func printStoreJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
