import GRDB

/// The settlement store's schema.
///
/// NEVER EDIT A MIGRATION ONCE IT IS COMMITTED: stores in the field have run it, and the migrator runs each one only
/// once. Change the schema with a new migration appended to `migrator`.
enum Schema {
    static let migrationNames = ["v1", "v2", "v3", "v4"]

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1", migrate: v1)
        migrator.registerMigration("v2", migrate: v2)
        migrator.registerMigration("v3", migrate: v3)
        migrator.registerMigration("v4", migrate: v4)
        return migrator
    }

    /// Times are Unix seconds as REAL (exact for whole seconds; acknowledgements keep sub-second receipt times).
    static func v1(_ db: Database) throws {
        try db.execute(sql: """
            CREATE TABLE terminals (
                id INTEGER PRIMARY KEY,
                merchant TEXT NOT NULL,
                secret BLOB NOT NULL,
                enabled INTEGER NOT NULL
            );
            CREATE TABLE nonces (
                terminal_id INTEGER NOT NULL,
                nonce TEXT NOT NULL,
                seen_at REAL NOT NULL,
                PRIMARY KEY (terminal_id, nonce)
            ) WITHOUT ROWID;
            CREATE INDEX nonces_seen_at ON nonces(seen_at);
            CREATE TABLE accounts (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                name TEXT NOT NULL,
                balance INTEGER NOT NULL,
                created_at REAL NOT NULL
            );
            CREATE TABLE cards (
                serial INTEGER PRIMARY KEY,
                uid TEXT NOT NULL UNIQUE,
                account_id INTEGER NOT NULL REFERENCES accounts(id),
                status TEXT NOT NULL,
                issued_at REAL NOT NULL
            );
            -- The ledger's memory of each card UID (issued or not): the purse mirror and the wallets' windows,
            -- reads, pending undetermined records and online-load links (CardBookCoding).
            CREATE TABLE card_books (
                uid TEXT PRIMARY KEY,
                purse_mirror INTEGER NOT NULL,
                purse_counter INTEGER,
                book BLOB NOT NULL
            ) WITHOUT ROWID;
            CREATE TABLE records (
                terminal_id INTEGER NOT NULL,
                seq INTEGER NOT NULL,
                kind TEXT NOT NULL,
                card_uid TEXT NOT NULL,
                card_serial INTEGER,
                amount INTEGER NOT NULL,
                balance_before INTEGER NOT NULL,
                counter_before INTEGER NOT NULL,
                consumption INTEGER,
                reference_before INTEGER,
                settlement_reference INTEGER,
                outcome TEXT NOT NULL,
                balance_after INTEGER,
                counter_after INTEGER,
                created_at REAL NOT NULL,
                digest TEXT NOT NULL,
                booking TEXT NOT NULL,
                flags TEXT NOT NULL,
                received_at REAL NOT NULL,
                -- An undetermined record decided later: its booking then (the acknowledgement stays the original).
                decided TEXT,
                PRIMARY KEY (terminal_id, seq)
            ) WITHOUT ROWID;
            -- Two rows per movement (movement_id = the id of its first row); card_serial only on the entry that
            -- names the card (the statement).
            CREATE TABLE ledger (
                id INTEGER PRIMARY KEY,
                movement_id INTEGER NOT NULL,
                account TEXT NOT NULL,
                amount INTEGER NOT NULL,
                kind TEXT NOT NULL,
                terminal_id INTEGER,
                seq INTEGER,
                booked_at REAL NOT NULL,
                card_serial INTEGER
            );
            CREATE INDEX ledger_card ON ledger(card_serial) WHERE card_serial IS NOT NULL;
            CREATE TABLE daily_totals (
                day TEXT NOT NULL,
                merchant TEXT NOT NULL,
                terminal_id INTEGER NOT NULL,
                count INTEGER NOT NULL,
                total INTEGER NOT NULL,
                PRIMARY KEY (day, merchant, terminal_id)
            ) WITHOUT ROWID;
            CREATE TABLE blacklist (
                version INTEGER PRIMARY KEY AUTOINCREMENT,
                serial INTEGER NOT NULL,
                uid TEXT NOT NULL,
                action TEXT NOT NULL,
                reason TEXT NOT NULL,
                changed_at REAL NOT NULL
            );
            -- scope 0: the default for every terminal; else a terminal's own.
            CREATE TABLE parameters (
                scope INTEGER PRIMARY KEY,
                version INTEGER NOT NULL,
                body TEXT NOT NULL
            );
            CREATE TABLE loads (
                reference TEXT PRIMARY KEY,
                terminal_id INTEGER NOT NULL,
                card_serial INTEGER NOT NULL,
                account_id INTEGER NOT NULL,
                amount INTEGER NOT NULL,
                balance_before INTEGER NOT NULL,
                counter_before INTEGER NOT NULL,
                phase TEXT NOT NULL,
                balance_after INTEGER,
                counter_after INTEGER,
                updated_at REAL NOT NULL
            ) WITHOUT ROWID;
            CREATE TABLE flags (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                code TEXT NOT NULL,
                terminal_id INTEGER,
                seq INTEGER,
                card_serial INTEGER,
                message TEXT NOT NULL,
                raised_at REAL NOT NULL
            );
            """)
    }

    /// The ledger as one row per movement (its debit and credit account, one amount: balanced by construction), half
    /// the rows the two-row ledger wrote; `ledger` stays as a view with the entries' old shape (one row per side, the
    /// movement's id as `movement_id`) for tools. A movement keeps the id of its first entry.
    static func v2(_ db: Database) throws {
        try db.execute(sql: """
            CREATE TABLE movements (
                id INTEGER PRIMARY KEY,
                debit TEXT NOT NULL,
                credit TEXT NOT NULL,
                amount INTEGER NOT NULL,
                kind TEXT NOT NULL,
                terminal_id INTEGER,
                seq INTEGER,
                booked_at REAL NOT NULL,
                -- The card the statement lists this movement under, and on which side (0 debit, 1 credit).
                card_serial INTEGER,
                card_side INTEGER
            );
            INSERT INTO movements (id, debit, credit, amount, kind, terminal_id, seq, booked_at, card_serial, card_side)
            SELECT d.movement_id, d.account, c.account, c.amount, c.kind, c.terminal_id, c.seq, c.booked_at,
                   COALESCE(d.card_serial, c.card_serial),
                   CASE WHEN d.card_serial IS NOT NULL THEN 0 WHEN c.card_serial IS NOT NULL THEN 1 END
            FROM ledger d JOIN ledger c ON c.movement_id = d.movement_id AND c.id > d.id;
            DROP TABLE ledger;
            CREATE INDEX movements_card ON movements(card_serial) WHERE card_serial IS NOT NULL;
            CREATE VIEW ledger AS
                SELECT id * 2 AS id, id AS movement_id, debit AS account, -amount AS amount, kind, terminal_id, seq,
                       booked_at, CASE WHEN card_side = 0 THEN card_serial END AS card_serial
                FROM movements
                UNION ALL
                SELECT id * 2 + 1, id, credit, amount, kind, terminal_id, seq, booked_at,
                       CASE WHEN card_side = 1 THEN card_serial END
                FROM movements;
            """)
    }

    /// The content-conflict flags by key: an upload that conflicts looks its earlier flags up here, not by scanning
    /// every flag ever raised (a counter gap alone raises one for every fifth record or so).
    static func v3(_ db: Database) throws {
        try db.execute(sql: "CREATE INDEX flags_conflicts ON flags(terminal_id, seq) WHERE code = 'content-conflict'")
    }

    /// Terminal roles: which terminals are stations (`TerminalInfo.loads`). None is at first, the card office's
    /// counters included: the operator names them (`cardctl office terminal ID --allow-loads`).
    static func v4(_ db: Database) throws {
        try db.execute(sql: "ALTER TABLE terminals ADD COLUMN loads INTEGER NOT NULL DEFAULT 0")
    }

    /// The tables `rowCounts()` reports.
    static let tables = ["terminals", "nonces", "accounts", "cards", "card_books", "records", "movements", "daily_totals",
                         "blacklist", "parameters", "loads", "flags"]
}
