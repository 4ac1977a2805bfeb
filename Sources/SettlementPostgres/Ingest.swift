import CampusCard
import Foundation
import Logging
import PostgresNIO
import SettlementCore

/// Batch ingest: one transaction per uploaded batch and a fixed number of statements whatever its size.
///
/// 1. The terminal's row, FOR UPDATE: batches of one terminal take turns (its merchant is read with it).
/// 2. The batch's keys already stored (one SELECT): duplicates answer their original acknowledgement, a different
///    digest is a conflict (flagged, nothing else written).
/// 3. The cards the new records touch: their books (`card_books`) with the issued cards, locked FOR UPDATE in one query
///    with the UIDs sorted (two instances lock in the same order: no deadlock); a UID seen for the first time gets its
///    book created first.
/// 4. The phases of the online loads the purse-load records name (one query, only when there are some), then
///    `Ledger.apply` decides in Swift (pure values), then one statement writes the records (INSERT … SELECT FROM
///    unnest … ON CONFLICT DO NOTHING, counted: a key another instance stored meanwhile makes the transaction run
///    again), the movements, the flags and the books (with the purse mirrors); then the electronic accounts'
///    balances and the later decisions of earlier undetermined records.
extension PostgresSettlementStore {
    public func ingest(_ records: [TerminalRecord], from terminal: TerminalID, at date: Date) async throws -> [RecordAck] {
        if let stranger = records.first(where: { $0.terminalID != terminal }) {
            throw SettlementError(.badRequest, "the batch from terminal \(terminal) holds a record of terminal \(stranger.terminalID) (sequence \(stranger.terminalSequence)): a terminal uploads only its own records; nothing was stored")
        }
        if let bad = records.first(where: { !Self.isUID($0.cardUID) }) {
            throw SettlementError(.badRequest, "record \(bad.terminalSequence) names card UID \"\(bad.cardUID)\", not 8–20 hex digits: nothing was stored; fix the terminal's journal")
        }
        guard !records.isEmpty else { return [] }
        return try await transaction("ingest") { connection in
            try await Self.ingest(records, terminal: terminal, at: date, on: connection, logger: self.logger)
        }
    }

    /// A stored record's acknowledgement.
    struct StoredAck {
        var digest: String
        var booking: RecordAck.Booking
        var flags: [String]
        var receivedAt: Date
    }

    static func ingest(_ records: [TerminalRecord], terminal: TerminalID, at date: Date, on connection: PostgresConnection,
                       logger: Logger) async throws -> [RecordAck] {
        let terminalKey = Int64(terminal.rawValue)
        // 1. The terminal.
        let terminals = try await connection.query(
            "SELECT merchant, enabled FROM terminals WHERE id = \(terminalKey) FOR UPDATE", logger: logger)
        var found: (String, Bool)?
        for try await row in terminals.decode((String, Bool).self) { found = row }
        guard let found else {
            throw SettlementError(.notFound, "terminal \(terminal) is not registered: register it before it uploads; nothing was stored")
        }
        let (merchant, enabled) = found
        guard enabled else {
            throw SettlementError(.unauthorized, "terminal \(terminal) is disabled: enable it at the card office before it uploads; nothing was stored")
        }

        // 2. Keys stored before.
        // The range bounds the index scan: with stale statistics the planner had used the index on the terminal alone
        // and filtered every record the terminal ever uploaded (a batch's check grew to 12 ms at 40k records).
        let sequences = records.map { Int64($0.terminalSequence) }
        let storedRows = try await connection.query("""
            SELECT seq, digest, booking, flags, received_at FROM records
            WHERE terminal_id = \(terminalKey) AND seq BETWEEN \(sequences.min() ?? 0) AND \(sequences.max() ?? 0)
                AND seq = ANY(\(sequences))
            """, logger: logger)
        var stored: [UInt32: StoredAck] = [:]
        for try await (seq, digest, booking, flags, received) in storedRows.decode((Int64, String, String, String, Date).self) {
            stored[UInt32(truncatingIfNeeded: seq)] = StoredAck(
                digest: digest, booking: RecordAck.Booking(rawValue: booking) ?? .flagged,
                flags: flags.isEmpty ? [] : flags.split(separator: ",").map(String.init), receivedAt: received)
        }

        // Classify in batch order: new, or a repeat (of a stored record, or of one earlier in this batch).
        enum Disposition { case new(Int), repeatOf(UInt32, digest: String) }
        var dispositions: [Disposition] = []
        var fresh: [TerminalRecord] = []
        var freshDigests: [String] = []
        var firstInBatch: [UInt32: String] = [:]
        for record in records {
            let digest = record.contentDigest
            if stored[record.terminalSequence] != nil || firstInBatch[record.terminalSequence] != nil {
                dispositions.append(.repeatOf(record.terminalSequence, digest: digest))
            } else {
                firstInBatch[record.terminalSequence] = digest
                dispositions.append(.new(fresh.count))
                fresh.append(record)
                freshDigests.append(digest)
            }
        }

        // 3. The cards' books, locked in UID order.
        let uids = Array(Set(fresh.map { $0.cardUID.uppercased() })).sorted()
        var books = try await lockBooks(uids, on: connection, logger: logger)
        // The online loads the purse loads name, read after the books' lock: a confirmation of one of them holds the
        // same lock, so this sees it committed or not started (none for a batch without purse loads: no query).
        let loads = try await loadPhases(Ledger.loadReferences(of: fresh, books: books.values), on: connection, logger: logger)
        // The stations among the terminals of its credits (none: no query).
        let loaders = try await loaders(among: Ledger.loaderCandidates(of: fresh, books: books.values), on: connection, logger: logger)

        // 4. Decide.
        var bookings: [RecordAck.Booking] = []
        var flagLists: [[String]] = []
        var movements: [Movement] = []
        var raised: [RaisedFlag] = []
        var decided: [PendingDecision] = []
        bookings.reserveCapacity(fresh.count)
        flagLists.reserveCapacity(fresh.count)
        for record in fresh {
            let uid = record.cardUID.uppercased()
            var book = books[uid] ?? CardBook(uid: uid, card: nil)
            let decision = Ledger.apply(record, merchant: merchant, to: &book, loads: loads, loaders: loaders)
            books[uid] = book
            bookings.append(decision.booking)
            flagLists.append(decision.flags)
            movements += decision.movements
            raised += decision.raised
            decided += decision.decided
        }

        // Write, in one statement: the new records with their acknowledgement, the movements, the flags and the
        // books (with the purse mirrors).
        if !fresh.isEmpty {
            var statement = CompositeStatement()
            var parts = ["inserted AS (\(recordsInsert(fresh, digests: freshDigests, bookings: bookings, flags: flagLists, terminal: terminalKey, at: date, into: &statement)) RETURNING 1)"]
            if !movements.isEmpty { parts.append("posted AS (\(movementsInsert(movements, at: date, into: &statement)))") }
            if !raised.isEmpty { parts.append("raised AS (\(flagsInsert(raised, at: date, into: &statement)))") }
            let touched = uids.compactMap { books[$0] }
            if !touched.isEmpty { parts.append("saved AS (\(booksUpdate(touched, into: &statement)))") }
            let rows = try await connection.query(
                statement.query("WITH " + parts.joined(separator: ",\n") + "\nSELECT count(*) FROM inserted"), logger: logger)
            var count: Int64 = 0
            for try await inserted in rows.decode(Int64.self) { count = inserted }
            // Another instance stored one of these keys after our check (a terminal retrying on two instances): run
            // the whole transaction again (this one rolls back with everything it wrote); it then finds them stored.
            guard count == fresh.count else { throw RetryTransaction() }
            try await moveAccountBalances(movements, on: connection, logger: logger)
        }

        // The answers, in batch order.
        var conflicts: [RaisedFlag] = []
        var acks: [RecordAck] = []
        acks.reserveCapacity(records.count)
        for disposition in dispositions {
            switch disposition {
            case let .new(index):
                acks.append(RecordAck(terminalSequence: fresh[index].terminalSequence, status: .accepted,
                                      booking: bookings[index], flags: flagLists[index], receivedAt: date))
            case let .repeatOf(sequence, digest):
                let original: StoredAck
                if let earlier = stored[sequence] {
                    original = earlier
                } else {
                    guard case let .new(index)? = dispositions.first(where: {
                        if case let .new(index) = $0 { return fresh[index].terminalSequence == sequence }
                        return false
                    }) else { continue }
                    original = StoredAck(digest: freshDigests[index], booking: bookings[index],
                                         flags: flagLists[index], receivedAt: date)
                }
                if original.digest == digest {
                    acks.append(RecordAck(terminalSequence: sequence, status: .duplicate, booking: original.booking,
                                          flags: original.flags, receivedAt: original.receivedAt))
                } else {
                    acks.append(RecordAck(terminalSequence: sequence, status: .conflict, booking: .flagged,
                                          flags: ["content-conflict"], receivedAt: date))
                    conflicts.append(RaisedFlag(
                        code: "content-conflict", terminalID: terminal, terminalSequence: sequence, cardSerial: nil,
                        message: "terminal \(terminal) uploaded sequence \(sequence) again with other content (digest \(digest), stored \(original.digest)): refused; compare the terminal's journal with the stored record"))
                }
            }
        }

        // The conflicts' flags, and the later decisions of earlier undetermined records (after the INSERT above: the
        // record decided may be one of this batch).
        try await raiseConflicts(conflicts, terminal: terminal, on: connection, logger: logger, at: date)
        if !decided.isEmpty {
            try await connection.query(decisionsUpdate(decided), logger: logger)
        }
        return acks
    }

    /// The UPDATE writing the later decisions of earlier undetermined records. (No `= ANY` here: on the two-column
    /// key, the arrays' cross product priced the probes above a scan of every record.)
    static func decisionsUpdate(_ decided: [PendingDecision]) -> PostgresQuery {
        """
            UPDATE records SET decided = u.decided
            FROM unnest(\(decided.map { Int64($0.terminalID.rawValue) }), \(decided.map { Int64($0.terminalSequence) }),
                        \(decided.map { $0.booking.rawValue + ($0.flags.isEmpty ? "" : ":" + $0.flags.joined(separator: ",")) }))
                AS u(t, s, decided)
            WHERE records.terminal_id = u.t AND records.seq = u.s
            """
    }

    /// The INSERT of new records with their acknowledgement (`ON CONFLICT DO NOTHING`: the caller counts the rows).
    static func recordsInsert(_ fresh: [TerminalRecord], digests: [String], bookings: [RecordAck.Booking], flags: [[String]],
                              terminal: Int64, at date: Date, into statement: inout CompositeStatement) -> String {
        let null = statement.bind(nullInteger)
        return """
            INSERT INTO records (terminal_id, seq, kind, card_uid, card_serial, amount, balance_before, counter_before,
                consumption, reference_before, settlement_reference, outcome, balance_after, counter_after, created_at,
                digest, received_at, booking, flags)
            SELECT \(statement.bind(terminal)), seq, kind, uid, NULLIF(serial, \(null)), amount, before, counter,
                NULLIF(consumption, \(null)), NULLIF(ref, \(null)), NULLIF(sref, \(null)), outcome,
                NULLIF(after, \(null)), NULLIF(cafter, \(null)), created, digest, \(statement.bind(date)), booking, flags
            FROM unnest(\(statement.bind(fresh.map { Int64($0.terminalSequence) }))::bigint[],
                        \(statement.bind(fresh.map(\.kind.rawValue)))::text[],
                        \(statement.bind(fresh.map { $0.cardUID.uppercased() }))::text[],
                        \(statement.bind(fresh.map { $0.cardSerial.map(Int64.init).orNullSentinel }))::bigint[],
                        \(statement.bind(fresh.map { Int64($0.amount.rawValue) }))::bigint[],
                        \(statement.bind(fresh.map { Int64($0.balanceBefore.rawValue) }))::bigint[],
                        \(statement.bind(fresh.map { Int64($0.counterBefore) }))::bigint[],
                        \(statement.bind(fresh.map { $0.consumption.map { Int64($0.rawValue) }.orNullSentinel }))::bigint[],
                        \(statement.bind(fresh.map { $0.referenceBefore.map(Int64.init).orNullSentinel }))::bigint[],
                        \(statement.bind(fresh.map { $0.settlementReference.map(Int64.init).orNullSentinel }))::bigint[],
                        \(statement.bind(fresh.map(\.outcome.rawValue)))::text[],
                        \(statement.bind(fresh.map { $0.balanceAfter.map { Int64($0.rawValue) }.orNullSentinel }))::bigint[],
                        \(statement.bind(fresh.map { $0.counterAfter.map(Int64.init).orNullSentinel }))::bigint[],
                        \(statement.bind(fresh.map(\.createdAt)))::timestamptz[], \(statement.bind(digests))::text[],
                        \(statement.bind(bookings.map(\.rawValue)))::text[],
                        \(statement.bind(flags.map { $0.joined(separator: ",") }))::text[])
                AS u(seq, kind, uid, serial, amount, before, counter, consumption, ref, sref, outcome, after, cafter,
                     created, digest, booking, flags)
            ON CONFLICT (terminal_id, seq) DO NOTHING
            """
    }

    /// The messages of the content-conflict flags raised for a terminal's sequences (index `flags_conflicts`).
    static let conflictLookup = "SELECT message FROM flags WHERE code = 'content-conflict' AND terminal_id = $1 AND seq = ANY($2)"

    /// A conflicting upload raises its flag once per differing content (a terminal retrying must not flood the list).
    static func raiseConflicts(_ flags: [RaisedFlag], terminal: TerminalID, on connection: PostgresConnection, logger: Logger,
                               at date: Date) async throws {
        guard !flags.isEmpty else { return }
        var binds = PostgresBindings()
        binds.append(Int64(terminal.rawValue))
        binds.append(flags.compactMap { $0.terminalSequence.map(Int64.init) })
        let rows = try await connection.query(PostgresQuery(unsafeSQL: conflictLookup, binds: binds), logger: logger)
        var seen = Set<String>()
        for try await message in rows.decode(String.self) { seen.insert(message) }
        var fresh: [RaisedFlag] = []
        for flag in flags where !seen.contains(flag.message) {
            seen.insert(flag.message)
            fresh.append(flag)
        }
        try await raise(fresh, on: connection, logger: logger, at: date)
    }

    static func isUID(_ text: String) -> Bool {
        (8...20).contains(text.count) && text.count % 2 == 0 && text.allSatisfy(\.isHexDigit)
    }
}
