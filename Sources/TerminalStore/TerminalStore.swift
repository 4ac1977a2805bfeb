import CampusCard
import Foundation
import GRDB
#if canImport(Glibc)
import Glibc
#endif

/// The terminal's durable store: the journal of card transactions (`TerminalJournal`), their upload queue, the
/// highest card counters seen, and the blacklist, in one SQLite file (WAL, `synchronous=FULL`) through GRDB.
///
/// Every call is synchronous and blocks on disk I/O (a commit waits for fsync): call it from a thread of its own or
/// a dispatch queue, never from the cooperative pool. Every call costs the same at any journal size (indexes and
/// running totals; see docs/terminal-store.md). Several processes may share one file (cardd and cardctl): writes
/// take SQLite's write lock and wait up to `Options.busyTimeout` for it.
///
/// Sendable: every stored property is immutable and Sendable (`DatabasePool` serialises its own writes).
public final class TerminalStore: TerminalJournal, Sendable {
    /// How to open a store.
    public struct Options: Sendable {
        /// `record` refuses to start when the store's file system has less free space than this (bytes), so that the
        /// outcomes of taps already recorded can still be written. Default 4 MiB.
        public var minimumFreeBytes: Int64
        /// How long a write waits for another process's write lock (seconds).
        public var busyTimeout: TimeInterval
        /// Create the file (and its directory) when missing; else refuse with `cannotOpen`.
        public var createIfMissing: Bool
        /// SQLite's page cache per connection (KiB). SQLite's default, 2,000 KiB for each of the writer and up to
        /// `maximumReaders` readers, grew cardd's resident memory with its journal (0.38 KiB a tap) until full; a tap
        /// reads a few B-tree pages, and the kernel's page cache keeps the file's pages anyway.
        public var pageCacheKiB: Int
        /// Reader connections at most (a terminal reads rarely: status, upload, export).
        public var maximumReaders: Int

        public init(minimumFreeBytes: Int64 = 4 << 20, busyTimeout: TimeInterval = 5, createIfMissing: Bool = true,
                    pageCacheKiB: Int = 256, maximumReaders: Int = 2) {
            self.minimumFreeBytes = minimumFreeBytes
            self.busyTimeout = busyTimeout
            self.createIfMissing = createIfMissing
            self.pageCacheKiB = pageCacheKiB
            self.maximumReaders = maximumReaders
        }
    }

    /// The store file.
    public let path: String
    public let options: Options
    let pool: DatabasePool
    let clock: @Sendable () -> Date

    /// Opens (or creates) the store at `path`: WAL mode, `synchronous=FULL` on the writer, a busy timeout, foreign
    /// keys; checks the file with `PRAGMA quick_check`, then runs the migrations. Throws `TerminalStoreError`:
    /// `.corrupt` for a file that is not an SQLite database or fails the check (nothing is written to it),
    /// `.newerSchema`, `.cannotOpen`, `.diskFull`.
    /// - Parameter clock: the time stamped on decisions, uploads and blacklist changes (tests inject one).
    public init(path: String, options: Options = Options(), clock: @escaping @Sendable () -> Date = { Date() }) throws {
        self.path = path
        self.options = options
        self.clock = clock
        try Self.prepareFile(path, create: options.createIfMissing)
        try Self.quickCheck(path, busyTimeout: options.busyTimeout)
        var configuration = Configuration()
        configuration.label = "TerminalStore"
        configuration.foreignKeysEnabled = true
        configuration.busyMode = .timeout(options.busyTimeout)
        configuration.maximumReaderCount = max(1, options.maximumReaders)
        let cacheKiB = max(64, options.pageCacheKiB)
        configuration.prepareDatabase { db in
            // Negative: a size in KiB, whatever the page size.
            try db.execute(sql: "PRAGMA cache_size = -\(cacheKiB)")
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
        } catch {
            throw TerminalStoreError.from(error, during: .open, path: path)
        }
        do {
            // The pool set the writer to NORMAL while opening (GRDB's setUpWALMode): FULL syncs the WAL at every
            // commit, so a recorded intent survives a power cut, not only a crash.
            let synchronous = try pool.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA synchronous = FULL")
                return try Int.fetchOne(db, sql: "PRAGMA synchronous")
            }
            guard synchronous == 2 else {
                throw TerminalStoreError(.failed, "the terminal store \(path) did not accept synchronous=FULL (it reports \(synchronous.map(String.init) ?? "nothing")); this SQLite build cannot make commits durable: report it")
            }
            try pool.read { db in
                let known = Set(Schema.migrationNames)
                let unknown = try Schema.migrator.appliedIdentifiers(db).subtracting(known)
                if !unknown.isEmpty {
                    throw TerminalStoreError(.newerSchema, "the terminal store \(path) was written by a newer version (migrations \(unknown.sorted().joined(separator: ", "))): install that version again, or move the file aside")
                }
            }
            try Schema.migrator.migrate(pool)
        } catch {
            try? pool.close()
            throw TerminalStoreError.from(error, during: .open, path: path)
        }
    }

    /// `PRAGMA quick_check` (O(N): reads every page once) on a read-only connection, before the pool opens: opening a
    /// pool writes (WAL mode, GRDB's first WAL frame, a checkpoint at close), and a damaged file must be kept as it
    /// is for the card office.
    static func quickCheck(_ path: String, busyTimeout: TimeInterval) throws {
        var configuration = Configuration()
        configuration.readonly = true
        configuration.label = "TerminalStore.quickCheck"
        configuration.busyMode = .timeout(busyTimeout)
        do {
            let queue = try DatabaseQueue(path: path, configuration: configuration)
            let problems = try queue.read { db in try String.fetchAll(db, sql: "PRAGMA quick_check(5)") }
            try queue.close()
            if problems != ["ok"] {
                throw TerminalStoreError.corrupt(path: path, why: "quick_check: " + problems.joined(separator: "; "))
            }
        } catch {
            throw TerminalStoreError.from(error, during: .open, path: path)
        }
    }

    /// Checkpoints the WAL into the file and truncates it (the file alone is then the whole store: a backup can copy
    /// it), then closes the connections. Calls after it throw.
    public func close() throws {
        do {
            checkpoint()
            try pool.close()
        } catch {
            throw TerminalStoreError.from(error, during: .read, path: path)
        }
    }

    /// Copies the WAL into the file and truncates it. Best effort: a reader in another process may hold an older
    /// snapshot; SQLite's automatic checkpoints (every 1000 pages) and the last close finish the job.
    func checkpoint() {
        _ = try? pool.writeWithoutTransaction { try $0.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
    }

    /// The suggested store of a technician's box: `~/.local/state/onecard/terminal.sqlite`.
    public static func defaultPath(home: String? = ProcessInfo.processInfo.environment["HOME"]) -> String {
        (home ?? "/tmp") + "/.local/state/onecard/terminal.sqlite"
    }

    /// The store's journal mode and synchronous level as the writer connection reports them (for tests and `check`).
    public func writerPragmas() throws -> (journalMode: String, synchronous: Int) {
        try write(.read) { db in
            (try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "", try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1)
        }
    }

    // MARK: - TerminalJournal

    /// The next terminal sequence: one committed transaction on the stored counter, so it is monotonic across
    /// restarts and processes and never reused (even after the entries are pruned).
    public func nextSequence() throws -> UInt32 {
        try write(.nextSequence) { db in
            let issued = try Int64.fetchOne(db.cachedStatement(sql: TapSQL.nextSequence))
            guard let issued, let sequence = UInt32(exactly: issued) else {
                throw TerminalStoreError(.sequencesExhausted, "the terminal store \(self.path) has issued every terminal sequence (4294967295): the terminal needs a new terminal id from the card office")
            }
            return sequence
        }
    }

    /// Durably records an intent: committed with `synchronous=FULL` before it returns. Refuses a sequence already
    /// recorded (`sequenceReused`), and refuses to start when the file system has less than
    /// `Options.minimumFreeBytes` free (`diskFull`): then nothing is written, and the card must not be.
    public func record(_ intent: TransactionIntent) throws {
        try requireFreeSpace(for: .record(intent.terminalSequence))
        try write(.record(intent.terminalSequence)) { db in
            try self.insert(intent, db)
        }
    }

    /// Inserts an open intent and raises the sequence counter to it (inside the caller's transaction).
    func insert(_ intent: TransactionIntent, _ db: Database) throws {
        let sequence = Int64(intent.terminalSequence)
        if try Bool.fetchOne(db.cachedStatement(sql: TapSQL.sequenceExists), arguments: [sequence]) == true {
            throw TerminalStoreError(.sequenceReused, "terminal sequence \(intent.terminalSequence) is already recorded in \(path) (another process shares this store, or its counter was reset?): nothing was written to the card; retry the tap")
        }
        try db.cachedStatement(sql: IntentColumns.insertSQL).execute(arguments: IntentColumns.arguments(intent))
        try db.cachedStatement(sql: TapSQL.raiseCounter).execute(arguments: [sequence])
    }

    /// Marks an intent decided and queues it for upload. The same outcome again is a no-op; a different one throws
    /// `conflictingOutcome`; an unknown sequence throws `unknownSequence`. Not refused for low free space (that
    /// reserve is kept for it); SQLITE_FULL throws `diskFull` and the intent stays open.
    public func complete(terminalSequence: UInt32, outcome: TransactionOutcome) throws {
        _ = try write(.complete(terminalSequence)) { db in
            try self.decide(terminalSequence, outcome, db)
        }
    }

    /// Returns whether it changed anything.
    @discardableResult
    func decide(_ sequence: UInt32, _ outcome: TransactionOutcome, _ db: Database) throws -> Bool {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: TapSQL.outcome),
                                         arguments: [Int64(sequence)]) else {
            throw TerminalStoreError(.unknownSequence, "no intent with terminal sequence \(sequence) in \(path) to complete: report it")
        }
        if let existing = try OutcomeColumns(kind: row["outcome"], balanceAfter: row["balanceAfterFen"], counterAfter: row["counterAfter"]).outcome(sequence: sequence, path: path) {
            if existing == outcome { return false }
            throw TerminalStoreError(.conflictingOutcome, "terminal sequence \(sequence) was already completed as \(existing.columnName), now \(outcome.columnName): the card and the journal disagree; keep the card and report it")
        }
        let columns = OutcomeColumns(outcome)
        try db.cachedStatement(sql: TapSQL.decide).execute(arguments: [columns.kind, columns.balanceAfter, columns.counterAfter, storedDate(clock()), Int64(sequence)])
        return true
    }

    /// Intents recorded for this card and not yet decided, oldest (lowest sequence) first.
    public func openIntents(cardUID: String) throws -> [TransactionIntent] {
        try read { db in
            try Row.fetchAll(db.cachedStatement(sql: TapSQL.openIntents),
                             arguments: [cardUID]).map { try IntentColumns.decode($0, path: self.path).intent }
        }
    }

    /// The outcome of an intent, `nil` while open or unknown.
    public func outcome(terminalSequence: UInt32) throws -> TransactionOutcome? {
        try read { db in
            guard let row = try Row.fetchOne(db.cachedStatement(sql: TapSQL.outcome),
                                             arguments: [Int64(terminalSequence)]) else { return nil }
            return try OutcomeColumns(kind: row["outcome"], balanceAfter: row["balanceAfterFen"], counterAfter: row["counterAfter"]).outcome(sequence: terminalSequence, path: self.path)
        }
    }

    /// The highest purse counter a done outcome of this card reached at this terminal (`nil` if none), kept when
    /// entries are pruned. For `Terminal.lastSeenCounter`: a card showing a lower counter had an older state written
    /// back. Purse only: the water record has its own counter, which a rebuild resets to 0.
    public func lastSeenCounter(cardUID: String) throws -> UInt16? {
        try read { db in
            try Int64.fetchOne(db.cachedStatement(sql: TapSQL.lastSeenCounter), arguments: [cardUID])
                .flatMap { UInt16(exactly: $0) }
        }
    }

    // MARK: - Reading

    /// One entry by terminal sequence.
    public func transaction(sequence: UInt32) throws -> StoredTransaction? {
        try read { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT \(IntentColumns.selectList) FROM journalEntry WHERE sequence = ?"), arguments: [Int64(sequence)])
                .map { try IntentColumns.decode($0, path: self.path) }
        }
    }

    /// Entries in sequence order, from `sequence` on (inclusive), at most `limit`; only one card's with `cardUID`,
    /// only undecided ones with `openOnly`. Page through a large journal with `from: last.sequence + 1`.
    public func entries(from sequence: UInt32 = 0, limit: Int = 1000, cardUID: String? = nil, openOnly: Bool = false) throws -> [StoredTransaction] {
        guard limit >= 0 else { throw TerminalStoreError(.badInput, "a listing limit of \(limit) is negative: give 0 or more") }
        var conditions = ["sequence >= ?"]
        var arguments: StatementArguments = [Int64(sequence)]
        if let cardUID {
            conditions.append("cardUID = ?")
            arguments += [cardUID]
        }
        if openOnly { conditions.append("outcome IS NULL") }
        arguments += [limit]
        let sql = "SELECT \(IntentColumns.selectList) FROM journalEntry WHERE \(conditions.joined(separator: " AND ")) ORDER BY sequence LIMIT ?"
        return try read { db in
            try Row.fetchAll(db.cachedStatement(sql: sql), arguments: arguments).map { try IntentColumns.decode($0, path: self.path) }
        }
    }

    /// Calls `body` with every entry in sequence order, a page at a time (constant memory: for exports).
    public func forEachEntry(pageSize: Int = 1000, _ body: (StoredTransaction) throws -> Void) throws {
        var next: UInt32 = 0
        while true {
            let page = try entries(from: next, limit: pageSize)
            for entry in page { try body(entry) }
            guard let last = page.last, page.count == pageSize, last.intent.terminalSequence < UInt32.max else { return }
            next = last.intent.terminalSequence + 1
        }
    }

    /// The last terminal sequence issued or recorded (the next `nextSequence()` is one more).
    public func lastIssuedSequence() throws -> UInt32 {
        try read { db in
            UInt32(exactly: try Int64.fetchOne(db, sql: "SELECT lastIssued FROM sequenceCounter WHERE id = 1") ?? 0) ?? 0
        }
    }

    // MARK: - Plumbing

    /// A write transaction (BEGIN IMMEDIATE), errors classified.
    func write<T>(_ operation: StoreOperation, _ body: (Database) throws -> T) throws -> T {
        do {
            return try pool.write(body)
        } catch {
            throw TerminalStoreError.from(error, during: operation, path: path)
        }
    }

    /// A read on a reader connection (sees every committed write), errors classified.
    func read<T>(_ body: (Database) throws -> T) throws -> T {
        do {
            return try pool.read(body)
        } catch {
            throw TerminalStoreError.from(error, during: .read, path: path)
        }
    }

    /// Refuses the operation when the store's file system has less than `minimumFreeBytes` free for us (statvfs
    /// f_bavail: what an unprivileged writer may use).
    func requireFreeSpace(for operation: StoreOperation) throws {
        let free = try Self.freeBytes(atDirectoryOf: path)
        if free < options.minimumFreeBytes {
            var error = TerminalStoreError(.diskFull, operation.diskFullMessage)
            error.cause = "\(free) bytes free, \(options.minimumFreeBytes) required"
            throw error
        }
    }

    /// The free space of the file system holding `path`, in bytes.
    public static func freeBytes(atDirectoryOf path: String) throws -> Int64 {
        var status = statvfs()
        let directory = (path as NSString).deletingLastPathComponent
        guard statvfs(directory.isEmpty ? "." : directory, &status) == 0 else {
            let why = String(cString: strerror(errno))
            throw TerminalStoreError(.failed, "cannot read the free space of the terminal store's file system (\(why)): check that \(directory) exists")
        }
        return Int64(clamping: UInt64(status.f_bavail) &* UInt64(status.f_frsize))
    }

    /// Creates the directory and an empty file with mode 0600 when missing (SQLite would create it with the
    /// umask's mode; its -wal and -shm files take the database file's mode). Refuses a directory in the way.
    static func prepareFile(_ path: String, create: Bool) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            if isDirectory.boolValue {
                throw TerminalStoreError(.cannotOpen, "the terminal store \(path) is a directory: give the path of a file (e.g. \(defaultPath()))")
            }
            return
        }
        guard create else {
            throw TerminalStoreError(.cannotOpen, "there is no terminal store at \(path): give the path of an existing store (--journal)")
        }
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw TerminalStoreError(.cannotOpen, "cannot create the directory \(directory) for the terminal store (\(error.localizedDescription)): create it, or choose another path")
            }
        }
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd < 0 {
            if errno == EEXIST { return }  // another process created it meanwhile
            let why = String(cString: strerror(errno))
            throw TerminalStoreError(errno == ENOSPC ? TerminalStoreError.Code.diskFull : .cannotOpen, "cannot create the terminal store \(path) (\(why)): check the directory's permissions and free space, or choose another path")
        }
        Glibc.close(fd)
    }
}

/// The statements of a tap (and of the upload queue), in one place so that a test can check with EXPLAIN QUERY PLAN
/// that each is an index search, never a scan of the journal: their cost does not grow with the number of entries.
enum TapSQL {
    static let nextSequence = "UPDATE sequenceCounter SET lastIssued = lastIssued + 1 WHERE id = 1 AND lastIssued < 4294967295 RETURNING lastIssued"
    static let sequenceExists = "SELECT EXISTS (SELECT 1 FROM journalEntry WHERE sequence = ?)"
    static let raiseCounter = "UPDATE sequenceCounter SET lastIssued = MAX(lastIssued, ?) WHERE id = 1"
    static let outcome = "SELECT outcome, balanceAfterFen, counterAfter FROM journalEntry WHERE sequence = ?"
    static let decide = "UPDATE journalEntry SET outcome = ?, balanceAfterFen = ?, counterAfter = ?, decidedAt = ?, upload = 'queued' WHERE sequence = ?"
    static let openIntents = "SELECT \(IntentColumns.selectList) FROM journalEntry WHERE cardUID = ? AND outcome IS NULL ORDER BY sequence"
    static let lastSeenCounter = "SELECT purseCounter FROM cardCounter WHERE cardUID = ?"
    static let totals = "SELECT openCount, unacknowledgedCount, unacknowledgedDebitFen FROM queueTotals WHERE id = 1"
    static let oldestPending = "SELECT createdAt FROM journalEntry WHERE upload IN ('queued', 'sent') ORDER BY sequence LIMIT 1"
    static let pendingUpload = "SELECT \(IntentColumns.selectList) FROM journalEntry WHERE upload IN ('queued', 'sent') AND sequence > ? ORDER BY sequence LIMIT ?"
    static let blacklistBySerial = "SELECT * FROM blacklistEntry WHERE cardSerial = ?"
    static let blacklistByUID = "SELECT * FROM blacklistEntry WHERE cardUID = ? LIMIT 1"

    /// Each statement with sample arguments, for the plan test.
    static let all: [(name: String, sql: String, arguments: [Int64?])] = [
        ("nextSequence", nextSequence, []), ("sequenceExists", sequenceExists, [1]), ("raiseCounter", raiseCounter, [1]),
        ("outcome", outcome, [1]), ("decide", decide, [nil, nil, nil, 0, 1]), ("openIntents", openIntents, [nil]),
        ("lastSeenCounter", lastSeenCounter, [nil]), ("totals", totals, []), ("oldestPending", oldestPending, []),
        ("pendingUpload", pendingUpload, [0, 10]), ("blacklistBySerial", blacklistBySerial, [1]), ("blacklistByUID", blacklistByUID, [nil]),
    ]
}
