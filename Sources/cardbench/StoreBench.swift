import ArgumentParser
import CampusCard
import Foundation
import GRDBSQLite
import TerminalStore
#if canImport(Glibc)
import Glibc
#endif

/// `cardbench store`: the terminal store's durable commit rate next to a plain sqlite3 C loop with the same settings on
/// the same disk, and the journal cost of one tap at growing journal sizes.
struct StoreBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Terminal store: commits/s vs a raw SQLite loop (WAL, synchronous=FULL), and the cost of one tap at 0, 100k, 1M entries.")

    @Option(help: "Directory for the bench's databases (the disk under test). Default: a new directory in the temporary directory.")
    var directory: String?
    @Option(help: "Commits per commit-rate run.") var commits = 400
    @Option(help: "Interleaved commit-rate rounds (the best round counts).") var rounds = 3
    @Option(help: "Journal sizes for the tap cost, comma separated.") var sizes = "0,100000,1000000"
    @Option(help: "Taps measured per journal size.") var taps = 200
    @Flag(help: "Only the commit rate.") var commitsOnly = false

    /// The child of the crash test (TerminalStoreTests): records intents into the store at PATH forever, printing
    /// "recorded N" after each `record` returned, until it is killed.
    @Option(help: .hidden) var recordUntilKilled: String?

    func run() throws {
        if let path = recordUntilKilled { try Self.recordUntilKilled(path) }
        let base = directory ?? NSTemporaryDirectory() + "cardbench-store-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        defer { if directory == nil { try? FileManager.default.removeItem(atPath: base) } }
        print("cardbench store: databases in \(base) (\(Self.fileSystem(of: base))); SQLite \(String(cString: sqlite3_libversion()))")
        try commitRate(base)
        if commitsOnly { return }
        let sizes = self.sizes.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        try tapCost(base, sizes: sizes)
    }

    // MARK: commit rate

    private func commitRate(_ base: String) throws {
        var raw = 0.0, journal = 0.0
        for round in 0..<rounds {
            let rawPath = base + "/raw-\(round).sqlite", storePath = base + "/store-\(round).sqlite"
            raw = max(raw, try Self.rawCommits(path: rawPath, count: commits))
            journal = max(journal, try Self.journalCommits(path: storePath, count: commits))
            for path in [rawPath, storePath] { Self.remove(path) }
        }
        print("")
        print("commit rate (WAL, synchronous=FULL, one commit per transaction, best of \(rounds) x \(commits) commits)")
        print("  raw sqlite3 C loop, one INSERT per commit      \(String(format: "%8.0f", raw)) commits/s  \(String(format: "%7.0f", 1e6 / raw)) µs/commit")
        print("  TerminalStore record + complete                \(String(format: "%8.0f", journal)) commits/s  \(String(format: "%7.0f", 1e6 / journal)) µs/commit   \(String(format: "%.2f", journal / raw))x raw  (\(String(format: "%.0f", journal / 2)) transactions/s)")
    }

    /// A plain sqlite3 loop: the floor. Same pragmas as the store, one INSERT per BEGIN IMMEDIATE/COMMIT.
    static func rawCommits(path: String, count: Int) throws -> Double {
        var db: OpaquePointer?
        guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nil) == SQLITE_OK, let db else {
            throw ValidationError("cannot open \(path)")
        }
        defer { sqlite3_close(db) }
        func exec(_ sql: String) throws {
            guard sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else { throw ValidationError("\(sql): \(String(cString: sqlite3_errmsg(db)))") }
        }
        try exec("PRAGMA journal_mode = WAL")
        try exec("PRAGMA synchronous = FULL")
        try exec("CREATE TABLE entry (sequence INTEGER PRIMARY KEY, cardUID TEXT NOT NULL, amountFen INTEGER NOT NULL, createdAt REAL NOT NULL)")
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(db, "INSERT INTO entry VALUES (?, ?, ?, ?)", -1, &statement, nil) == SQLITE_OK, let statement else {
            throw ValidationError("prepare: \(String(cString: sqlite3_errmsg(db)))")
        }
        defer { sqlite3_finalize(statement) }
        let start = ContinuousClock.now
        for index in 1...count {
            try exec("BEGIN IMMEDIATE")
            sqlite3_bind_int64(statement, 1, Int64(index))
            let status = "0BE7C401".withCString { uid in
                sqlite3_bind_text(statement, 2, uid, -1, nil)  // SQLITE_STATIC: the step runs inside withCString
                sqlite3_bind_int64(statement, 3, 350)
                sqlite3_bind_double(statement, 4, Date().timeIntervalSinceReferenceDate)
                return sqlite3_step(statement)
            }
            guard status == SQLITE_DONE else { throw ValidationError("insert: \(String(cString: sqlite3_errmsg(db)))") }
            sqlite3_reset(statement)
            try exec("COMMIT")
        }
        return rate(count, elapsedSeconds(since: start))
    }

    /// The store: `count` commits as count/2 record + complete pairs.
    static func journalCommits(path: String, count: Int) throws -> Double {
        let store = try TerminalStore(path: path)
        defer { try? store.close() }
        let start = ContinuousClock.now
        for sequence in 1...UInt32(max(1, count / 2)) {
            try store.record(intent(sequence, uid: "0BE7C401"))
            try store.complete(terminalSequence: sequence, outcome: .done(balanceAfter: 9_650, counterAfter: 6))
        }
        return rate(max(1, count / 2) * 2, elapsedSeconds(since: start))
    }

    // MARK: tap cost

    private func tapCost(_ base: String, sizes: [Int]) throws {
        struct Subject {
            var size: Int, path: String, filling: TerminalStore, store: TerminalStore, fillSeconds: Double, openSeconds: Double
            var taps: [Double] = [], reads: [Double] = []
        }
        var subjects: [Subject] = []
        defer {
            for subject in subjects {
                try? subject.store.close()
                try? subject.filling.close()
                Self.remove(subject.path)
            }
        }
        for size in sizes {
            let path = base + "/tap-\(size).sqlite"
            let filling = try TerminalStore(path: path)
            let fillStart = ContinuousClock.now
            try Self.fill(filling, count: size)
            let fillSeconds = elapsedSeconds(since: fillStart)
            // Opened again, as cardd starts on a store of that size (the open runs quick_check over the whole file).
            // The filling instance stays open, idle: the taps run on what the import left (it checkpoints its WAL).
            let openStart = ContinuousClock.now
            let store = try TerminalStore(path: path)
            subjects.append(Subject(size: size, path: path, filling: filling, store: store, fillSeconds: fillSeconds, openSeconds: elapsedSeconds(since: openStart)))
        }
        // Round robin over the sizes, one tap each, so that the disk's moods (other processes' I/O) fall on all alike.
        for tap in 0..<taps {
            for index in subjects.indices {
                let store = subjects[index].store
                let uid = Self.uid(tap * 7919)
                let start = ContinuousClock.now
                _ = try store.openIntents(cardUID: uid)
                let sequence = try store.nextSequence()
                try store.record(Self.intent(sequence, uid: uid))
                try store.complete(terminalSequence: sequence, outcome: .done(balanceAfter: 9_650, counterAfter: 6))
                _ = try store.lastSeenCounter(cardUID: uid)
                _ = try store.queueSummary()
                subjects[index].taps.append(elapsedSeconds(since: start) * 1e6)
                // The same reads alone: what is left when the fsyncs are taken out.
                let readStart = ContinuousClock.now
                _ = try store.openIntents(cardUID: uid)
                _ = try store.lastSeenCounter(cardUID: uid)
                _ = try store.queueSummary()
                _ = try store.outcome(terminalSequence: sequence)
                subjects[index].reads.append(elapsedSeconds(since: readStart) * 1e6)
            }
        }
        print("")
        print("journal cost of one tap: openIntents + nextSequence + record + complete + lastSeenCounter + queueSummary (\(taps) taps per size, round robin)")
        print("  entries   fill s   open s   tap median µs   tap p95 µs   reads median µs   reads p95 µs   db MiB   wal MiB")
        for subject in subjects {
            func mebibytes(_ path: String) -> Double { Double((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0) / 1_048_576 }
            print(String(format: "  %7d   %6.1f   %6.2f   %13.0f   %10.0f   %15.1f   %12.1f   %6.1f   %7.1f", subject.size,
                         subject.fillSeconds, subject.openSeconds, Self.percentile(subject.taps, 0.5), Self.percentile(subject.taps, 0.95),
                         Self.percentile(subject.reads, 0.5), Self.percentile(subject.reads, 0.95), mebibytes(subject.path), mebibytes(subject.path + "-wal")))
        }
    }

    /// Fills a store with `count` decided entries over 20,000 cards (1 % left open), in transactions of 50,000.
    static func fill(_ store: TerminalStore, count: Int) throws {
        var next = 1
        while next <= count {
            let last = min(count, next + 49_999)
            let batch = (next...last).map { index -> (intent: TransactionIntent, outcome: TransactionOutcome?) in
                let intent = intent(UInt32(index), uid: uid(index % 20_000))
                return (intent, index % 100 == 0 ? nil : .done(balanceAfter: 9_650, counterAfter: UInt16(truncatingIfNeeded: index / 20_000 + 6)))
            }
            _ = try store.importEntries(batch)
            next = last + 1
        }
    }

    static func intent(_ sequence: UInt32, uid: String) -> TransactionIntent {
        TransactionIntent(terminalID: 7, terminalSequence: sequence, kind: .purseDebit, cardUID: uid, cardSerial: nil,
                          amount: 350, balanceBefore: 10_000, counterBefore: 5, recordBefore: [UInt8](repeating: 0x5A, count: 16))
    }

    static func uid(_ index: Int) -> String {
        let value = UInt32(truncatingIfNeeded: index &* 2_654_435_761)
        let hex = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: 8 - hex.count) + hex
    }

    static func percentile(_ values: [Double], _ fraction: Double) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * fraction))]
    }

    static func remove(_ path: String) {
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }

    /// The type of the file system holding `path` (the longest mount point of /proc/self/mounts above it).
    static func fileSystem(of path: String) -> String {
        guard let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else { return "file system unknown" }
        let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        var best = (point: "", type: "unknown")
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 2 else { continue }
            let point = String(fields[1])
            let under = point == "/" || resolved == point || resolved.hasPrefix(point + "/")
            if under && point.count >= best.point.count { best = (point, String(fields[2])) }
        }
        return "\(best.type) on \(best.point)" + (best.type == "tmpfs" ? ": fsync costs nothing there" : "")
    }

    // MARK: crash child

    static func recordUntilKilled(_ path: String) throws -> Never {
        let store = try TerminalStore(path: path)
        while true {
            let sequence = try store.nextSequence()
            try store.record(intent(sequence, uid: uid(Int(sequence % 5))))
            // Written only once record returned: the parent kills us at any point after reading it.
            FileHandle.standardOutput.write(Data("recorded \(sequence)\n".utf8))
        }
    }
}
