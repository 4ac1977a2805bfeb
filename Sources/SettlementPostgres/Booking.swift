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

/// One statement assembled from parts (data-modifying CTEs): each part binds its own parameters, numbered as they
/// come. An ingest sends its records, movements, flags and books in one round trip this way.
struct CompositeStatement {
    private(set) var binds = PostgresBindings()

    /// Binds `value` and returns its placeholder (`$n`).
    mutating func bind<Value: PostgresDynamicTypeEncodable>(_ value: Value) -> String {
        binds.append(value)
        return "$\(binds.count)"
    }

    /// The statement with everything bound so far. Build `sql` before calling this: `statement.query(part(&statement))`
    /// would read the binds before the part adds its own.
    func query(_ sql: String) -> PostgresQuery { PostgresQuery(unsafeSQL: sql, binds: binds) }
}

extension PostgresSettlementStore {
    /// Writes movements (one ledger row each) in one statement, and moves the balances of the `account:ID` entries.
    /// The daily settlement reads the merchant lines (`merchant`, `day`).
    static func post(_ movements: [Movement], on connection: PostgresConnection, logger: Logger, at date: Date) async throws {
        guard !movements.isEmpty else { return }
        var statement = CompositeStatement()
        let insert = movementsInsert(movements, at: date, into: &statement)
        try await connection.query(statement.query(insert), logger: logger)
        try await moveAccountBalances(movements, on: connection, logger: logger)
    }

    /// The INSERT of movements: one row each, its debit and credit account and one amount (its id drawn from
    /// `movement_ids`). The merchant is kept when the credit is the terminal's merchant (a sale: the daily totals).
    static func movementsInsert(_ movements: [Movement], at date: Date, into statement: inout CompositeStatement) -> String {
        let null = statement.bind(nullInteger)
        return """
            INSERT INTO movements (debit, credit, amount, kind, terminal_id, seq, booked_at, card_serial, card_side,
                                   merchant, day)
            SELECT f, t, a, k, NULLIF(term, \(null)), NULLIF(s, \(null)), \(statement.bind(date)), NULLIF(c, \(null)),
                   CASE WHEN c <> \(null) THEN side::smallint END, CASE WHEN t = 'merchant:' || me THEN me END, dy
            FROM unnest(\(statement.bind(movements.map(\.from)))::text[], \(statement.bind(movements.map(\.to)))::text[],
                        \(statement.bind(movements.map { Int64($0.amount.rawValue) }))::bigint[],
                        \(statement.bind(movements.map(\.kind)))::text[],
                        \(statement.bind(movements.map { $0.terminalID.map { Int64($0.rawValue) }.orNullSentinel }))::bigint[],
                        \(statement.bind(movements.map { $0.terminalSequence.map(Int64.init).orNullSentinel }))::bigint[],
                        \(statement.bind(movements.map { $0.cardSide == .neither ? nullInteger : $0.cardSerial.map(Int64.init).orNullSentinel }))::bigint[],
                        \(statement.bind(movements.map { Int64($0.cardSide == .from ? 0 : 1) }))::bigint[],
                        \(statement.bind(movements.map { $0.merchant ?? "" }))::text[],
                        \(statement.bind(movements.map(\.day)))::text[])
                WITH ORDINALITY AS u(f, t, a, k, term, s, c, side, me, dy, n)
            ORDER BY n
            """
    }

    /// The electronic accounts' balances follow their ledger entries. Rows locked in id order first: two
    /// transactions touching the same two accounts never wait on each other crosswise.
    static func moveAccountBalances(_ movements: [Movement], on connection: PostgresConnection, logger: Logger) async throws {
        var deltas: [Int64: Int64] = [:]
        for movement in movements {
            if let id = Ledger.holderAccountID(movement.from) { deltas[id, default: 0] -= Int64(movement.amount.rawValue) }
            if let id = Ledger.holderAccountID(movement.to) { deltas[id, default: 0] += Int64(movement.amount.rawValue) }
        }
        let ids = deltas.keys.filter { deltas[$0] != 0 }.sorted()
        guard !ids.isEmpty else { return }
        try await connection.query(
            "SELECT 1 FROM accounts WHERE id = ANY(\(ids)) ORDER BY id FOR UPDATE", logger: logger)
        try await connection.query(accountsUpdate(ids: ids, deltas: ids.map { deltas[$0] ?? 0 }), logger: logger)
    }

    // The keys of a batch's UPDATEs and SELECTs are given to the table as `= ANY(keys)` as well as joined from
    // unnest: the planner then probes the index for them. With the join alone, it hashes a scan of the whole table
    // (30,000 card books: 12 ms a batch, growing with every card issued), pricing a few hundred index probes above it.

    /// The UPDATE moving the accounts `ids` by `deltas`.
    static func accountsUpdate(ids: [Int64], deltas: [Int64]) -> PostgresQuery {
        """
        UPDATE accounts SET balance = balance + u.delta
        FROM unnest(\(ids), \(deltas)) AS u(id, delta) WHERE accounts.id = u.id AND accounts.id = ANY(\(ids))
        """
    }


    static func raise(_ flags: [RaisedFlag], on connection: PostgresConnection, logger: Logger, at date: Date) async throws {
        guard !flags.isEmpty else { return }
        var statement = CompositeStatement()
        let sql = flagsInsert(flags, at: date, into: &statement)
        try await connection.query(statement.query(sql), logger: logger)
    }

    /// The INSERT of operator flags.
    static func flagsInsert(_ flags: [RaisedFlag], at date: Date, into statement: inout CompositeStatement) -> String {
        let null = statement.bind(nullInteger)
        return """
            INSERT INTO flags (code, terminal_id, seq, card_serial, message, raised_at)
            SELECT code, NULLIF(t, \(null)), NULLIF(s, \(null)), NULLIF(c, \(null)), m, \(statement.bind(date))
            FROM unnest(\(statement.bind(flags.map(\.code)))::text[],
                        \(statement.bind(flags.map { $0.terminalID.map { Int64($0.rawValue) }.orNullSentinel }))::bigint[],
                        \(statement.bind(flags.map { $0.terminalSequence.map(Int64.init).orNullSentinel }))::bigint[],
                        \(statement.bind(flags.map { $0.cardSerial.map(Int64.init).orNullSentinel }))::bigint[],
                        \(statement.bind(flags.map(\.message)))::text[])
                AS u(code, t, s, c, m)
            """
    }

    /// Loads the books of `uids` (sorted, unique) with their issued cards and locks them FOR UPDATE in UID order: two
    /// transactions touching the same cards take them in the same order (no deadlock), and the second waits for the
    /// first's book. One statement when every book exists (the usual case); a UID seen for the first time gets its
    /// row inserted (in UID order, after the locks on the existing ones: no lock cycle) and read the same way.
    static func lockBooks(_ uids: [String], on connection: PostgresConnection, logger: Logger) async throws -> [String: CardBook] {
        guard !uids.isEmpty else { return [:] }
        var books = try await selectBooks(uids, on: connection, logger: logger)
        let missing = uids.filter { books[$0] == nil }
        guard !missing.isEmpty else { return books }
        let empty = ByteBuffer(bytes: CardBookCoding.encode(purse: WalletBook(), water: WalletBook()))
        try await connection.query("""
            INSERT INTO card_books (uid, purse_mirror, purse_counter, book)
            SELECT u, 0, NULL, \(empty) FROM unnest(\(missing)) AS u ORDER BY u
            ON CONFLICT (uid) DO NOTHING
            """, logger: logger)
        books.merge(try await selectBooks(missing, on: connection, logger: logger)) { _, new in new }
        return books
    }

    /// The books of `uids` that exist, locked, with their issued cards: one row of arrays (a batch touches hundreds of
    /// cards, and decoding a row costs ~9 µs where an array element costs well under one). NULLs travel as sentinels:
    /// -1 for a missing counter or card.
    private static func selectBooks(_ uids: [String], on connection: PostgresConnection, logger: Logger) async throws -> [String: CardBook] {
        let rows = try await connection.query(booksSelect(uids), logger: logger)
        var books: [String: CardBook] = [:]
        for try await (uids, mirrors, counters, blobs, serials, accounts, statuses, issued)
            in rows.decode(([String], [Int64], [Int64], [ByteBuffer], [Int64], [Int64], [String], [Date]).self) {
            guard [mirrors.count, counters.count, blobs.count, serials.count, accounts.count, statuses.count, issued.count]
                .allSatisfy({ $0 == uids.count }) else {
                throw SettlementError(.storage, "the card books came back with columns of different lengths: report this as a bug")
            }
            books.reserveCapacity(uids.count)
            for index in uids.indices {
                let uid = uids[index]
                var card: Card?
                if serials[index] >= 0 {
                    guard let status = CardStatus(rawValue: statuses[index]) else {
                        throw SettlementError(.storage, "card \(serials[index]) has the unknown status \(statuses[index]): the store was written by a newer version")
                    }
                    card = Card(serial: UInt32(truncatingIfNeeded: serials[index]), uid: uid, accountID: accounts[index],
                                status: status, purseMirror: Fen(Int(mirrors[index])),
                                purseCounter: counters[index] >= 0 ? UInt16(truncatingIfNeeded: counters[index]) : nil,
                                issuedAt: issued[index])
                }
                let blob = blobs[index]
                let wallets = try CardBookCoding.decode(blob.getBytes(at: blob.readerIndex, length: blob.readableBytes) ?? [])
                var book = CardBook(uid: uid, card: card)
                book.purse = wallets.purse
                book.water = wallets.water
                books[uid] = book
            }
        }
        return books
    }

    /// The SELECT … FOR UPDATE of the books of `uids` with their cards, as one row of arrays.
    static func booksSelect(_ uids: [String]) -> PostgresQuery {
        var binds = PostgresBindings()
        binds.append(uids)
        return PostgresQuery(unsafeSQL: """
            WITH locked AS (
                SELECT b.uid, b.purse_mirror, coalesce(b.purse_counter, -1) AS purse_counter, b.book,
                       coalesce(c.serial, -1) AS serial, coalesce(c.account_id, -1) AS account_id,
                       coalesce(c.status, '') AS status, coalesce(c.issued_at, 'epoch') AS issued_at
                FROM card_books b LEFT JOIN cards c ON c.uid = b.uid AND c.uid = ANY($1)
                WHERE b.uid = ANY($1) ORDER BY b.uid FOR UPDATE OF b
            )
            SELECT coalesce(array_agg(uid), '{}'), coalesce(array_agg(purse_mirror), '{}'),
                   coalesce(array_agg(purse_counter), '{}'), coalesce(array_agg(book), '{}'),
                   coalesce(array_agg(serial), '{}'), coalesce(array_agg(account_id), '{}'),
                   coalesce(array_agg(status), '{}'), coalesce(array_agg(issued_at), '{}')
            FROM locked
            """, binds: binds)
    }

    /// Writes books back (their rows are locked by `lockBooks`), one statement.
    static func saveBooks(_ books: [CardBook], on connection: PostgresConnection, logger: Logger) async throws {
        guard !books.isEmpty else { return }
        var statement = CompositeStatement()
        let sql = booksUpdate(books, into: &statement)
        try await connection.query(statement.query(sql), logger: logger)
    }

    /// The UPDATE of books (with the purse mirrors).
    static func booksUpdate(_ books: [CardBook], into statement: inout CompositeStatement) -> String {
        let uids = statement.bind(books.map(\.uid))
        return """
        UPDATE card_books SET purse_mirror = u.mirror, purse_counter = NULLIF(u.counter, \(statement.bind(nullInteger))),
            book = u.book
        FROM unnest(\(uids)::text[],
                    \(statement.bind(books.map { Int64($0.card?.purseMirror.rawValue ?? 0) }))::bigint[],
                    \(statement.bind(books.map { $0.card?.purseCounter.map(Int64.init).orNullSentinel ?? nullInteger }))::bigint[],
                    \(statement.bind(books.map { ByteBuffer(bytes: CardBookCoding.encode(purse: $0.purse, water: $0.water)) }))::bytea[])
            AS u(uid, mirror, counter, book)
        WHERE card_books.uid = u.uid AND card_books.uid = ANY(\(uids)::text[])
        """
    }
}
