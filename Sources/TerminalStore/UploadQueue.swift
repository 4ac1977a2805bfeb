import CampusCard
import Foundation
import GRDB

/// Where an entry is on its way to the settlement service.
///
/// `open` (undecided, not uploadable) → `queued` (decided by `complete`) → `sent` (`markSent`, may repeat) →
/// `acknowledged` (`markAcknowledged`, the only way there; then `prune` may delete it).
public enum UploadState: String, Sendable, Hashable, Codable, CaseIterable {
    case open, queued, sent, acknowledged
}

/// An entry of the journal: the intent, its outcome and its upload state.
public struct StoredTransaction: Sendable, Hashable, Codable {
    public var intent: TransactionIntent
    /// `nil` while open.
    public var outcome: TransactionOutcome?
    public var upload: UploadState
    public var decidedAt: Date?
    public var sentAt: Date?
    public var acknowledgedAt: Date?

    public init(intent: TransactionIntent, outcome: TransactionOutcome?, upload: UploadState, decidedAt: Date? = nil,
                sentAt: Date? = nil, acknowledgedAt: Date? = nil) {
        self.intent = intent
        self.outcome = outcome
        self.upload = upload
        self.decidedAt = decidedAt
        self.sentAt = sentAt
        self.acknowledgedAt = acknowledgedAt
    }
}

/// What the terminal still owes the settlement service, for the daemon's status and alarms.
public struct UploadQueueSummary: Sendable, Hashable, Codable {
    /// Decided entries not yet acknowledged (queued or sent).
    public var unacknowledged: Int
    /// The money of the unacknowledged done purse debits: what the holders' accounts do not yet show as spent.
    public var unacknowledgedDebits: Fen
    /// When the oldest (lowest sequence) unacknowledged entry was created, `nil` when none.
    public var oldestUnacknowledgedAt: Date?
    /// Intents not yet decided (not uploadable until the card's next tap here decides them).
    public var openIntents: Int

    public init(unacknowledged: Int, unacknowledgedDebits: Fen, oldestUnacknowledgedAt: Date?, openIntents: Int) {
        self.unacknowledged = unacknowledged
        self.unacknowledgedDebits = unacknowledgedDebits
        self.oldestUnacknowledgedAt = oldestUnacknowledgedAt
        self.openIntents = openIntents
    }
}

extension TerminalStore {
    /// The oldest entries still to upload (queued or sent, not acknowledged) after sequence `after`, in sequence
    /// order, at most `limit`. An uplink pass walks the queue with `after` so that an entry the service keeps
    /// refusing (a conflict) does not hold back the ones behind it.
    public func pendingUpload(limit: Int, after: UInt32 = 0) throws -> [StoredTransaction] {
        guard limit >= 0 else { throw TerminalStoreError(.badInput, "an upload batch of \(limit) entries is negative: give 0 or more") }
        return try read { db in
            try Row.fetchAll(db.cachedStatement(sql: TapSQL.pendingUpload), arguments: [Int64(after), limit]).map { try IntentColumns.decode($0, path: self.path) }
        }
    }

    /// Keeps the terminal parameters the settlement service sent (its JSON as received): they survive restarts and
    /// the next start applies them before the network is back.
    public func saveParameters(version: Int64, json: String) throws {
        try write(.queue) { db in
            try db.execute(sql: """
                INSERT INTO terminalParameters (id, version, json, receivedAt) VALUES (1, ?, ?, ?)
                ON CONFLICT (id) DO UPDATE SET version = excluded.version, json = excluded.json, receivedAt = excluded.receivedAt
                """, arguments: [version, json, storedDate(self.clock())])
        }
    }

    /// The parameters last saved, `nil` when the service never sent any.
    public func savedParameters() throws -> (version: Int64, json: String, receivedAt: Date)? {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT version, json, receivedAt FROM terminalParameters WHERE id = 1") else { return nil }
            return (row["version"], row["json"], date(row["receivedAt"]))
        }
    }

    /// Marks entries handed to the uplink (`sentAt` is stamped again on a resend). Acknowledged ones stay
    /// acknowledged. Throws `notInQueue`, changing nothing, when any is open or unknown.
    public func markSent(_ sequences: [UInt32]) throws {
        try changeQueue(sequences, to: .sent)
    }

    /// Marks entries acknowledged by the settlement service: the only way an entry becomes acknowledged (and so
    /// prunable). Already acknowledged ones are left as they are. Throws `notInQueue`, changing nothing, when any is
    /// open or unknown.
    public func markAcknowledged(_ sequences: [UInt32]) throws {
        try changeQueue(sequences, to: .acknowledged)
    }

    private func changeQueue(_ sequences: [UInt32], to state: UploadState) throws {
        try write(.queue) { db in
            let now = storedDate(self.clock())
            let lookup = try db.cachedStatement(sql: "SELECT upload FROM journalEntry WHERE sequence = ?")
            let update = try db.cachedStatement(sql: state == .sent
                ? "UPDATE journalEntry SET upload = 'sent', sentAt = ? WHERE sequence = ? AND upload IN ('queued', 'sent')"
                : "UPDATE journalEntry SET upload = 'acknowledged', acknowledgedAt = ? WHERE sequence = ? AND upload IN ('queued', 'sent')")
            var refused: [String] = []
            for sequence in sequences {
                switch try String.fetchOne(lookup, arguments: [Int64(sequence)]).flatMap(UploadState.init(rawValue:)) {
                case nil: refused.append("\(sequence) (unknown)")
                case .open?: refused.append("\(sequence) (still open)")
                case .queued?, .sent?: try update.execute(arguments: [now, Int64(sequence)])
                case .acknowledged?: break
                }
            }
            if !refused.isEmpty {
                throw TerminalStoreError(.notInQueue, "cannot mark \(state.rawValue): terminal sequence\(refused.count == 1 ? "" : "s") \(refused.prefix(10).joined(separator: ", ")) \(refused.count == 1 ? "is" : "are") not in the upload queue; nothing was changed: only decided entries are uploaded")
            }
        }
    }

    /// The queue's totals: O(1) (running totals kept by triggers, and one index lookup).
    public func queueSummary() throws -> UploadQueueSummary {
        try read { db in try self.queueSummary(db) }
    }

    func queueSummary(_ db: Database) throws -> UploadQueueSummary {
        let totals = try Row.fetchOne(db.cachedStatement(sql: TapSQL.totals))
        let oldest = try Double.fetchOne(db.cachedStatement(sql: TapSQL.oldestPending))
        return UploadQueueSummary(unacknowledged: totals?["unacknowledgedCount"] ?? 0, unacknowledgedDebits: Fen(totals?["unacknowledgedDebitFen"] ?? 0),
                            oldestUnacknowledgedAt: oldest.map(date), openIntents: totals?["openCount"] ?? 0)
    }

    /// Deletes the entries acknowledged before `date`; never an unacknowledged or open one. The sequence counter and
    /// the cards' last seen counters stay. Returns how many were deleted.
    @discardableResult
    public func prune(acknowledgedBefore date: Date) throws -> Int {
        try write(.prune) { db in
            try db.execute(sql: "DELETE FROM journalEntry WHERE upload = 'acknowledged' AND acknowledgedAt < ?", arguments: [storedDate(date)])
            return db.changesCount
        }
    }
}
