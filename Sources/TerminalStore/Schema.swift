import GRDB

/// The store's schema, as GRDB migrations.
///
/// NEVER EDIT A MIGRATION ONCE IT IS COMMITTED: boxes in the field have run it, and the migrator runs each one
/// once (by name). Change the schema with a new migration ("v2", "v3", ...) appended at the end. A store migrated
/// by a newer version (a migration this list lacks) is refused at open (`newerSchema`), never erased.
enum Schema {
    /// The names of the migrations, in order; the last one is the schema version `check()` reports.
    static var migrationNames: [String] { ["v1", "v2"] }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1", migrate: v1)
        migrator.registerMigration("v2", migrate: v2)
        return migrator
    }

    // MARK: v1 (committed: do not edit)

    private static func v1(_ db: Database) throws {
        // One row per terminal sequence: the intent, its outcome (NULL while open), its upload state.
        // `sequence` is the rowid, so every lookup by sequence is a b-tree search.
        try db.execute(sql: """
            CREATE TABLE journalEntry (
                sequence INTEGER PRIMARY KEY NOT NULL CHECK (sequence BETWEEN 0 AND 4294967295),
                terminalID INTEGER NOT NULL,
                kind TEXT NOT NULL,
                wallet TEXT NOT NULL CHECK (wallet IN ('purse', 'water')),
                cardUID TEXT NOT NULL,
                cardSerial INTEGER,
                amountFen INTEGER NOT NULL,
                balanceBeforeFen INTEGER NOT NULL,
                counterBefore INTEGER NOT NULL,
                consumptionFen INTEGER,
                referenceBefore INTEGER,
                settlementReference INTEGER,
                recordBefore TEXT,
                createdAt REAL NOT NULL,
                outcome TEXT CHECK (outcome IN ('done', 'not-done', 'undetermined')),
                balanceAfterFen INTEGER,
                counterAfter INTEGER,
                decidedAt REAL,
                upload TEXT NOT NULL DEFAULT 'open' CHECK (upload IN ('open', 'queued', 'sent', 'acknowledged')),
                sentAt REAL,
                acknowledgedAt REAL,
                -- Open exactly while undecided: nothing undecided is ever queued, sent or acknowledged.
                CHECK ((outcome IS NULL) = (upload = 'open')),
                -- A done outcome carries the balance and counter after it; the others carry neither.
                CHECK ((COALESCE(outcome, '') = 'done') = (balanceAfterFen IS NOT NULL AND counterAfter IS NOT NULL)),
                CHECK ((upload = 'acknowledged') = (acknowledgedAt IS NOT NULL))
            )
            """)
        // The tap's lookup: open intents of one card, oldest first. Partial: its size is the number of open intents.
        try db.execute(sql: "CREATE INDEX journalEntryOpenByCard ON journalEntry (cardUID, sequence) WHERE outcome IS NULL")
        // Listing one card's history (reports, cardctl journal list --card).
        try db.execute(sql: "CREATE INDEX journalEntryByCard ON journalEntry (cardUID, sequence)")
        // The upload queue in sequence order. Partial: acknowledged entries leave it.
        try db.execute(sql: "CREATE INDEX journalEntryPending ON journalEntry (sequence) WHERE upload IN ('queued', 'sent')")
        // prune(acknowledgedBefore:).
        try db.execute(sql: "CREATE INDEX journalEntryAcknowledged ON journalEntry (acknowledgedAt) WHERE upload = 'acknowledged'")

        // The last terminal sequence issued or recorded (one row). Never decreases, survives pruning.
        try db.execute(sql: """
            CREATE TABLE sequenceCounter (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                lastIssued INTEGER NOT NULL CHECK (lastIssued BETWEEN 0 AND 4294967295)
            )
            """)
        try db.execute(sql: "INSERT INTO sequenceCounter (id, lastIssued) VALUES (1, 0)")

        // The highest purse counter a done outcome reached, per card: `lastSeenCounter` in one lookup, kept when the
        // entries are pruned. Maintained by the triggers below.
        try db.execute(sql: """
            CREATE TABLE cardCounter (
                cardUID TEXT PRIMARY KEY NOT NULL,
                purseCounter INTEGER NOT NULL
            ) WITHOUT ROWID
            """)
        for event in ["INSERT", "UPDATE OF outcome, counterAfter"] {
            let name = event == "INSERT" ? "journalEntryDoneInserted" : "journalEntryDoneUpdated"
            try db.execute(sql: """
                CREATE TRIGGER \(name) AFTER \(event) ON journalEntry
                WHEN NEW.outcome = 'done' AND NEW.wallet = 'purse'
                BEGIN
                    INSERT INTO cardCounter (cardUID, purseCounter) VALUES (NEW.cardUID, NEW.counterAfter)
                    ON CONFLICT (cardUID) DO UPDATE SET purseCounter = MAX(purseCounter, excluded.purseCounter);
                END
                """)
        }

        // Running totals for queueSummary() (one row), so a tap's summary costs the same at any journal size.
        // Kept by triggers on every insert, update and delete, whatever the code path.
        try db.execute(sql: """
            CREATE TABLE queueTotals (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                openCount INTEGER NOT NULL,
                unacknowledgedCount INTEGER NOT NULL,
                unacknowledgedDebitFen INTEGER NOT NULL
            )
            """)
        try db.execute(sql: "INSERT INTO queueTotals VALUES (1, 0, 0, 0)")
        func contribution(_ row: String) -> (open: String, unacknowledged: String, debit: String) {
            ("(\(row).upload = 'open')",
             "(\(row).upload IN ('queued', 'sent'))",
             "(CASE WHEN \(row).upload IN ('queued', 'sent') AND \(row).kind = 'purse-debit' AND \(row).outcome = 'done' THEN \(row).amountFen ELSE 0 END)")
        }
        let new = contribution("NEW"), old = contribution("OLD")
        try db.execute(sql: """
            CREATE TRIGGER journalEntryTotalsInserted AFTER INSERT ON journalEntry BEGIN
                UPDATE queueTotals SET openCount = openCount + \(new.open),
                    unacknowledgedCount = unacknowledgedCount + \(new.unacknowledged),
                    unacknowledgedDebitFen = unacknowledgedDebitFen + \(new.debit) WHERE id = 1;
            END;
            CREATE TRIGGER journalEntryTotalsUpdated AFTER UPDATE ON journalEntry BEGIN
                UPDATE queueTotals SET openCount = openCount - \(old.open) + \(new.open),
                    unacknowledgedCount = unacknowledgedCount - \(old.unacknowledged) + \(new.unacknowledged),
                    unacknowledgedDebitFen = unacknowledgedDebitFen - \(old.debit) + \(new.debit) WHERE id = 1;
            END;
            CREATE TRIGGER journalEntryTotalsDeleted AFTER DELETE ON journalEntry BEGIN
                UPDATE queueTotals SET openCount = openCount - \(old.open),
                    unacknowledgedCount = unacknowledgedCount - \(old.unacknowledged),
                    unacknowledgedDebitFen = unacknowledgedDebitFen - \(old.debit) WHERE id = 1;
            END
            """)

        // The blacklist: every change received (history), and the cards blacklisted now (one row per card serial).
        try db.execute(sql: """
            CREATE TABLE blacklistChange (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                cardSerial INTEGER NOT NULL CHECK (cardSerial BETWEEN 0 AND 4294967295),
                cardUID TEXT,
                version INTEGER NOT NULL,
                action TEXT NOT NULL CHECK (action IN ('add', 'remove')),
                reason TEXT NOT NULL,
                receivedAt REAL NOT NULL
            )
            """)
        try db.execute(sql: """
            CREATE TABLE blacklistEntry (
                cardSerial INTEGER PRIMARY KEY NOT NULL,
                cardUID TEXT,
                version INTEGER NOT NULL,
                reason TEXT NOT NULL,
                since REAL NOT NULL
            )
            """)
        // A POS reads the UID, not the serial.
        try db.execute(sql: "CREATE INDEX blacklistEntryByUID ON blacklistEntry (cardUID) WHERE cardUID IS NOT NULL")
        try db.execute(sql: """
            CREATE TABLE blacklistState (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                version INTEGER NOT NULL,
                updatedAt REAL
            )
            """)
        try db.execute(sql: "INSERT INTO blacklistState VALUES (1, 0, NULL)")
    }

    // MARK: v2 (committed: do not edit)

    /// The terminal parameters the settlement service last sent (one row, the JSON as received, with its version).
    private static func v2(_ db: Database) throws {
        try db.execute(sql: """
            CREATE TABLE terminalParameters (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                version INTEGER NOT NULL,
                json TEXT NOT NULL,
                receivedAt REAL NOT NULL
            )
            """)
    }
}
