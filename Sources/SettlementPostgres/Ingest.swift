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
/// 3. The cards the new records touch: their ledger state rows, created when missing, then locked FOR UPDATE in one
///    query with the UIDs sorted (two instances lock in the same order: no deadlock); the issued cards in one query.
/// 4. The ledger rules decide in Swift (pure values), then the writes: records (INSERT … SELECT FROM unnest … ON
///    CONFLICT DO NOTHING RETURNING: a key another instance stored meanwhile makes the transaction run again), ledger
///    pairs, flags, card states, purse mirrors.
extension PostgresSettlementStore {
    public func ingest(_ records: [TerminalRecord], from terminal: TerminalID, at date: Date) async throws -> [RecordAck] {
        if let stranger = records.first(where: { $0.terminalID != terminal }) {
            throw SettlementError(.badRequest, "ingest: record \(stranger.terminalSequence) is from terminal \(stranger.terminalID), not \(terminal): upload each terminal's records under its own id")
        }
        guard !records.isEmpty else { return [] }
        return try await transaction("ingest") { connection in
            try await Self.ingest(records, terminal: terminal, at: date, on: connection, logger: logger)
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
            "SELECT merchant FROM terminals WHERE id = \(terminalKey) FOR UPDATE", logger: logger)
        var merchant: String?
        for try await value in terminals.decode(String.self) { merchant = value }
        guard let merchant else {
            throw SettlementError(.notFound, "ingest: terminal \(terminal) is not registered: register it before it uploads")
        }

        // 2. Keys stored before.
        let sequences = records.map { Int64($0.terminalSequence) }
        let storedRows = try await connection.query("""
            SELECT seq, digest, booking, flags, received_at FROM records
            WHERE terminal_id = \(terminalKey) AND seq = ANY(\(sequences))
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

        // 3. The cards' state, locked in UID order.
        let uids = Array(Set(fresh.map { $0.cardUID.uppercased() })).sorted()
        var states: [String: CardLedgerState] = [:]
        var cards: [String: Card] = [:]
        if !uids.isEmpty {
            try await connection.query(
                "INSERT INTO card_state (card_uid) SELECT u FROM unnest(\(uids)) AS u ORDER BY u ON CONFLICT DO NOTHING",
                logger: logger)
            let stateRows = try await connection.query("""
                SELECT card_uid, state::text FROM card_state WHERE card_uid = ANY(\(uids)) ORDER BY card_uid FOR UPDATE
                """, logger: logger)
            let decoder = JSONDecoder()
            for try await (uid, text) in stateRows.decode((String, String?).self) {
                states[uid] = try text.map { try decoder.decode(CardLedgerState.self, from: Data($0.utf8)) } ?? CardLedgerState()
            }
            let cardRows = try await connection.query("""
                SELECT serial, uid, account_id, status, purse_mirror, purse_counter, issued_at FROM cards WHERE uid = ANY(\(uids))
                """, logger: logger)
            for try await (serial, uid, account, status, mirror, counter, issued)
                in cardRows.decode((Int64, String, Int64, String, Int64, Int64?, Date).self) {
                cards[uid] = Card(serial: UInt32(truncatingIfNeeded: serial), uid: uid, accountID: account,
                                  status: CardStatus(rawValue: status) ?? .frozen, purseMirror: Fen(Int(mirror)),
                                  purseCounter: counter.map { UInt16(truncatingIfNeeded: $0) }, issuedAt: issued)
            }
        }

        // 4. Decide.
        var decisions = IngestDecisions()
        for record in fresh {
            let uid = record.cardUID.uppercased()
            var state = states[uid] ?? CardLedgerState()
            let decision = IngestRules.decide(record, card: cards[uid], merchant: merchant, state: &state)
            states[uid] = state
            decisions.add(decision, for: record, card: cards[uid])
        }

        // Write: the new records with their acknowledgement.
        if !fresh.isEmpty {
            let inserted = try await connection.query("""
                INSERT INTO records (terminal_id, seq, kind, card_uid, card_serial, amount, balance_before, counter_before,
                    consumption, reference_before, settlement_reference, outcome, balance_after, counter_after, created_at,
                    digest, received_at, booking, flags)
                SELECT \(terminalKey), seq, kind, uid, NULLIF(serial, \(nullInteger)), amount, before, counter,
                    NULLIF(consumption, \(nullInteger)), NULLIF(ref, \(nullInteger)), NULLIF(sref, \(nullInteger)), outcome,
                    NULLIF(after, \(nullInteger)), NULLIF(cafter, \(nullInteger)), created, digest, \(date), booking, flags
                FROM unnest(\(fresh.map { Int64($0.terminalSequence) }), \(fresh.map(\.kind.rawValue)),
                            \(fresh.map { $0.cardUID.uppercased() }), \(fresh.map { $0.cardSerial.map(Int64.init).orNullSentinel }),
                            \(fresh.map { Int64($0.amount.rawValue) }), \(fresh.map { Int64($0.balanceBefore.rawValue) }),
                            \(fresh.map { Int64($0.counterBefore) }),
                            \(fresh.map { $0.consumption.map { Int64($0.rawValue) }.orNullSentinel }),
                            \(fresh.map { $0.referenceBefore.map(Int64.init).orNullSentinel }),
                            \(fresh.map { $0.settlementReference.map(Int64.init).orNullSentinel }),
                            \(fresh.map(\.outcome.rawValue)),
                            \(fresh.map { $0.balanceAfter.map { Int64($0.rawValue) }.orNullSentinel }),
                            \(fresh.map { $0.counterAfter.map(Int64.init).orNullSentinel }),
                            \(fresh.map(\.createdAt)), \(freshDigests), \(decisions.bookings.map(\.rawValue)),
                            \(decisions.flags.map { $0.joined(separator: ",") }))
                    AS u(seq, kind, uid, serial, amount, before, counter, consumption, ref, sref, outcome, after, cafter,
                         created, digest, booking, flags)
                ON CONFLICT (terminal_id, seq) DO NOTHING
                RETURNING seq
                """, logger: logger)
            var count = 0
            for try await _ in inserted { count += 1 }
            // Another instance stored one of these keys after our check (a terminal retrying on two instances): run
            // the whole transaction again; it then finds them stored.
            guard count == fresh.count else { throw RetryTransaction() }
        }

        // The answers, in batch order.
        var acks: [RecordAck] = []
        acks.reserveCapacity(records.count)
        for disposition in dispositions {
            switch disposition {
            case let .new(index):
                acks.append(RecordAck(terminalSequence: fresh[index].terminalSequence, status: .accepted,
                                      booking: decisions.bookings[index], flags: decisions.flags[index], receivedAt: date))
            case let .repeatOf(sequence, digest):
                let original: StoredAck
                if let earlier = stored[sequence] {
                    original = earlier
                } else {
                    guard case let .new(index)? = dispositions.first(where: {
                        if case let .new(index) = $0 { return fresh[index].terminalSequence == sequence }
                        return false
                    }) else { continue }
                    original = StoredAck(digest: freshDigests[index], booking: decisions.bookings[index],
                                         flags: decisions.flags[index], receivedAt: date)
                }
                if original.digest == digest {
                    acks.append(RecordAck(terminalSequence: sequence, status: .duplicate, booking: original.booking,
                                          flags: original.flags, receivedAt: original.receivedAt))
                } else {
                    acks.append(RecordAck(terminalSequence: sequence, status: .conflict, booking: original.booking,
                                          flags: ["content-conflict"], receivedAt: original.receivedAt))
                    decisions.flagRows.append(FlagRow(
                        code: "content-conflict", terminal: terminalKey, sequence: Int64(sequence), cardSerial: nil,
                        message: "terminal \(terminal) sent sequence \(sequence) again with different content (digest \(digest.prefix(12)), stored \(original.digest.prefix(12))): compare the terminal's journal with the stored record"))
                }
            }
        }

        // The ledger, the flags, the card states and the purse mirrors.
        try await book(on: connection, logger: logger, movements: decisions.movements, at: date)
        try await raise(on: connection, logger: logger, flags: decisions.flagRows, at: date)
        if !uids.isEmpty {
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            let texts = try uids.map { String(decoding: try encoder.encode(states[$0] ?? CardLedgerState()), as: UTF8.self) }
            try await connection.query("""
                UPDATE card_state SET state = u.state::jsonb FROM unnest(\(uids), \(texts)) AS u(uid, state)
                WHERE card_state.card_uid = u.uid
                """, logger: logger)
        }
        try await moveMirror(on: connection, logger: logger, updates: decisions.mirrorUpdates)
        return acks
    }
}

/// What the rules decided for the new records of one batch, gathered for the few statements that write it.
struct IngestDecisions {
    var bookings: [RecordAck.Booking] = []
    var flags: [[String]] = []
    var movements: [Movement] = []
    var flagRows: [FlagRow] = []
    /// The newest (balance, counter) per card serial (one row per card: UPDATE … FROM takes one match per row).
    private var mirrors: [Int64: (balance: Int64, counter: UInt16)] = [:]

    var mirrorUpdates: [(serial: Int64, balance: Int64, counter: UInt16)] {
        mirrors.keys.sorted().map { (serial: $0, balance: mirrors[$0]!.balance, counter: mirrors[$0]!.counter) }
    }

    mutating func add(_ decision: IngestRules.Decision, for record: TerminalRecord, card: Card?) {
        bookings.append(decision.booking)
        flags.append(decision.flags)
        movements += decision.movements
        flagRows += decision.flagRows
        if let serial = card?.serial, let mirror = decision.purseMirror {
            let key = Int64(serial)
            if let current = mirrors[key], !PostgresSettlementStore.isAfter(mirror.1, current.counter) { return }
            mirrors[key] = (Int64(mirror.0.rawValue), mirror.1)
        }
    }
}
