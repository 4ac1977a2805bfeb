import CampusCard
import Foundation
import GRDB
import SettlementCore

/// One uploaded batch inside its write transaction: the stored keys in one query, the card books in one query,
/// the rules in Swift (`Ledger`), the writes in multi-row statements.
struct IngestBatch {
    let db: Database
    let terminal: TerminalID
    let merchant: String
    let now: Double

    struct Stored {
        var digest: String
        var ack: RecordAck
    }

    func run(_ records: [TerminalRecord]) throws -> [RecordAck] {
        let receivedAt = Date(timeIntervalSince1970: now)
        var known = try storedAcks(Set(records.map(\.terminalSequence)))
        var acks: [RecordAck] = []
        acks.reserveCapacity(records.count)
        var fresh: [(record: TerminalRecord, digest: String, index: Int)] = []
        var conflicts: [RaisedFlag] = []
        for record in records {
            let digest = record.contentDigest
            if let stored = known[record.terminalSequence] {
                if stored.digest == digest {
                    var ack = stored.ack
                    ack.status = .duplicate
                    acks.append(ack)
                } else {
                    acks.append(RecordAck(terminalSequence: record.terminalSequence, status: .conflict, booking: .flagged,
                                          flags: ["content-conflict"], receivedAt: receivedAt))
                    conflicts.append(RaisedFlag(code: "content-conflict", terminalID: terminal, terminalSequence: record.terminalSequence,
                                                cardSerial: record.cardSerial,
                                                message: "terminal \(terminal) uploaded sequence \(record.terminalSequence) again with other content (digest \(digest), stored \(stored.digest)): refused; compare the terminal's journal with the stored record"))
                }
                continue
            }
            // A placeholder; the rules fill it in below. A repeat inside the batch sees it as stored.
            let ack = RecordAck(terminalSequence: record.terminalSequence, status: .accepted, booking: .nothing, receivedAt: receivedAt)
            known[record.terminalSequence] = Stored(digest: digest, ack: ack)
            fresh.append((record, digest, acks.count))
            acks.append(ack)
        }
        try raiseConflicts(conflicts)
        guard !fresh.isEmpty else { return acks }

        var books = try SQLiteSettlementStore.loadBooks(db, uids: Set(fresh.map { $0.record.cardUID.uppercased() }))
        // The online loads the purse loads name (none for a batch without purse loads: no query).
        let references = Ledger.loadReferences(of: fresh.lazy.map(\.record), books: books.values)
        let loads = references.isEmpty ? [:] : try SQLiteSettlementStore.loadPhases(db, references)
        // The stations among the terminals of its credits (none: no query).
        let loaders = try SQLiteSettlementStore.loaders(db, among: Ledger.loaderCandidates(of: fresh.lazy.map(\.record), books: books.values))
        var touched = Set<String>()
        var movements: [Movement] = []
        var raised: [RaisedFlag] = []
        var decided: [PendingDecision] = []
        var rows: [(record: TerminalRecord, digest: String, ack: RecordAck)] = []
        rows.reserveCapacity(fresh.count)
        for (record, digest, index) in fresh {
            let uid = record.cardUID.uppercased()
            var book = books[uid] ?? CardBook(uid: uid, card: nil)
            let decision = Ledger.apply(record, merchant: merchant, to: &book, loads: loads, loaders: loaders)
            books[uid] = book
            touched.insert(uid)
            movements += decision.movements
            raised += decision.raised
            decided += decision.decided
            var ack = acks[index]
            ack.booking = decision.booking
            ack.flags = decision.flags
            acks[index] = ack
            rows.append((record, digest, ack))
        }
        // A key repeated inside the batch answers with the first one's acknowledgement.
        let firstAcks = Dictionary(rows.map { ($0.record.terminalSequence, $0.ack) }, uniquingKeysWith: { first, _ in first })
        for index in acks.indices where acks[index].status == .duplicate {
            if let first = firstAcks[acks[index].terminalSequence] {
                var ack = first
                ack.status = .duplicate
                acks[index] = ack
            }
        }
        try insertRecords(rows)
        try SQLiteSettlementStore.post(movements, db: db, at: now)
        try SQLiteSettlementStore.raise(raised, db: db, at: now)
        try SQLiteSettlementStore.saveBooks(db, touched.compactMap { books[$0] })
        for decision in decided {
            try db.execute(sql: "UPDATE records SET decided = ? WHERE terminal_id = ? AND seq = ?",
                           arguments: [decision.booking.rawValue + (decision.flags.isEmpty ? "" : ":" + decision.flags.joined(separator: ",")),
                                       Int64(decision.terminalID.rawValue), Int64(decision.terminalSequence)])
        }
        return acks
    }

    /// The stored acknowledgements of the batch's sequences: one cached query, the keys as one JSON array.
    func storedAcks(_ sequences: Set<UInt32>) throws -> [UInt32: Stored] {
        var stored: [UInt32: Stored] = [:]
        let statement = try db.cachedStatement(sql: """
            SELECT seq, digest, booking, flags, received_at FROM records
            WHERE terminal_id = ? AND seq IN (SELECT value FROM json_each(?))
            """)
        let keys = "[" + sequences.map(String.init).joined(separator: ",") + "]"
        let rows = try Row.fetchCursor(statement, arguments: [Int64(terminal.rawValue), keys])
        while let row = try rows.next() {
            let sequence = UInt32(truncatingIfNeeded: row[0] as Int64)
            let booking: String = row[2]
            let flags: String = row[3]
            stored[sequence] = Stored(digest: row[1],
                                      ack: RecordAck(terminalSequence: sequence, status: .accepted,
                                                     booking: RecordAck.Booking(rawValue: booking) ?? .flagged,
                                                     flags: flags.isEmpty ? [] : flags.split(separator: ",").map(String.init),
                                                     receivedAt: Date(timeIntervalSince1970: row[4])))
        }
        return stored
    }

    /// A conflicting upload raises its flag once per differing content (a terminal retrying must not flood the list).
    func raiseConflicts(_ flags: [RaisedFlag]) throws {
        for flag in flags {
            let seen = try Int.fetchOne(db.cachedStatement(sql: Self.conflictLookup),
                                        arguments: [Int64(terminal.rawValue), flag.terminalSequence.map { Int64($0) }, flag.message])
            if seen == nil { try SQLiteSettlementStore.raise([flag], db: db, at: now) }
        }
    }

    /// Whether a content-conflict flag with this message was raised for the key (index `flags_conflicts`).
    static let conflictLookup = "SELECT 1 FROM flags WHERE code = 'content-conflict' AND terminal_id = ? AND seq = ? AND message = ?"

    static let recordColumns = 19

    func insertRecords(_ rows: [(record: TerminalRecord, digest: String, ack: RecordAck)]) throws {
        var values: [DatabaseValue] = []
        values.reserveCapacity(rows.count * Self.recordColumns)
        for (record, digest, ack) in rows {
            Self.appendRecordValues(record, into: &values)
            values.append(digest.databaseValue)
            values.append(ack.booking.rawValue.databaseValue)
            values.append(ack.flags.joined(separator: ",").databaseValue)
            values.append(now.databaseValue)
        }
        try BulkStatement.insert(db, """
            INSERT INTO records (terminal_id, seq, kind, card_uid, card_serial, amount, balance_before, counter_before, consumption,
            reference_before, settlement_reference, outcome, balance_after, counter_after, created_at, digest, booking, flags, received_at) VALUES
            """, columns: Self.recordColumns, values: values)
    }

    /// The record's own 15 columns (shared with the benchmark's plain INSERT).
    static func appendRecordValues(_ record: TerminalRecord, into values: inout [DatabaseValue]) {
        values.append(Int64(record.terminalID.rawValue).databaseValue)
        values.append(Int64(record.terminalSequence).databaseValue)
        values.append(record.kind.rawValue.databaseValue)
        values.append(record.cardUID.uppercased().databaseValue)
        values.append(record.cardSerial.map { Int64($0).databaseValue } ?? .null)
        values.append(Int64(record.amount.rawValue).databaseValue)
        values.append(Int64(record.balanceBefore.rawValue).databaseValue)
        values.append(Int64(record.counterBefore).databaseValue)
        values.append(record.consumption.map { Int64($0.rawValue).databaseValue } ?? .null)
        values.append(record.referenceBefore.map { Int64($0).databaseValue } ?? .null)
        values.append(record.settlementReference.map { Int64($0).databaseValue } ?? .null)
        values.append(record.outcome.rawValue.databaseValue)
        values.append(record.balanceAfter.map { Int64($0.rawValue).databaseValue } ?? .null)
        values.append(record.counterAfter.map { Int64($0).databaseValue } ?? .null)
        values.append(record.createdAt.timeIntervalSince1970.databaseValue)
    }
}
