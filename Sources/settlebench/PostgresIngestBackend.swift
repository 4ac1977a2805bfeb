import CampusCard
import Foundation
import Logging
import PostgresNIO
import SettlementCore
import SettlementPostgres

/// The PostgreSQL side: a fresh database on the server of `--postgres URL` (created, dropped at the end), the store
/// on it with every ledger rule, and the plain comparisons in the same database: a batched INSERT … SELECT FROM unnest
/// (one transaction per batch) and COPY of the same rows.
final class PostgresIngestBackend: IngestBackend, @unchecked Sendable {
    let url: String
    let database: String
    let logger = Logger(label: "settlebench.postgres", factory: { _ in SwiftLogNoOpLogHandler() })
    private var store: PostgresSettlementStore?

    init(url: String) {
        self.url = url
        database = "settlebench_\(getpid())_\(UInt32.random(in: 0...UInt32.max))"
    }

    var name: String { "PostgreSQL (fsync on, sync commit)" }

    /// The URL of the benchmark's own database on the same server.
    var databaseURL: String {
        guard var components = URLComponents(string: url) else { return url }
        components.path = "/" + database
        return components.string ?? url
    }

    /// Runs `body` with a client on the database of `target`, its pool running around it.
    func withClient<R: Sendable>(_ target: String, _ body: (PostgresClient) async throws -> R) async throws -> R {
        let client = PostgresClient(configuration: try PostgresSettlementStore.configuration(url: target))
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            return try await body(client)
        }
    }

    func makeStore(connections: Int) async throws -> any SettlementStore {
        try await withClient(url) { client -> Void in
            try await client.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(database)"), logger: logger)
        }
        let store = try PostgresSettlementStore(url: databaseURL, maximumConnections: connections, logger: logger)
        try await store.start()
        self.store = store
        return store
    }

    static let columns = ["terminal_id", "seq", "kind", "card_uid", "card_serial", "amount", "balance_before",
                          "counter_before", "consumption", "reference_before", "settlement_reference", "outcome",
                          "balance_after", "counter_after", "created_at", "digest", "received_at", "booking", "flags"]

    func createPlainTable(_ client: PostgresClient, _ table: String) async throws {
        try await client.query(PostgresQuery(unsafeSQL: """
            CREATE TABLE \(table) (
                terminal_id bigint NOT NULL, seq bigint NOT NULL, kind text NOT NULL, card_uid text NOT NULL, card_serial bigint,
                amount bigint NOT NULL, balance_before bigint NOT NULL, counter_before bigint NOT NULL, consumption bigint,
                reference_before bigint, settlement_reference bigint, outcome text NOT NULL, balance_after bigint,
                counter_after bigint, created_at timestamptz NOT NULL, digest text NOT NULL, received_at timestamptz NOT NULL,
                booking text NOT NULL, flags text NOT NULL, PRIMARY KEY (terminal_id, seq))
            """), logger: logger)
    }

    func plainInsert(_ lanes: [[[BenchRow]]]) async throws -> Duration {
        try await withClient(databaseURL) { client in
            try await createPlainTable(client, "plain_records")
            let received = Date()
            return try await measureLanes(lanes) { batch in
                try await client.withTransaction(logger: self.logger) { connection -> Void in
                    try await connection.query(Self.recordsInsert(into: "plain_records", batch, received: received), logger: self.logger)
                }
            }
        }
    }

    /// The batch's records by one INSERT … SELECT FROM unnest, as the store writes them.
    static func recordsInsert(into table: String, _ batch: [BenchRow], received: Date) -> PostgresQuery {
        let r = batch.map(\.record)
        let none = Int64.min
        return """
            INSERT INTO \(unescaped: table) (terminal_id, seq, kind, card_uid, card_serial, amount, balance_before,
                counter_before, consumption, reference_before, settlement_reference, outcome, balance_after,
                counter_after, created_at, digest, received_at, booking, flags)
            SELECT t, s, k, u, NULLIF(cs, \(none)), a, bb, cb, NULLIF(co, \(none)), NULLIF(rb, \(none)),
                NULLIF(sr, \(none)), o, NULLIF(ba, \(none)), NULLIF(ca, \(none)), cr, d, \(received), 'booked', ''
            FROM unnest(\(r.map { Int64($0.terminalID.rawValue) }), \(r.map { Int64($0.terminalSequence) }),
                \(r.map(\.kind.rawValue)), \(r.map(\.cardUID)), \(r.map { $0.cardSerial.map(Int64.init) ?? none }),
                \(r.map { Int64($0.amount.rawValue) }), \(r.map { Int64($0.balanceBefore.rawValue) }),
                \(r.map { Int64($0.counterBefore) }), \(r.map { $0.consumption.map { Int64($0.rawValue) } ?? none }),
                \(r.map { $0.referenceBefore.map(Int64.init) ?? none }),
                \(r.map { $0.settlementReference.map(Int64.init) ?? none }), \(r.map(\.outcome.rawValue)),
                \(r.map { $0.balanceAfter.map { Int64($0.rawValue) } ?? none }),
                \(r.map { $0.counterAfter.map(Int64.init) ?? none }), \(r.map(\.createdAt)), \(batch.map(\.digest)))
                AS x(t, s, k, u, cs, a, bb, cb, co, rb, sr, o, ba, ca, cr, d)
            ON CONFLICT (terminal_id, seq) DO NOTHING
            """
    }

    /// COPY (text format, the only one postgres-nio streams) of the same rows, one COPY per batch.
    func copyInsert(_ lanes: [[[BenchRow]]]) async throws -> Duration? {
        try await withClient(databaseURL) { client in
            try await createPlainTable(client, "copy_records")
            let received = ISO8601DateFormatter().string(from: Date())
            return try await measureLanes(lanes) { batch in
                let formatter = ISO8601DateFormatter()
                var text = ""
                for row in batch {
                    let r = row.record
                    func field<T>(_ value: T?) -> String { value.map { "\($0)" } ?? "\\N" }
                    text += [
                        "\(r.terminalID.rawValue)", "\(r.terminalSequence)", r.kind.rawValue, r.cardUID, field(r.cardSerial),
                        "\(r.amount.rawValue)", "\(r.balanceBefore.rawValue)", "\(r.counterBefore)", field(r.consumption?.rawValue),
                        field(r.referenceBefore), field(r.settlementReference), r.outcome.rawValue, field(r.balanceAfter?.rawValue),
                        field(r.counterAfter), formatter.string(from: r.createdAt), row.digest, received, "booked", "",
                    ].joined(separator: "\t") + "\n"
                }
                try await client.withConnection { connection in
                    try await connection.copyFrom(table: "copy_records", columns: Self.columns, logger: self.logger) { writer in
                        try await writer.write(ByteBuffer(string: text))
                    }
                }
            }
        }
    }

    func ledgerRowsInsert(_ lanes: [[[BenchRow]]]) async throws -> Duration {
        try await withClient(databaseURL) { client in
            try await createPlainTable(client, "rows_records")
            // The store's movements and card books, as its migrations leave them.
            for statement in [
                "CREATE SEQUENCE rows_movement_ids",
                """
                CREATE TABLE rows_movements (
                    id bigint PRIMARY KEY DEFAULT nextval('rows_movement_ids'), debit text NOT NULL, credit text NOT NULL,
                    amount bigint NOT NULL, kind text NOT NULL, terminal_id bigint, seq bigint, booked_at timestamptz NOT NULL,
                    card_serial bigint, card_side smallint, merchant text, day text)
                """,
                "CREATE INDEX rows_movements_card ON rows_movements (card_serial) WHERE card_serial IS NOT NULL",
                "CREATE INDEX rows_movements_merchant_day ON rows_movements (day, merchant) WHERE merchant IS NOT NULL",
                """
                CREATE TABLE rows_books (uid text PRIMARY KEY, purse_mirror bigint NOT NULL, purse_counter bigint,
                    book bytea NOT NULL) WITH (fillfactor = 50)
                """,
            ] {
                try await client.query(PostgresQuery(unsafeSQL: statement), logger: logger)
            }
            let book = ByteBuffer(bytes: BenchRow.typicalBook)
            let uids = Array(Set(lanes.joined().joined().map(\.record.cardUID))).sorted()
            try await client.query("INSERT INTO rows_books SELECT u, 0, NULL, \(book) FROM unnest(\(uids)) AS u", logger: logger)
            let received = Date()
            return try await measureLanes(lanes) { batch in
                let r = batch.map(\.record)
                let touched = Array(Set(r.map(\.cardUID))).sorted()
                try await client.withTransaction(logger: self.logger) { connection -> Void in
                    // Two statements where the store sends one: the records' INSERT is the plain one's.
                    try await connection.query(Self.recordsInsert(into: "rows_records", batch, received: received), logger: self.logger)
                    try await connection.query("""
                        WITH posted AS (
                            INSERT INTO rows_movements (debit, credit, amount, kind, terminal_id, seq, booked_at, card_serial,
                                card_side, merchant, day)
                            SELECT f, c, a, k, t, s, \(received), cs, CASE WHEN me = '' THEN 1 ELSE 0 END, NULLIF(me, ''), dy
                            FROM unnest(\(batch.map(\.debit)), \(batch.map(\.credit)), \(r.map { Int64($0.amount.rawValue) }),
                                \(r.map(\.kind.rawValue)), \(r.map { Int64($0.terminalID.rawValue) }), \(r.map { Int64($0.terminalSequence) }),
                                \(r.map { Int64($0.cardSerial ?? 0) }), \(batch.map { $0.merchant ?? "" }), \(batch.map(\.day)))
                                AS x(f, c, a, k, t, s, cs, me, dy))
                        UPDATE rows_books SET purse_mirror = purse_mirror + 1, book = \(book)
                        FROM unnest(\(touched)) AS x(u) WHERE rows_books.uid = x.u AND rows_books.uid = ANY(\(touched))
                        """, logger: self.logger)
                }
            }
        }
    }

    func cleanup() async throws {
        await store?.shutdown()
        store = nil
        try await withClient(url) { client -> Void in
            try await client.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(database)"), logger: logger)
        }
    }
}
