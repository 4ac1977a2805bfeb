import CampusCard
import Foundation
import Logging
import PostgresNIO
import SettlementCore

/// The NULL stand-in for nullable integer columns in unnest arrays (postgres-nio sends no arrays of optionals).
let nullInteger = Int64.min

extension Optional where Wrapped == Int64 {
    var orNullSentinel: Int64 { self ?? nullInteger }
}

extension PostgresSettlementStore {
    /// Writes movements (two ledger rows each, one movement id) in one statement, and moves the balances of the
    /// `account:ID` entries. The daily settlement reads the merchant rows (`merchant`, `day`).
    static func post(_ movements: [Movement], on connection: PostgresConnection, logger: Logger, at date: Date) async throws {
        guard !movements.isEmpty else { return }
        func cardSerial(_ movement: Movement, _ side: Movement.CardSide) -> Int64 {
            movement.cardSide == side ? movement.cardSerial.map(Int64.init).orNullSentinel : nullInteger
        }
        try await connection.query("""
            WITH m AS (
                SELECT nextval('movement_ids') AS movement, f, t, a, k, NULLIF(term, \(nullInteger)) AS term,
                       NULLIF(s, \(nullInteger)) AS s, NULLIF(cf, \(nullInteger)) AS cf, NULLIF(ct, \(nullInteger)) AS ct,
                       NULLIF(me, '') AS me, dy
                FROM unnest(\(movements.map(\.from)), \(movements.map(\.to)), \(movements.map { Int64($0.amount.rawValue) }),
                            \(movements.map(\.kind)), \(movements.map { $0.terminalID.map { Int64($0.rawValue) }.orNullSentinel }),
                            \(movements.map { $0.terminalSequence.map(Int64.init).orNullSentinel }),
                            \(movements.map { cardSerial($0, .from) }), \(movements.map { cardSerial($0, .to) }),
                            \(movements.map { $0.merchant ?? "" }), \(movements.map(\.day)))
                    AS u(f, t, a, k, term, s, cf, ct, me, dy)
            )
            INSERT INTO ledger (movement_id, account, amount, kind, terminal_id, seq, booked_at, card_serial, merchant, day)
            SELECT movement, account, amount, k, term, s, \(date), card, merchant, day FROM (
                SELECT movement, 0 AS side, f AS account, -a AS amount, k, term, s, cf AS card, NULL AS merchant,
                       NULL AS day FROM m
                UNION ALL
                SELECT movement, 1, t, a, k, term, s, ct, CASE WHEN t = 'merchant:' || me THEN me END, dy FROM m
            ) AS entries
            ORDER BY movement, side
            """, logger: logger)
        // The electronic accounts' balances follow their ledger entries. Rows locked in id order first: two
        // transactions touching the same two accounts never wait on each other crosswise.
        var deltas: [Int64: Int64] = [:]
        for movement in movements {
            if let id = accountID(movement.from) { deltas[id, default: 0] -= Int64(movement.amount.rawValue) }
            if let id = accountID(movement.to) { deltas[id, default: 0] += Int64(movement.amount.rawValue) }
        }
        let ids = deltas.keys.filter { deltas[$0] != 0 }.sorted()
        guard !ids.isEmpty else { return }
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

    static func raise(_ flags: [RaisedFlag], on connection: PostgresConnection, logger: Logger, at date: Date) async throws {
        guard !flags.isEmpty else { return }
        try await connection.query("""
            INSERT INTO flags (code, terminal_id, seq, card_serial, message, raised_at)
            SELECT code, NULLIF(t, \(nullInteger)), NULLIF(s, \(nullInteger)), NULLIF(c, \(nullInteger)), m, \(date)
            FROM unnest(\(flags.map(\.code)), \(flags.map { $0.terminalID.map { Int64($0.rawValue) }.orNullSentinel }),
                        \(flags.map { $0.terminalSequence.map(Int64.init).orNullSentinel }),
                        \(flags.map { $0.cardSerial.map(Int64.init).orNullSentinel }), \(flags.map(\.message)))
                AS u(code, t, s, c, m)
            """, logger: logger)
    }

    /// Loads the books of `uids` (sorted, unique), creating the missing ones, and locks them FOR UPDATE in UID order:
    /// two transactions touching the same cards take them in the same order (no deadlock), and the second waits for
    /// the first's book. Two statements whatever the number of cards, plus one for the issued cards.
    static func lockBooks(_ uids: [String], on connection: PostgresConnection, logger: Logger) async throws -> [String: CardBook] {
        guard !uids.isEmpty else { return [:] }
        let empty = ByteBuffer(bytes: CardBookCoding.encode(purse: WalletBook(), water: WalletBook()))
        try await connection.query("""
            INSERT INTO card_books (uid, purse_mirror, purse_counter, book)
            SELECT u, 0, NULL, \(empty) FROM unnest(\(uids)) AS u ORDER BY u
            ON CONFLICT (uid) DO NOTHING
            """, logger: logger)
        var books: [String: CardBook] = [:]
        let cardRows = try await connection.query("""
            SELECT serial, uid, account_id, status, issued_at FROM cards WHERE uid = ANY(\(uids))
            """, logger: logger)
        for try await (serial, uid, account, status, issued) in cardRows.decode((Int64, String, Int64, String, Date).self) {
            guard let status = CardStatus(rawValue: status) else {
                throw SettlementError(.storage, "card \(serial) has the unknown status \(status): the store was written by a newer version")
            }
            books[uid] = CardBook(uid: uid, card: Card(serial: UInt32(truncatingIfNeeded: serial), uid: uid, accountID: account,
                                                       status: status, purseMirror: 0, purseCounter: nil, issuedAt: issued))
        }
        let bookRows = try await connection.query("""
            SELECT uid, purse_mirror, purse_counter, book FROM card_books WHERE uid = ANY(\(uids)) ORDER BY uid FOR UPDATE
            """, logger: logger)
        for try await (uid, mirror, counter, blob) in bookRows.decode((String, Int64, Int64?, ByteBuffer).self) {
            let wallets = try CardBookCoding.decode(blob.getBytes(at: blob.readerIndex, length: blob.readableBytes) ?? [])
            var book = books[uid] ?? CardBook(uid: uid, card: nil)
            book.card?.purseMirror = Fen(Int(mirror))
            book.card?.purseCounter = counter.map { UInt16(truncatingIfNeeded: $0) }
            book.purse = wallets.purse
            book.water = wallets.water
            books[uid] = book
        }
        return books
    }

    /// Writes books back (their rows are locked by `lockBooks`), one statement.
    static func saveBooks(_ books: [CardBook], on connection: PostgresConnection, logger: Logger) async throws {
        guard !books.isEmpty else { return }
        try await connection.query("""
            UPDATE card_books SET purse_mirror = u.mirror, purse_counter = NULLIF(u.counter, \(nullInteger)), book = u.book
            FROM unnest(\(books.map(\.uid)), \(books.map { Int64($0.card?.purseMirror.rawValue ?? 0) }),
                        \(books.map { $0.card?.purseCounter.map(Int64.init).orNullSentinel ?? nullInteger }),
                        \(books.map { ByteBuffer(bytes: CardBookCoding.encode(purse: $0.purse, water: $0.water)) }))
                AS u(uid, mirror, counter, book)
            WHERE card_books.uid = u.uid
            """, logger: logger)
    }
}
