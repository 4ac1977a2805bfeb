import Foundation
import Logging
import PostgresNIO
import SettlementCore

/// One balanced movement to write: `amount` leaves `debit` and arrives at `credit` (two ledger rows, one movement id).
struct Movement: Sendable {
    var debit: String
    var credit: String
    var amount: Int
    var kind: String
    var terminal: Int64?
    var sequence: Int64?
    /// Set on a terminal's sales (the merchant's daily settlement counts them), with the business day.
    var merchant: String?
    var day: String?
}

/// A flag to raise for an operator.
struct FlagRow: Sendable {
    var code: String
    var terminal: Int64?
    var sequence: Int64?
    var cardSerial: Int64?
    var message: String
}

/// The NULL stand-in for nullable integer columns in unnest arrays (postgres-nio sends no arrays of optionals).
let nullInteger = Int64.min

extension Optional where Wrapped == Int64 {
    var orNullSentinel: Int64 { self ?? nullInteger }
}

extension PostgresSettlementStore {
    /// Writes balanced movements in one statement (unnest) and moves the balances of the `account:ID` entries.
    static func book(on connection: PostgresConnection, logger: Logger, movements: [Movement], at date: Date) async throws {
        guard !movements.isEmpty else { return }
        try await connection.query("""
            WITH m AS (
                SELECT nextval('movement_ids') AS movement, d, c, a, k, NULLIF(t, \(nullInteger)) AS t,
                       NULLIF(s, \(nullInteger)) AS s, NULLIF(me, '') AS me, NULLIF(dy, '') AS dy
                FROM unnest(\(movements.map(\.debit)), \(movements.map(\.credit)), \(movements.map { Int64($0.amount) }),
                            \(movements.map(\.kind)), \(movements.map { $0.terminal.orNullSentinel }),
                            \(movements.map { $0.sequence.orNullSentinel }), \(movements.map { $0.merchant ?? "" }),
                            \(movements.map { $0.day ?? "" })) AS u(d, c, a, k, t, s, me, dy)
            )
            INSERT INTO ledger (movement_id, account, amount, kind, terminal_id, seq, merchant, day, booked_at)
            SELECT movement, d, -a, k, t, s, me, dy, \(date) FROM m
            UNION ALL
            SELECT movement, c, a, k, t, s, me, dy, \(date) FROM m
            """, logger: logger)
        // The electronic accounts' balances follow their ledger entries. Rows locked in id order first: two
        // transactions touching the same two accounts never wait on each other crosswise.
        var deltas: [Int64: Int64] = [:]
        for movement in movements {
            if let id = accountID(movement.debit) { deltas[id, default: 0] -= Int64(movement.amount) }
            if let id = accountID(movement.credit) { deltas[id, default: 0] += Int64(movement.amount) }
        }
        guard !deltas.isEmpty else { return }
        let ids = deltas.keys.sorted()
        try await connection.query(
            "SELECT 1 FROM accounts WHERE id = ANY(\(ids)) ORDER BY id FOR UPDATE", logger: logger)
        try await connection.query("""
            UPDATE accounts SET balance = balance + u.delta
            FROM unnest(\(ids), \(ids.map { deltas[$0] ?? 0 })) AS u(id, delta) WHERE accounts.id = u.id
            """, logger: logger)
    }

    /// `account:ID` → ID.
    static func accountID(_ name: String) -> Int64? {
        guard name.hasPrefix("account:") else { return nil }
        return Int64(name.dropFirst("account:".count))
    }

    static func raise(on connection: PostgresConnection, logger: Logger, flags: [FlagRow], at date: Date) async throws {
        guard !flags.isEmpty else { return }
        try await connection.query("""
            INSERT INTO flags (code, terminal_id, seq, card_serial, message, raised_at)
            SELECT code, NULLIF(t, \(nullInteger)), NULLIF(s, \(nullInteger)), NULLIF(c, \(nullInteger)), m, \(date)
            FROM unnest(\(flags.map(\.code)), \(flags.map { $0.terminal.orNullSentinel }),
                        \(flags.map { $0.sequence.orNullSentinel }), \(flags.map { $0.cardSerial.orNullSentinel }),
                        \(flags.map(\.message))) AS u(code, t, s, c, m)
            """, logger: logger)
    }

    /// Whether counter `a` is after `b` on a 16-bit counter that wraps (no counter yet: every counter is after it).
    static func isAfter(_ a: UInt16, _ b: UInt16?) -> Bool {
        guard let b else { return true }
        return Int16(bitPattern: a &- b) > 0
    }
}
