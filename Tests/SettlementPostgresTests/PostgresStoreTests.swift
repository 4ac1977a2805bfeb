import CampusCard
import Foundation
import PostgresNIO
import SettlementCore
@testable import SettlementPostgres
import Testing
import TestSupport

/// The PostgreSQL store's own behaviour on a real server (the shared conformance suite runs on it as well).
@Suite struct PostgresStoreTests {
    @Test func migrationsApplyOnceAndASecondInstanceFindsThemDone() async throws {
        let url = try PostgresServer.shared().createDatabase()
        try await PostgresSettlementStore.withStore(url: url, logger: testLogger) { _ in }
        let imbalance = try await PostgresSettlementStore.withStore(url: url, logger: testLogger) { store in
            try await store.ledgerImbalance()
        }
        #expect(imbalance == 0)
        let database = String(url.split(separator: "/").last!)
        #expect(try PostgresServer.shared().psql("SELECT version, name FROM schema_migrations ORDER BY version", database: database)
            == "1|settlement schema\n2|one ledger row per movement\n3|content-conflict flags by key\n4|terminal roles")
    }

    /// On a store the size of a campus, a batch's reads and writes of books, cards, accounts and records probe the
    /// indexes for the batch's keys. Joined from unnest alone, the planner hashed a scan of the whole table instead: a
    /// cost that grows with every card issued (12 ms a batch at 30,000 books).
    @Test func aBatchsStatementsProbeTheIndexesOnABigStore() async throws {
        let server = try PostgresServer.shared()
        let url = try server.createDatabase()
        let database = String(url.split(separator: "/").last!)
        try await PostgresSettlementStore.withStore(url: url, logger: testLogger) { _ in }
        let size = 30_000
        _ = try server.psql("""
            INSERT INTO accounts (id, name, balance, created_at) SELECT g, 'holder ' || g, 0, now() FROM generate_series(1, \(size)) g;
            INSERT INTO cards (serial, uid, account_id, status, issued_at)
                SELECT g, upper(lpad(to_hex(g * 7919), 8, '0')), g, 'active', now() FROM generate_series(1, \(size)) g;
            INSERT INTO card_books (uid, purse_mirror, purse_counter, book) SELECT uid, 0, NULL, '\\x00' FROM cards;
            INSERT INTO records (terminal_id, seq, kind, card_uid, amount, balance_before, counter_before, outcome, created_at,
                                 digest, received_at, booking, flags)
                SELECT 1 + g % 20, g, 'purse-debit', 'X', 1, 1, 1, 'done', now(), 'd', now(), 'booked', '' FROM generate_series(1, 100000) g;
            ANALYZE
            """, database: database)
        let keys = Array(stride(from: 7, to: size, by: size / 400))
        let uids = keys.map { String(format: "%08X", $0 * 7919) }
        var update = CompositeStatement()
        let books = uids.map { CardBook(uid: $0, card: nil) }
        let booksSQL = PostgresSettlementStore.booksUpdate(books, into: &update)
        // A batch decides a few earlier records (the card's next record decides each), not hundreds.
        let decisions = keys.prefix(20).map { PendingDecision(terminalID: TerminalID(UInt16(1 + $0 % 20)), terminalSequence: UInt32($0), booking: .booked, flags: []) }
        let statements: [(String, PostgresQuery)] = [
            ("books and cards", PostgresSettlementStore.booksSelect(uids)),
            ("books update", update.query(booksSQL)),
            ("accounts update", PostgresSettlementStore.accountsUpdate(ids: keys.map(Int64.init), deltas: keys.map { _ in 1 })),
            ("decisions update", PostgresSettlementStore.decisionsUpdate(decisions)),
        ]
        try await PostgresSettlementStore.withStore(url: url, logger: testLogger) { store in
            for (name, query) in statements {
                let plan = try await store.transaction("explain") { connection in
                    var lines: [String] = []
                    let rows = try await connection.query(PostgresQuery(unsafeSQL: "EXPLAIN " + query.sql, binds: query.binds), logger: testLogger)
                    for try await line in rows.decode(String.self) { lines.append(line) }
                    return lines.joined(separator: "\n")
                }
                #expect(!plan.contains("Seq Scan"), "\(name): \(plan)")
            }
        }
    }

    /// An upload that conflicts looks earlier content-conflict flags up by key: with sequential scans priced out, the
    /// lookup's plan uses the partial index (without it, the planner has nothing but a scan of every flag).
    @Test func theConflictLookupUsesItsIndex() async throws {
        let url = try PostgresServer.shared().createDatabase()
        try await PostgresSettlementStore.withStore(url: url, logger: testLogger) { _ in }
        let database = String(url.split(separator: "/").last!)
        let lookup = PostgresSettlementStore.conflictLookup
            .replacingOccurrences(of: "$1", with: "5").replacingOccurrences(of: "$2", with: "'{1,2,3}'::bigint[]")
        let plan = try PostgresServer.shared().psql("SET enable_seqscan = off; EXPLAIN \(lookup)", database: database)
        #expect(plan.contains("flags_conflicts"), "\(plan)")
    }

    /// A store written by the first schema (two ledger rows per movement) keeps its statements, daily totals and
    /// ledger entries when the second turns its ledger into one row per movement.
    @Test func theTwoRowLedgerBecomesOneRowPerMovementWithNothingLost() async throws {
        let server = try PostgresServer.shared()
        let url = try server.createDatabase()
        let database = String(url.split(separator: "/").last!)
        _ = try server.psql(Migrations.all[0].statements.joined(separator: ";\n") + """
            ;
            CREATE TABLE schema_migrations (version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
            INSERT INTO schema_migrations (version, name) VALUES (1, 'settlement schema');
            SELECT setval('movement_ids', 20);
            INSERT INTO ledger (id, movement_id, account, amount, kind, terminal_id, seq, booked_at, card_serial, merchant, day) VALUES
                (1, 11, 'purse:1001', -500, 'purse-debit', 7, 1, '2025-06-15 08:00:00+00', 1001, NULL, NULL),
                (2, 11, 'merchant:canteen-1', 500, 'purse-debit', 7, 1, '2025-06-15 08:00:00+00', NULL, 'canteen-1', '2025-06-15'),
                (3, 12, 'account:1', -2000, 'online-load', NULL, NULL, '2025-06-15 09:00:00+00', NULL, NULL, NULL),
                (4, 12, 'purse:1001', 2000, 'online-load', NULL, NULL, '2025-06-15 09:00:00+00', 1001, NULL, '2025-06-15'),
                (5, 13, 'cash', -300, 'cash-load', 7, 2, '2025-06-15 10:00:00+00', NULL, NULL, NULL),
                (6, 13, 'pending-load', 300, 'cash-load', 7, 2, '2025-06-15 10:00:00+00', NULL, NULL, '2025-06-15')
            """, database: database)
        // (The first schema wrote the day on the credit entry only, the merchant on a sale's credit entry only.)
        let before = try server.psql("SELECT movement_id, account, amount, kind, terminal_id, seq, booked_at, card_serial, merchant, day FROM ledger ORDER BY id", database: database)
        try await PostgresSettlementStore.withStore(url: url, logger: testLogger) { store in
            #expect(try await store.ledgerImbalance() == 0)
            let statement = try await store.statement(cardSerial: 1001)
            #expect(statement.map(\.movementID) == [11, 12])
            #expect(statement.map(\.account) == ["purse:1001", "purse:1001"])
            #expect(statement.map(\.amount) == [-500, 2000])
            #expect(statement.map(\.kind) == ["purse-debit", "online-load"])
            #expect(statement.map(\.terminalSequence) == [1, nil])
            #expect(statement.map(\.bookedAt) == [Date(timeIntervalSince1970: 1_749_974_400), Date(timeIntervalSince1970: 1_749_978_000)])
            let totals = try await store.dailyTotals(day: "2025-06-15")
            #expect(totals.map(\.total) == [500, 500])
            #expect(totals.map(\.terminalID) == [nil, 7])
        }
        #expect(try server.psql("SELECT movement_id, account, amount, kind, terminal_id, seq, booked_at, card_serial, merchant, day FROM ledger ORDER BY id", database: database) == before)
        #expect(try server.psql("SELECT count(*) FROM movements", database: database) == "3")
        // New movements draw ids after the old ones.
        #expect(try server.psql("SELECT nextval('movement_ids')", database: database) == "21")
    }

    @Test func aBadURLIsATypedError() {
        #expect(throws: SettlementError.self) { try PostgresSettlementStore(url: "mysql://x@y/z", logger: testLogger) }
    }

    @Test func terminalsNoncesAndParameters() async throws {
        try await withFreshStore { store, _ in
            try await store.putTerminal(TerminalInfo(id: 7, merchant: "canteen-1", secret: Array(repeating: 3, count: 16)))
            #expect(try await store.terminal(7) == TerminalInfo(id: 7, merchant: "canteen-1", secret: Array(repeating: 3, count: 16)))
            #expect(try await store.terminal(8) == nil)
            #expect(try await store.rememberNonce(terminal: 7, nonce: "n1", at: day0))
            #expect(try await !store.rememberNonce(terminal: 7, nonce: "n1", at: day0.addingTimeInterval(10)))
            #expect(try await store.rememberNonce(terminal: 8, nonce: "n1", at: day0))

            #expect(try await store.parameters(for: 7).version == 0)
            let everyone = try await store.setParameters(TerminalParameters(version: 0, maxOfflineDebit: 2_000), for: nil)
            #expect(everyone.version == 1)
            let own = try await store.setParameters(TerminalParameters(version: 0, waterUnitPrice: 7, fixedPrices: ["set-meal": 1_200]), for: 7)
            #expect(own.version == 2)
            #expect(try await store.parameters(for: 7) == own)
            #expect(try await store.parameters(for: 9) == everyone)
        }
    }

    @Test func cardsAndTheBlacklistFeed() async throws {
        try await withFreshStore { store, _ in
            let account = try await store.openAccount(name: "Li Lei", initialBalance: 5_000, at: day0)
            #expect(try await store.account(account.id)?.balance == 5_000)
            let card = try await store.issueCard(serial: 1001, uid: "04a1b2c3", accountID: account.id, at: day0)
            #expect(card.uid == "04A1B2C3")
            #expect(try await store.card(uid: "04A1B2C3") == card)
            await #expect(throws: SettlementError.self) {
                try await store.issueCard(serial: 1002, uid: "04A1B2C3", accountID: account.id, at: day0)
            }
            await #expect(throws: SettlementError.self) {
                try await store.issueCard(serial: 1003, uid: "04A1B2C4", accountID: 999, at: day0)
            }
            let (lost, v1) = try await store.setCardStatus(serial: 1001, to: .lost, reason: "reported lost", at: day0)
            #expect(lost.status == .lost)
            let (_, v2) = try await store.setCardStatus(serial: 1001, to: .active, reason: "found", at: day0)
            #expect(v2 > v1)
            let page = try await store.blacklist(after: 0, limit: 1)
            #expect(page.changes.map(\.action) == [.add] && page.more && page.version == v1)
            let rest = try await store.blacklist(after: page.version, limit: 10)
            #expect(rest.changes.map(\.action) == [.remove] && !rest.more && rest.version == v2)
            _ = try await store.setCardStatus(serial: 1001, to: .cancelled, reason: "left", at: day0)
            await #expect(throws: SettlementError.self) {
                try await store.setCardStatus(serial: 1001, to: .active, reason: "back", at: day0)
            }
            #expect(try await store.ledgerImbalance() == 0)
        }
    }

    @Test func onlineLoadIsIdempotentAndHoldsTheAccount() async throws {
        try await withFreshStore { store, _ in
            try await registerTerminals(store, [3], merchant: { _ in "office" })
            let account = try await store.openAccount(name: "Han Meimei", initialBalance: 5_000, at: day0)
            _ = try await store.issueCard(serial: 1001, uid: "04A1B2C3", accountID: account.id, at: day0)
            let prepared = try await store.prepareLoad(reference: "L1", terminal: 3, cardSerial: 1001, amount: 2_000,
                                                       balanceBefore: 300, counterBefore: 9, at: day0)
            #expect(prepared.phase == .prepared)
            #expect(try await store.account(account.id)?.balance == 3_000)
            #expect(try await store.prepareLoad(reference: "L1", terminal: 3, cardSerial: 1001, amount: 2_000,
                                                balanceBefore: 300, counterBefore: 9, at: day0) == prepared)
            await #expect(throws: SettlementError.self) {
                try await store.prepareLoad(reference: "L1", terminal: 3, cardSerial: 1001, amount: 2_500,
                                            balanceBefore: 300, counterBefore: 9, at: day0)
            }
            await #expect(throws: SettlementError.self) {
                try await store.prepareLoad(reference: "L2", terminal: 3, cardSerial: 1001, amount: 9_000,
                                            balanceBefore: 300, counterBefore: 9, at: day0)
            }
            let confirmed = try await store.confirmLoad(reference: "L1", balanceAfter: 2_300, counterAfter: 10, at: day0)
            #expect(confirmed.phase == .confirmed)
            #expect(try await store.confirmLoad(reference: "L1", balanceAfter: 2_300, counterAfter: 10, at: day0).phase == .confirmed)
            await #expect(throws: SettlementError.self) { try await store.reverseLoad(reference: "L1", at: day0) }
            #expect(try await store.card(serial: 1001)?.purseMirror == 2_300)
            #expect(try await store.card(serial: 1001)?.purseCounter == 10)

            _ = try await store.prepareLoad(reference: "L3", terminal: 3, cardSerial: 1001, amount: 1_000,
                                            balanceBefore: 2_300, counterBefore: 10, at: day0)
            #expect(try await store.reverseLoad(reference: "L3", at: day0).phase == .reversed)
            #expect(try await store.reverseLoad(reference: "L3", at: day0).phase == .reversed)
            await #expect(throws: SettlementError.self) {
                try await store.confirmLoad(reference: "L3", balanceAfter: 3_300, counterAfter: 11, at: day0)
            }
            #expect(try await store.account(account.id)?.balance == 3_000)
            #expect(try await store.statement(cardSerial: 1001).map(\.amount) == [2_000])
            #expect(try await store.ledgerImbalance() == 0)
        }
    }

    @Test func ingestAnswersDuplicatesWithTheOriginalAndRefusesConflicts() async throws {
        try await withFreshStore { store, _ in
            try await registerTerminals(store, [5], merchant: { _ in "canteen-1" })
            let cards = try await issueCards(store, count: 1)
            let r1 = debit(terminal: 5, sequence: 1, uid: cards[0].uid, serial: nil, before: 1_000, amount: 250, counterBefore: 4)
            let r2 = debit(terminal: 5, sequence: 2, uid: cards[0].uid, serial: nil, before: 750, amount: 100, counterBefore: 5)
            let first = try await store.ingest([r1, r2, r1], from: 5, at: day0)
            #expect(first.map(\.status) == [.accepted, .accepted, .duplicate])
            #expect(first.map(\.booking) == [.booked, .booked, .booked])

            var changed = r2
            changed.amount = 99
            changed.balanceAfter = 651
            let later = day0.addingTimeInterval(60)
            let second = try await store.ingest([r1, changed], from: 5, at: later)
            #expect(second.map(\.status) == [.duplicate, .conflict])
            #expect(second[0].receivedAt == day0)
            #expect(try await store.flags(limit: 10).map(\.code) == ["content-conflict"])
            await #expect(throws: SettlementError.self) { try await store.ingest([r1], from: 6, at: later) }
            await #expect(throws: SettlementError.self) {
                try await store.ingest([debit(terminal: 9, sequence: 1, uid: "04000001", serial: nil, before: 1, amount: 1, counterBefore: 1)], from: 9, at: later)
            }

            #expect(try await store.statement(cardSerial: cards[0].serial).map(\.amount) == [-250, -100])
            #expect(try await store.card(serial: cards[0].serial)?.purseMirror == 650)
            let totals = try await store.dailyTotals(day: "2026-11-18")
            #expect(totals == [DailyTotal(day: "2026-11-18", merchant: "canteen-1", terminalID: nil, count: 2, total: 350),
                               DailyTotal(day: "2026-11-18", merchant: "canteen-1", terminalID: 5, count: 2, total: 350)])
            #expect(try await store.ledgerImbalance() == 0)
        }
    }
}
