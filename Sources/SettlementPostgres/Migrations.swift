import Logging
import PostgresNIO

/// The schema, as numbered migrations applied once each and recorded in `schema_migrations`. A shipped migration is
/// never edited: a change is a new migration appended at the end.
enum Migrations {
    struct Migration: Sendable {
        var version: Int
        var name: String
        var statements: [String]
    }

    /// The tables `rowCounts()` reports.
    static let tables = ["terminals", "nonces", "accounts", "cards", "card_books", "records", "movements", "blacklist",
                         "parameters", "loads", "flags"]

    static let all: [Migration] = [
        Migration(version: 1, name: "settlement schema", statements: [
            """
            CREATE TABLE terminals (
                id bigint PRIMARY KEY,
                merchant text NOT NULL,
                secret bytea NOT NULL,
                enabled boolean NOT NULL
            )
            """,
            """
            CREATE TABLE nonces (
                terminal_id bigint NOT NULL,
                nonce text NOT NULL,
                seen_at timestamptz NOT NULL,
                PRIMARY KEY (terminal_id, nonce)
            )
            """,
            "CREATE INDEX nonces_seen_at ON nonces (seen_at)",
            """
            CREATE TABLE accounts (
                id bigserial PRIMARY KEY,
                name text NOT NULL,
                balance bigint NOT NULL,
                created_at timestamptz NOT NULL
            )
            """,
            """
            CREATE TABLE cards (
                serial bigint PRIMARY KEY,
                uid text NOT NULL UNIQUE,
                account_id bigint NOT NULL REFERENCES accounts (id),
                status text NOT NULL,
                issued_at timestamptz NOT NULL
            )
            """,
            // The ledger's memory of each card UID (issued or not): the purse mirror, and the wallets' counter windows,
            // reads, undecided records and online-load links (CardBookCoding). Ingest locks these rows FOR UPDATE.
            """
            CREATE TABLE card_books (
                uid text PRIMARY KEY,
                purse_mirror bigint NOT NULL,
                purse_counter bigint,
                book bytea NOT NULL
            )
            """,
            """
            CREATE TABLE blacklist (
                version bigserial PRIMARY KEY,
                serial bigint NOT NULL,
                uid text NOT NULL,
                action text NOT NULL,
                reason text NOT NULL,
                changed_at timestamptz NOT NULL
            )
            """,
            // scope 0: the parameters of every terminal without its own row.
            """
            CREATE TABLE parameters (
                scope bigint PRIMARY KEY,
                version bigint NOT NULL,
                body jsonb NOT NULL
            )
            """,
            """
            CREATE TABLE loads (
                reference text PRIMARY KEY,
                terminal_id bigint NOT NULL,
                card_serial bigint NOT NULL,
                account_id bigint NOT NULL,
                amount bigint NOT NULL,
                balance_before bigint NOT NULL,
                counter_before bigint NOT NULL,
                phase text NOT NULL,
                balance_after bigint,
                counter_after bigint,
                updated_at timestamptz NOT NULL
            )
            """,
            // One row per uploaded record, with the acknowledgement it got when first stored (a duplicate answers it).
            """
            CREATE TABLE records (
                terminal_id bigint NOT NULL,
                seq bigint NOT NULL,
                kind text NOT NULL,
                card_uid text NOT NULL,
                card_serial bigint,
                amount bigint NOT NULL,
                balance_before bigint NOT NULL,
                counter_before bigint NOT NULL,
                consumption bigint,
                reference_before bigint,
                settlement_reference bigint,
                outcome text NOT NULL,
                balance_after bigint,
                counter_after bigint,
                created_at timestamptz NOT NULL,
                digest text NOT NULL,
                received_at timestamptz NOT NULL,
                booking text NOT NULL,
                flags text NOT NULL,
                -- An undetermined record decided later: its booking then (the acknowledgement stays the original).
                decided text,
                PRIMARY KEY (terminal_id, seq)
            )
            """,
            "CREATE SEQUENCE movement_ids",
            """
            CREATE TABLE ledger (
                id bigserial PRIMARY KEY,
                movement_id bigint NOT NULL,
                account text NOT NULL,
                amount bigint NOT NULL,
                kind text NOT NULL,
                terminal_id bigint,
                seq bigint,
                booked_at timestamptz NOT NULL,
                -- Only on the entry that names the card (the card's statement).
                card_serial bigint,
                -- A terminal's sale to its merchant: the daily settlement's lines.
                merchant text,
                day text
            )
            """,
            "CREATE INDEX ledger_card ON ledger (card_serial) WHERE card_serial IS NOT NULL",
            "CREATE INDEX ledger_merchant_day ON ledger (day, merchant) WHERE merchant IS NOT NULL",
            """
            CREATE TABLE flags (
                id bigserial PRIMARY KEY,
                code text NOT NULL,
                terminal_id bigint,
                seq bigint,
                card_serial bigint,
                message text NOT NULL,
                raised_at timestamptz NOT NULL
            )
            """,
        ]),
        // The ledger as one row per movement (its debit and credit account, one amount: balanced by construction),
        // half the rows and index entries the two-row ledger wrote per movement; `ledger` stays as a view with the
        // entries' old shape (one row per side) for reports and tools. The card books get free space on their pages,
        // so rewriting a book (every card a batch touches) is a heap-only update, with no new index entry.
        Migration(version: 2, name: "one ledger row per movement", statements: [
            """
            CREATE TABLE movements (
                id bigint PRIMARY KEY DEFAULT nextval('movement_ids'),
                debit text NOT NULL,
                credit text NOT NULL,
                amount bigint NOT NULL,
                kind text NOT NULL,
                terminal_id bigint,
                seq bigint,
                booked_at timestamptz NOT NULL,
                -- The card the statement lists this movement under, and on which side (0 debit, 1 credit).
                card_serial bigint,
                card_side smallint,
                -- A terminal's sale to its merchant (the credit side): the daily settlement's lines.
                merchant text,
                day text
            )
            """,
            """
            INSERT INTO movements (id, debit, credit, amount, kind, terminal_id, seq, booked_at, card_serial, card_side,
                                   merchant, day)
            SELECT d.movement_id, d.account, c.account, c.amount, c.kind, c.terminal_id, c.seq, c.booked_at,
                   coalesce(d.card_serial, c.card_serial),
                   CASE WHEN d.card_serial IS NOT NULL THEN 0 WHEN c.card_serial IS NOT NULL THEN 1 END, c.merchant, c.day
            FROM ledger d JOIN ledger c ON c.movement_id = d.movement_id AND c.id > d.id
            """,
            "DROP TABLE ledger",
            "CREATE INDEX movements_card ON movements (card_serial) WHERE card_serial IS NOT NULL",
            "CREATE INDEX movements_merchant_day ON movements (day, merchant) WHERE merchant IS NOT NULL",
            """
            CREATE VIEW ledger AS
                SELECT id * 2 AS id, id AS movement_id, debit AS account, -amount AS amount, kind, terminal_id, seq,
                       booked_at, CASE WHEN card_side = 0 THEN card_serial END AS card_serial, NULL::text AS merchant,
                       NULL::text AS day
                FROM movements
                UNION ALL
                SELECT id * 2 + 1, id, credit, amount, kind, terminal_id, seq, booked_at,
                       CASE WHEN card_side = 1 THEN card_serial END, merchant, day
                FROM movements
            """,
            "ALTER TABLE card_books SET (fillfactor = 50)",
            // Existing pages get the free space when rewritten; a fresh store starts with it.
            "CLUSTER card_books USING card_books_pkey",
        ]),
        // An upload that conflicts looks its earlier flags up by key, not by scanning every flag ever raised (a
        // counter gap alone raises one for every fifth record or so).
        Migration(version: 3, name: "content-conflict flags by key", statements: [
            "CREATE INDEX flags_conflicts ON flags (terminal_id, seq) WHERE code = 'content-conflict'",
        ]),
        // Terminal roles: which terminals are stations (`TerminalInfo.loads`). None is at first, the card office's
        // counters included: the operator names them (`cardctl office terminal ID --allow-loads`).
        Migration(version: 4, name: "terminal roles", statements: [
            "ALTER TABLE terminals ADD COLUMN loads boolean NOT NULL DEFAULT false",
        ]),
    ]

    /// Applies the migrations not applied yet, each in its own transaction. Several instances may start at once: an
    /// advisory lock makes them take turns (the second finds the work done).
    static func apply(on client: PostgresClient, logger: Logger) async throws {
        try await client.query("""
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
            """, logger: logger)
        for migration in all {
            try await client.withTransaction(logger: logger) { connection in
                // An arbitrary constant key: "OneCard settlement migrations".
                try await connection.query("SELECT pg_advisory_xact_lock(7011100101)", logger: logger)
                let rows = try await connection.query(
                    "SELECT 1 FROM schema_migrations WHERE version = \(Int64(migration.version))", logger: logger)
                var applied = false
                for try await _ in rows { applied = true }
                guard !applied else { return }
                for statement in migration.statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query(
                    "INSERT INTO schema_migrations (version, name) VALUES (\(Int64(migration.version)), \(migration.name))",
                    logger: logger)
                logger.info("applied migration", metadata: ["migration.version": "\(migration.version)"])
            }
        }
    }
}
