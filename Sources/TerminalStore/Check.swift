import Foundation
import GRDB

/// The result of `TerminalStore.check()`.
public struct StoreCheck: Sendable, Hashable, Codable {
    public struct Counts: Sendable, Hashable, Codable {
        public var entries = 0
        public var open = 0
        public var queued = 0
        public var sent = 0
        public var acknowledged = 0
        public var blacklisted = 0
        public var blacklistChanges = 0
    }
    /// `PRAGMA integrity_check`: ["ok"] when the file is sound.
    public var integrity: [String]
    /// The last migration applied ("v1", ...).
    public var schemaVersion: String
    public var journalMode: String
    /// The writer's `PRAGMA synchronous` (2 = FULL).
    public var synchronous: Int
    public var counts: Counts
    /// The last terminal sequence issued or recorded, and the highest sequence in the journal.
    public var sequenceCounter: UInt32
    public var highestSequence: UInt32?
    public var queue: UploadQueueSummary
    /// Broken invariants, one line each (empty when sound).
    public var problems: [String]

    /// Whether the file is sound and every invariant holds.
    public var isHealthy: Bool { integrity == ["ok"] && problems.isEmpty }
}

extension TerminalStore {
    /// Checks the whole store: `PRAGMA integrity_check` (O(N log N): for cardctl and the card office, not for every
    /// tap), the schema version, counts, and the invariants: no acknowledged (or queued, or sent) entry without a
    /// decided outcome, no decided entry left open, the sequence counter at or above the highest sequence, the
    /// running queue totals equal to a recount, the cards' last seen counters at or above their done outcomes'.
    public func check() throws -> StoreCheck {
        let pragmas = try writerPragmas()
        return try read { db in
            let integrity = try String.fetchAll(db, sql: "PRAGMA integrity_check(20)")
            let applied = try Schema.migrator.appliedMigrations(db)
            var counts = StoreCheck.Counts()
            for row in try Row.fetchAll(db, sql: "SELECT upload, COUNT(*) AS n FROM journalEntry GROUP BY upload") {
                let n: Int = row["n"]
                counts.entries += n
                switch UploadState(rawValue: row["upload"] ?? "") {
                case .open?: counts.open = n
                case .queued?: counts.queued = n
                case .sent?: counts.sent = n
                case .acknowledged?: counts.acknowledged = n
                case nil: break
                }
            }
            counts.blacklisted = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM blacklistEntry") ?? 0
            counts.blacklistChanges = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM blacklistChange") ?? 0
            let counter = try Int64.fetchOne(db, sql: "SELECT lastIssued FROM sequenceCounter WHERE id = 1")
            let highest = try Int64.fetchOne(db, sql: "SELECT MAX(sequence) FROM journalEntry")

            var problems: [String] = []
            let undecidedInQueue = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM journalEntry WHERE upload <> 'open' AND outcome IS NULL") ?? 0
            if undecidedInQueue > 0 { problems.append("\(undecidedInQueue) entries are queued, sent or acknowledged without a decided outcome") }
            let decidedOpen = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM journalEntry WHERE upload = 'open' AND outcome IS NOT NULL") ?? 0
            if decidedOpen > 0 { problems.append("\(decidedOpen) decided entries are not in the upload queue") }
            if counter == nil { problems.append("the sequence counter row is missing") }
            if let highest, highest > (counter ?? -1) {
                problems.append("the sequence counter \(counter ?? -1) is below the highest recorded sequence \(highest): nextSequence would reuse a number")
            }
            let totals = try Row.fetchOne(db, sql: "SELECT openCount, unacknowledgedCount, unacknowledgedDebitFen FROM queueTotals WHERE id = 1")
            let recount = try Row.fetchOne(db, sql: """
                SELECT COALESCE(SUM(upload = 'open'), 0) AS openCount, COALESCE(SUM(upload IN ('queued', 'sent')), 0) AS unacknowledgedCount,
                       COALESCE(SUM(CASE WHEN upload IN ('queued', 'sent') AND kind = 'purse-debit' AND outcome = 'done' THEN amountFen ELSE 0 END), 0) AS unacknowledgedDebitFen
                FROM journalEntry
                """)
            for column in ["openCount", "unacknowledgedCount", "unacknowledgedDebitFen"] {
                let kept: Int64? = totals?[column], counted: Int64? = recount?[column]
                if kept != counted { problems.append("the running total \(column) is \(kept.map(String.init) ?? "missing"), a recount gives \(counted.map(String.init) ?? "nothing")") }
            }
            let lowCounters = try Int.fetchOne(db, sql: """
                SELECT COUNT(*) FROM (SELECT cardUID, MAX(counterAfter) AS highest FROM journalEntry WHERE outcome = 'done' AND wallet = 'purse' GROUP BY cardUID) AS done
                LEFT JOIN cardCounter USING (cardUID) WHERE cardCounter.purseCounter IS NULL OR cardCounter.purseCounter < done.highest
                """) ?? 0
            if lowCounters > 0 { problems.append("\(lowCounters) cards' last seen counters are below a done outcome's counter") }
            if pragmas.synchronous != 2 { problems.append("the writer's synchronous is \(pragmas.synchronous), not FULL (2)") }
            if pragmas.journalMode != "wal" { problems.append("the journal mode is \(pragmas.journalMode), not wal") }

            return StoreCheck(integrity: integrity, schemaVersion: applied.last ?? "none", journalMode: pragmas.journalMode, synchronous: pragmas.synchronous,
                              counts: counts, sequenceCounter: UInt32(clamping: counter ?? 0), highestSequence: highest.map { UInt32(clamping: $0) },
                              queue: try self.queueSummary(db), problems: problems)
        }
    }
}
