import CampusCard
import Foundation
import GRDB
import SettlementCore

/// The settlement store in one SQLite file through GRDB: WAL, `synchronous=FULL` on the writer (a committed batch
/// survives a power cut), one writer. Every method is one transaction; a thrown error rolls it back whole. Blocking
/// work runs on GRDB's own queues (its async `read`/`write`), never on the cooperative pool.
///
/// The ledger rules are `Ledger`'s; this type loads the `CardBook`s a batch touches in one query, lets `Ledger`
/// decide, and writes the outcome with multi-row statements.
public final class SQLiteSettlementStore: SettlementStore {
    /// The store file.
    public let path: String
    let pool: DatabasePool
    /// The writer's `wal_autocheckpoint` (pages).
    public static let walAutocheckpointPages = 10_000

    /// Opens (or creates) the store at `path` and runs its migrations. Throws `SettlementError(.storage)` when the
    /// file cannot be opened, was written by a newer version, or refuses `synchronous=FULL`.
    public init(path: String) throws {
        self.path = path
        var configuration = Configuration()
        configuration.label = "SettlementSQLite"
        configuration.foreignKeysEnabled = true
        configuration.busyMode = .timeout(10)
        // The store holds every terminal's signing secret: a new file is its owner's alone (0600; SQLite gives the
        // -wal and -shm files the same mode).
        let created = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if created >= 0 { _ = Glibc.close(created) }
        // SQLite opens a file it may not write read-only, and every call would then fail: refuse it now. The
        // directory too: the -wal and -shm files are made beside it.
        let directory = (path as NSString).deletingLastPathComponent
        for (place, what) in [(path, "the file"), (directory.isEmpty ? "." : directory, "its directory")]
        where FileManager.default.fileExists(atPath: place) && access(place, W_OK) != 0 {
            throw SettlementError(.storage, "cannot write the settlement store \(path) (\(what): \(String(cString: strerror(errno)))): run settlementd as the file's owner, or fix the permissions")
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
        } catch {
            throw SettlementError(.storage, "cannot open the settlement store \(path) (\(error)): check the path and its permissions")
        }
        do {
            // The pool set the writer to NORMAL while opening (GRDB's WAL set-up): FULL syncs the WAL at every commit,
            // so an acknowledged batch survives a power cut, not only a crash.
            let synchronous = try pool.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA synchronous = FULL")
                // Checkpoint every ~40 MB of WAL instead of ~4 MB: every batch rewrites the books of the cards it
                // touches, and a checkpoint then copies each page once however often batches rewrote it.
                try db.execute(sql: "PRAGMA wal_autocheckpoint = \(Self.walAutocheckpointPages)")
                return try Int.fetchOne(db, sql: "PRAGMA synchronous")
            }
            guard synchronous == 2 else {
                throw SettlementError(.storage, "the settlement store \(path) did not accept synchronous=FULL (it reports \(synchronous.map(String.init) ?? "nothing")): this SQLite cannot make commits durable; report it")
            }
            try pool.read { db in
                let unknown = try Schema.migrator.appliedIdentifiers(db).subtracting(Schema.migrationNames)
                if !unknown.isEmpty {
                    throw SettlementError(.storage, "the settlement store \(path) was written by a newer version (migrations \(unknown.sorted().joined(separator: ", "))): run that version, or move the file aside")
                }
            }
            try Schema.migrator.migrate(pool)
        } catch {
            try? pool.close()
            throw Self.storageError(error, path: path)
        }
    }

    /// Closes the connections (after a WAL checkpoint). Calls after it throw.
    public func close() throws {
        _ = try? pool.writeWithoutTransaction { try $0.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
        try pool.close()
    }

    /// The writer's journal mode and synchronous level (tests and checks).
    public func writerPragmas() async throws -> (journalMode: String, synchronous: Int) {
        try await pool.writeWithoutTransaction { db in
            (try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "", try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1)
        }
    }

    static func storageError(_ error: any Error, path: String) -> any Error {
        if error is SettlementError { return error }
        return SettlementError(.storage, "the settlement store \(path) failed (\(error)): check the disk and the file; the call wrote nothing")
    }

    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do { return try await pool.write(body) } catch { throw Self.storageError(error, path: path) }
    }

    func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do { return try await pool.read(body) } catch { throw Self.storageError(error, path: path) }
    }

    static func seconds(_ date: Date) -> Double { date.timeIntervalSince1970 }
    static func date(_ seconds: Double) -> Date { Date(timeIntervalSince1970: seconds) }

    // MARK: terminals

    public func putTerminal(_ terminal: TerminalInfo) async throws { try await saveTerminal(terminal, replacing: true) }

    public func addTerminal(_ terminal: TerminalInfo) async throws { try await saveTerminal(terminal, replacing: false) }

    private func saveTerminal(_ terminal: TerminalInfo, replacing: Bool) async throws {
        guard terminal.id != .none else { throw SettlementError(.badRequest, "terminal id 0 is not a terminal: use 1–65535") }
        guard !terminal.merchant.isEmpty else { throw SettlementError(.badRequest, "terminal \(terminal.id) has no merchant: name who its sales are booked to") }
        guard terminal.secret.count >= 16 else { throw SettlementError(.badRequest, "terminal \(terminal.id)'s secret is shorter than 16 bytes: generate a longer one") }
        let saved = try await write { db in
            try db.execute(sql: """
                INSERT INTO terminals (id, merchant, secret, enabled, loads) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (id) DO \(replacing ? "UPDATE SET merchant = excluded.merchant, secret = excluded.secret, enabled = excluded.enabled, loads = excluded.loads" : "NOTHING")
                """, arguments: [Int64(terminal.id.rawValue), terminal.merchant, Data(terminal.secret), terminal.enabled, terminal.loads])
            return db.changesCount == 1
        }
        guard saved else { throw SettlementError(.conflict, "terminal \(terminal.id) is already registered: its secret is shown only once; register another id") }
    }

    public func changeTerminal(_ id: TerminalID, enabled: Bool?, loads: Bool?) async throws -> TerminalInfo? {
        try await write { db in
            try db.execute(sql: "UPDATE terminals SET enabled = coalesce(?, enabled), loads = coalesce(?, loads) WHERE id = ?",
                           arguments: [enabled, loads, Int64(id.rawValue)])
            return try Self.fetchTerminal(db, id)
        }
    }

    public func terminal(_ id: TerminalID) async throws -> TerminalInfo? {
        try await read { db in try Self.fetchTerminal(db, id) }
    }

    static func fetchTerminal(_ db: Database, _ id: TerminalID) throws -> TerminalInfo? {
        guard let row = try Row.fetchOne(db, sql: "SELECT merchant, secret, enabled, loads FROM terminals WHERE id = ?", arguments: [Int64(id.rawValue)]) else { return nil }
        let secret: Data = row["secret"]
        return TerminalInfo(id: id, merchant: row["merchant"], secret: Array(secret), enabled: row["enabled"], loads: row["loads"])
    }

    /// The stations among `terminals` (`TerminalInfo.loads`; one query per 500).
    static func loaders(_ db: Database, among terminals: [TerminalID]) throws -> Set<TerminalID> {
        var loaders = Set<TerminalID>()
        for start in stride(from: 0, to: terminals.count, by: 500) {
            let chunk = terminals[start..<min(start + 500, terminals.count)]
            for id in try Int64.fetchAll(db, sql: "SELECT id FROM terminals WHERE loads AND id IN (\(databaseQuestionMarks(count: chunk.count)))",
                                         arguments: StatementArguments(chunk.map { Int64($0.rawValue) })) {
                loaders.insert(TerminalID(UInt16(truncatingIfNeeded: id)))
            }
        }
        return loaders
    }

    public func rememberNonce(terminal: TerminalID, nonce: String, at date: Date) async throws -> Bool {
        let now = Self.seconds(date)
        return try await write { db in
            // Kept as long as a request stamped with it can pass the timestamp check (RequestSigning.nonceRetention).
            try db.execute(sql: "DELETE FROM nonces WHERE seen_at < ?", arguments: [now - RequestSigning.nonceRetention])
            try db.execute(sql: "INSERT OR IGNORE INTO nonces (terminal_id, nonce, seen_at) VALUES (?, ?, ?)",
                           arguments: [Int64(terminal.rawValue), nonce, now])
            return db.changesCount == 1
        }
    }

    // MARK: ingest

    public func ingest(_ records: [TerminalRecord], from terminal: TerminalID, at date: Date) async throws -> [RecordAck] {
        if let stranger = records.first(where: { $0.terminalID != terminal }) {
            throw SettlementError(.badRequest, "the batch from terminal \(terminal) holds a record of terminal \(stranger.terminalID) (sequence \(stranger.terminalSequence)): a terminal uploads only its own records; nothing was stored")
        }
        if let bad = records.first(where: { !Self.isUID($0.cardUID) }) {
            throw SettlementError(.badRequest, "record \(bad.terminalSequence) names card UID \"\(bad.cardUID)\", not 8–20 hex digits: nothing was stored; fix the terminal's journal")
        }
        guard !records.isEmpty else { return [] }
        let now = Self.seconds(date)
        return try await write { db in
            guard let info = try Self.fetchTerminal(db, terminal) else {
                throw SettlementError(.notFound, "terminal \(terminal) is not registered: register it before it uploads; nothing was stored")
            }
            guard info.enabled else {
                throw SettlementError(.unauthorized, "terminal \(terminal) is disabled: enable it at the card office before it uploads; nothing was stored")
            }
            return try IngestBatch(db: db, terminal: terminal, merchant: info.merchant, now: now).run(records)
        }
    }

    static func isUID(_ text: String) -> Bool {
        (8...20).contains(text.count) && text.count % 2 == 0 && text.allSatisfy(\.isHexDigit)
    }

    // MARK: accounts and cards

    public func openAccount(name: String, initialBalance: Fen, at date: Date) async throws -> Account {
        guard !name.isEmpty, name.count <= 200 else { throw SettlementError(.badRequest, "an account needs a name of 1–200 characters") }
        guard initialBalance >= .zero else { throw SettlementError(.badRequest, "an account cannot open with a negative balance (\(initialBalance))") }
        let now = Self.seconds(date)
        return try await write { db in
            try db.execute(sql: "INSERT INTO accounts (name, balance, created_at) VALUES (?, 0, ?)", arguments: [name, now])
            let id = db.lastInsertedRowID
            if initialBalance > .zero {
                try Self.post([Movement(from: Ledger.cash, to: Ledger.holderAccount(id), amount: initialBalance, kind: "account-open",
                                        terminalID: nil, terminalSequence: nil, day: Ledger.businessDay(of: date), cardSerial: nil,
                                        cardSide: .neither, merchant: nil)], db: db, at: now)
            }
            return Account(id: id, name: name, balance: initialBalance, createdAt: Self.date(now))
        }
    }

    public func account(_ id: Int64) async throws -> Account? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT id, name, balance, created_at FROM accounts WHERE id = ?", arguments: [id]).map {
                Account(id: $0["id"], name: $0["name"], balance: Fen(Int($0["balance"] as Int64)), createdAt: Self.date($0["created_at"]))
            }
        }
    }

    public func issueCard(serial: UInt32, uid: String, accountID: Int64, at date: Date) async throws -> Card {
        let uid = uid.uppercased()
        guard Self.isUID(uid) else { throw SettlementError(.badRequest, "\"\(uid)\" is not a card UID (8–20 hex digits)") }
        let now = Self.seconds(date)
        return try await write { db in
            guard try Int.fetchOne(db, sql: "SELECT 1 FROM accounts WHERE id = ?", arguments: [accountID]) != nil else {
                throw SettlementError(.notFound, "account \(accountID) does not exist: open it first")
            }
            if try Int.fetchOne(db, sql: "SELECT 1 FROM cards WHERE serial = ? OR uid = ?", arguments: [Int64(serial), uid]) != nil {
                throw SettlementError(.conflict, "card serial \(serial) or UID \(uid) is already issued: cancel the old card or use another")
            }
            try db.execute(sql: "INSERT INTO cards (serial, uid, account_id, status, issued_at) VALUES (?, ?, ?, 'active', ?)",
                           arguments: [Int64(serial), uid, accountID, now])
            // Records uploaded before the card was issued leave a book with a mirror: keep it.
            return try Self.fetchCard(db, whereSQL: "c.serial = ?", Int64(serial))!
        }
    }

    public func card(serial: UInt32) async throws -> Card? {
        try await read { db in try Self.fetchCard(db, whereSQL: "c.serial = ?", Int64(serial)) }
    }

    public func card(uid: String) async throws -> Card? {
        try await read { db in try Self.fetchCard(db, whereSQL: "c.uid = ?", uid.uppercased()) }
    }

    static let cardColumns = "c.serial, c.uid, c.account_id, c.status, c.issued_at, b.purse_mirror, b.purse_counter"

    /// The card of a row whose first columns are `cardColumns`, read by position (by name, GRDB compares lowercased
    /// names: a quarter of a batch's book loading).
    static func card(from row: Row) throws -> Card {
        let status: String = row[3]
        guard let cardStatus = CardStatus(rawValue: status) else { throw SettlementError(.storage, "a card has the unknown status \(status): the store was written by a newer version") }
        let mirror: Int64? = row[5]
        let counter: Int64? = row[6]
        return Card(serial: UInt32(row[0] as Int64), uid: row[1], accountID: row[2], status: cardStatus,
                    purseMirror: Fen(Int(mirror ?? 0)), purseCounter: counter.map { UInt16(truncatingIfNeeded: $0) },
                    issuedAt: date(row[4]))
    }

    static func fetchCard(_ db: Database, whereSQL: String, _ key: some DatabaseValueConvertible) throws -> Card? {
        try Row.fetchOne(db, sql: "SELECT \(cardColumns) FROM cards c LEFT JOIN card_books b ON b.uid = c.uid WHERE \(whereSQL)",
                         arguments: [key]).map(card(from:))
    }

    public func setCardStatus(serial: UInt32, to status: CardStatus, reason: String, at date: Date) async throws -> (Card, Int64) {
        guard !reason.isEmpty, reason.count <= 200 else { throw SettlementError(.badRequest, "a status change needs a reason of 1–200 characters") }
        let now = Self.seconds(date)
        let pair = try await write { db -> CardAndVersion in
            guard var card = try Self.fetchCard(db, whereSQL: "c.serial = ?", Int64(serial)) else {
                throw SettlementError(.notFound, "card \(serial) is not issued")
            }
            if card.status == status {
                // Idempotent: an admin's retry changes nothing.
                let version = try Int64.fetchOne(db, sql: "SELECT MAX(version) FROM blacklist WHERE serial = ?", arguments: [Int64(serial)]) ?? 0
                return CardAndVersion(card: card, version: version)
            }
            if card.status == .cancelled {
                throw SettlementError(.conflict, "card \(serial) is cancelled: a cancelled card stays cancelled; issue a new card")
            }
            try db.execute(sql: "UPDATE cards SET status = ? WHERE serial = ?", arguments: [status.rawValue, Int64(serial)])
            try db.execute(sql: "INSERT INTO blacklist (serial, uid, action, reason, changed_at) VALUES (?, ?, ?, ?, ?)",
                           arguments: [Int64(serial), card.uid, status.isBlacklisted ? "add" : "remove", "\(status.rawValue): \(reason)", now])
            card.status = status
            return CardAndVersion(card: card, version: db.lastInsertedRowID)
        }
        return (pair.card, pair.version)
    }

    struct CardAndVersion: Sendable {
        var card: Card
        var version: Int64
    }

    // MARK: feeds

    public func blacklist(after version: Int64, limit: Int) async throws -> BlacklistPage {
        guard (1...10_000).contains(limit) else { throw SettlementError(.badRequest, "a blacklist page holds 1–10000 changes, not \(limit)") }
        guard version >= 0 else { throw SettlementError(.badRequest, "blacklist versions start at 0, not \(version)") }
        return try await read { db in
            let rows = try Row.fetchAll(db, sql: "SELECT version, serial, uid, action, reason FROM blacklist WHERE version > ? ORDER BY version LIMIT ?",
                                        arguments: [version, limit + 1])
            let changes = try rows.prefix(limit).map { row -> BlacklistDelta in
                let action: String = row["action"]
                guard let parsed = BlacklistDelta.Action(rawValue: action) else { throw SettlementError(.storage, "a blacklist row has the unknown action \(action)") }
                return BlacklistDelta(version: row["version"], serial: UInt32(row["serial"] as Int64), uid: row["uid"], action: parsed, reason: row["reason"])
            }
            return BlacklistPage(changes: changes, version: changes.last?.version ?? version, more: rows.count > limit)
        }
    }

    public func parameters(for terminal: TerminalID) async throws -> TerminalParameters {
        try await read { db in
            let body = try String.fetchOne(db, sql: "SELECT body FROM parameters WHERE scope IN (0, ?) ORDER BY scope DESC LIMIT 1",
                                           arguments: [Int64(terminal.rawValue)])
            guard let body else { return TerminalParameters(version: 0) }
            do {
                return try JSONDecoder().decode(TerminalParameters.self, from: Data(body.utf8))
            } catch {
                throw SettlementError(.storage, "the stored parameters do not decode (\(error)): the store was written by a newer version")
            }
        }
    }

    public func setParameters(_ parameters: TerminalParameters, for terminal: TerminalID?) async throws -> TerminalParameters {
        guard parameters.maxOfflineDebit >= .zero, parameters.maxUnsentCount >= 0, parameters.maxUnsentTotal >= .zero,
              parameters.maxUnsentAge >= 0, parameters.maxBlacklistAge >= 0, parameters.waterUnitPrice >= .zero,
              parameters.waterWalletCap >= .zero, parameters.fixedPrices.values.allSatisfy({ $0 >= .zero }) else {
            throw SettlementError(.badRequest, "terminal parameters cannot be negative")
        }
        let scope = Int64(terminal?.rawValue ?? 0)
        return try await write { db in
            // Versions are one sequence over every scope: a terminal applies each version once.
            var stored = parameters
            stored.version = (try Int64.fetchOne(db, sql: "SELECT MAX(version) FROM parameters") ?? 0) + 1
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            let body = String(decoding: try encoder.encode(stored), as: UTF8.self)
            try db.execute(sql: "INSERT INTO parameters (scope, version, body) VALUES (?, ?, ?) ON CONFLICT (scope) DO UPDATE SET version = excluded.version, body = excluded.body",
                           arguments: [scope, stored.version, body])
            return stored
        }
    }

    // MARK: online load

    public func prepareLoad(reference: String, terminal: TerminalID, cardSerial: UInt32, amount: Fen, balanceBefore: Fen,
                            counterBefore: UInt16, at date: Date) async throws -> LoadState {
        guard (1...64).contains(reference.count) else { throw SettlementError(.badRequest, "a load reference has 1–64 characters") }
        guard amount > .zero else { throw SettlementError(.badRequest, "a load's amount must be positive, not \(amount)") }
        guard balanceBefore >= .zero, balanceBefore.rawValue + amount.rawValue <= Fen.cardMaximum.rawValue else {
            throw SettlementError(.badRequest, "the card's balance \(balanceBefore) plus \(amount) is not a balance a card can hold")
        }
        let now = Self.seconds(date)
        return try await write { db in
            if let existing = try Self.fetchLoad(db, reference) {
                guard existing.terminalID == terminal, existing.cardSerial == cardSerial, existing.amount == amount,
                      existing.balanceBefore == balanceBefore, existing.counterBefore == counterBefore else {
                    throw SettlementError(.conflict, "load \(reference) was prepared with other figures: use a new reference for a new load")
                }
                return existing
            }
            guard try Self.fetchTerminal(db, terminal) != nil else { throw SettlementError(.notFound, "terminal \(terminal) is not registered") }
            guard let card = try Self.fetchCard(db, whereSQL: "c.serial = ?", Int64(cardSerial)) else {
                throw SettlementError(.notFound, "card \(cardSerial) is not issued")
            }
            guard card.status == .active else { throw SettlementError(.conflict, "card \(cardSerial) is \(card.status.rawValue): no load; send the holder to the card office") }
            let balance = try Int64.fetchOne(db, sql: "SELECT balance FROM accounts WHERE id = ?", arguments: [card.accountID]) ?? 0
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM loads WHERE card_serial = ? AND counter_before = ? AND phase <> 'reversed'",
                                    arguments: [Int64(cardSerial), Int64(counterBefore)]) == nil else {
                throw SettlementError(.conflict, Ledger.anotherLoadAtCounter(cardSerial: cardSerial, counter: counterBefore))
            }
            guard Int(balance) >= amount.rawValue else {
                throw SettlementError(.conflict, "account \(card.accountID) holds \(Fen(Int(balance))), less than the load of \(amount): top the account up first")
            }
            try db.execute(sql: """
                INSERT INTO loads (reference, terminal_id, card_serial, account_id, amount, balance_before, counter_before, phase, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, 'prepared', ?)
                """, arguments: [reference, Int64(terminal.rawValue), Int64(cardSerial), card.accountID, amount.rawValue,
                                 balanceBefore.rawValue, Int64(counterBefore), now])
            try Self.post([Movement(from: Ledger.holderAccount(card.accountID), to: Ledger.pendingLoad, amount: amount, kind: "load-hold",
                                    terminalID: terminal, terminalSequence: nil, day: Ledger.businessDay(of: date), cardSerial: nil,
                                    cardSide: .neither, merchant: nil)], db: db, at: now)
            return try Self.fetchLoad(db, reference)!
        }
    }

    public func confirmLoad(reference: String, balanceAfter: Fen, counterAfter: UInt16, at date: Date) async throws -> LoadState {
        let now = Self.seconds(date)
        // A confirmation whose figures disagree is refused, but what it found is kept (the load disputed, a flag): the
        // closure returns the refusal instead of throwing it, so the transaction commits.
        let outcome = try await write { db -> LoadOutcome in
            guard let load = try Self.fetchLoad(db, reference), let row = try Row.fetchOne(db, sql: "SELECT account_id, balance_after, counter_after FROM loads WHERE reference = ?", arguments: [reference]) else {
                throw SettlementError(.notFound, "load \(reference) was never prepared")
            }
            let after: Int64? = row["balance_after"]
            let counter: Int64? = row["counter_after"]
            switch load.phase {
            case .reversed:
                throw SettlementError(.conflict, "load \(reference) was reversed: it cannot be confirmed; prepare a new load")
            case .disputed:
                throw SettlementError(.conflict, "load \(reference) is disputed (the card showed \(after.map { "\(Fen(Int($0)))" } ?? "?") at counter \(counter.map { "\($0)" } ?? "?"), not \(load.balanceBefore + load.amount)): an operator settles it; nothing more to do at the terminal")
            case .confirmed:
                guard after == Int64(balanceAfter.rawValue), counter == Int64(counterAfter) else {
                    throw SettlementError(.conflict, "load \(reference) was confirmed with other figures: check the card")
                }
                return .done(load)
            case .prepared:
                break
            }
            guard load.balanceBefore + load.amount == balanceAfter else {
                // Disputed once: the hold stays in pending-load, an operator is told (a retried confirmation finds the
                // load disputed and adds nothing).
                try Self.raise([Ledger.loadMismatchFlag(load, accountID: row["account_id"], balanceAfter: balanceAfter, counterAfter: counterAfter)],
                               db: db, at: now)
                try db.execute(sql: "UPDATE loads SET phase = 'disputed', balance_after = ?, counter_after = ?, updated_at = ? WHERE reference = ?",
                               arguments: [balanceAfter.rawValue, Int64(counterAfter), now, reference])
                return .refused(SettlementError(.conflict, "load \(reference): the card shows \(balanceAfter), not \(load.balanceBefore) + \(load.amount): the load is disputed and an operator was flagged; the hold stays until the card office settles it"))
            }
            _ = try Self.bookCarriedLoad(db, load, balanceAfter: balanceAfter, counterAfter: counterAfter, settled: false, date: date)
            return .done(try Self.fetchLoad(db, reference)!)
        }
        switch outcome {
        case let .done(load): return load
        case let .refused(error): throw error
        }
    }

    /// Books a load the card carries, showing `balanceAfter` at `counterAfter`: the card book's link, window and mirror,
    /// the hold out of `pending-load`, the phase `confirmed`. Returns the account the hold went to.
    static func bookCarriedLoad(_ db: Database, _ load: LoadState, balanceAfter: Fen, counterAfter: UInt16, settled: Bool,
                                date: Date) throws -> String {
        let reference = load.reference
        guard let card = try fetchCard(db, whereSQL: "c.serial = ?", Int64(load.cardSerial)) else {
            throw SettlementError(.storage, "load \(reference)'s card \(load.cardSerial) vanished from the store")
        }
        var books = try loadBooks(db, uids: [card.uid])
        var book = books[card.uid] ?? CardBook(uid: card.uid, card: card)
        let already = Ledger.confirmOnlineLoad(reference: reference, amount: load.amount, balanceAfter: balanceAfter,
                                               counterAfter: counterAfter, in: &book)
        books[card.uid] = book
        try saveBooks(db, books.values)
        // An uploaded purse-load record of this counter booked it already: take the hold to where that record took
        // the money from (suspense for the load's own record, cash for an office load), never to the purse. A
        // settlement also follows the load's own record booked from suspense at another counter (the dispute's).
        let source = already || settled ? try linkedSource(db, reference) : Ledger.cash
        let linked = already || (settled && source == Ledger.suspense)
        let to = linked ? source : Ledger.purseAccount(card.serial)
        let now = seconds(date)
        try post([Ledger.loadConfirmation(load, serial: card.serial, to: to, linked: linked, settled: settled, at: date)], db: db, at: now)
        try db.execute(sql: "UPDATE loads SET phase = 'confirmed', balance_after = ?, counter_after = ?, updated_at = ? WHERE reference = ?",
                       arguments: [balanceAfter.rawValue, Int64(counterAfter), now, reference])
        return to
    }

    public func settleDisputedLoad(reference: String, credited: Bool, reason: String, at date: Date) async throws -> LoadState {
        try await write { db in
            guard let load = try Self.fetchLoad(db, reference),
                  let row = try Row.fetchOne(db, sql: "SELECT account_id, balance_after, counter_after FROM loads WHERE reference = ?",
                                             arguments: [reference]) else {
                throw SettlementError(.notFound, "load \(reference) was never prepared: copy the reference from its load-mismatch flag")
            }
            if let refusal = Ledger.settlementRefusal(load, credited: credited) { throw refusal }
            guard load.phase == .disputed else { return load }
            let accountID: Int64 = row["account_id"]
            let to: String
            if credited {
                guard let after = row["balance_after"] as Int64?, let counter = row["counter_after"] as Int64? else {
                    throw SettlementError(.storage, "disputed load \(reference) has no figures of its confirmation")
                }
                to = try Self.bookCarriedLoad(db, load, balanceAfter: Fen(Int(after)), counterAfter: UInt16(truncatingIfNeeded: counter),
                                              settled: true, date: date)
            } else {
                if try Self.linkedSource(db, reference) == Ledger.suspense {
                    throw SettlementError(.conflict, Ledger.ownRecordCarriesLoad(load))
                }
                to = Ledger.holderAccount(accountID)
                try Self.post([Ledger.loadRelease(load, accountID: accountID, settled: true, at: date)], db: db, at: Self.seconds(date))
                try db.execute(sql: "UPDATE loads SET phase = 'reversed', updated_at = ? WHERE reference = ?",
                               arguments: [Self.seconds(date), reference])
            }
            try Self.raise([Ledger.loadSettledFlag(load, credited: credited, to: to, reason: reason)], db: db, at: Self.seconds(date))
            return try Self.fetchLoad(db, reference)!
        }
    }

    /// Where the uploaded record of the load `reference` took its money from: `suspense` when that record (the load's
    /// own, booked before the confirmation) was booked to suspense, else `cash` (an office load at the same counter).
    static func linkedSource(_ db: Database, _ reference: String) throws -> String {
        guard let key = OnlineLoadReference.record(named: reference),
              let row = try Row.fetchOne(db, sql: "SELECT booking, decided FROM records WHERE terminal_id = ? AND seq = ?",
                                         arguments: [Int64(key.terminal.rawValue), Int64(key.sequence)]) else { return Ledger.cash }
        let booking: String = row["booking"]
        let decided: String? = row["decided"]
        return booking == RecordAck.Booking.suspense.rawValue || decided?.hasPrefix(RecordAck.Booking.suspense.rawValue) == true
            ? Ledger.suspense : Ledger.cash
    }

    /// The phases of the loads `references` name (one query per 500).
    static func loadPhases(_ db: Database, _ references: [String]) throws -> OnlineLoadPhases {
        var phases: OnlineLoadPhases = [:]
        for start in stride(from: 0, to: references.count, by: 500) {
            let chunk = references[start..<min(start + 500, references.count)]
            for row in try Row.fetchAll(db, sql: "SELECT reference, phase FROM loads WHERE reference IN (\(databaseQuestionMarks(count: chunk.count)))",
                                        arguments: StatementArguments(chunk.map(\.databaseValue))) {
                let phase: String = row["phase"]
                guard let parsed = LoadState.Phase(rawValue: phase) else {
                    throw SettlementError(.storage, "load \(row["reference"] as String) has the unknown phase \(phase)")
                }
                phases[row["reference"]] = parsed
            }
        }
        return phases
    }

    public func loadReferences(among references: [String]) async throws -> Set<String> {
        guard !references.isEmpty else { return [] }
        return try await read { db in
            var found = Set<String>()
            for start in stride(from: 0, to: references.count, by: 500) {
                let chunk = references[start..<min(start + 500, references.count)]
                found.formUnion(try String.fetchAll(db, sql: "SELECT reference FROM loads WHERE reference IN (\(databaseQuestionMarks(count: chunk.count)))",
                                                    arguments: StatementArguments(chunk.map(\.databaseValue))))
            }
            return found
        }
    }

    public func reverseLoad(reference: String, at date: Date) async throws -> LoadState {
        let now = Self.seconds(date)
        return try await write { db in
            guard let load = try Self.fetchLoad(db, reference),
                  let accountID = try Int64.fetchOne(db, sql: "SELECT account_id FROM loads WHERE reference = ?", arguments: [reference]) else {
                throw SettlementError(.notFound, "load \(reference) was never prepared")
            }
            switch load.phase {
            case .confirmed: throw SettlementError(.conflict, "load \(reference) was confirmed: the card carries it; it cannot be reversed")
            case .disputed: throw SettlementError(.conflict, "load \(reference) is disputed (its confirmation showed other figures): an operator settles it; nothing more to do at the terminal")
            case .reversed: return load
            case .prepared: break
            }
            try Self.post([Ledger.loadRelease(load, accountID: accountID, settled: false, at: date)], db: db, at: now)
            try db.execute(sql: "UPDATE loads SET phase = 'reversed', updated_at = ? WHERE reference = ?", arguments: [now, reference])
            return try Self.fetchLoad(db, reference)!
        }
    }

    static func fetchLoad(_ db: Database, _ reference: String) throws -> LoadState? {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM loads WHERE reference = ?", arguments: [reference]) else { return nil }
        let phase: String = row["phase"]
        guard let parsed = LoadState.Phase(rawValue: phase) else { throw SettlementError(.storage, "load \(reference) has the unknown phase \(phase)") }
        return LoadState(reference: reference, terminalID: TerminalID(UInt16(truncatingIfNeeded: row["terminal_id"] as Int64)),
                         cardSerial: UInt32(row["card_serial"] as Int64), amount: Fen(Int(row["amount"] as Int64)),
                         balanceBefore: Fen(Int(row["balance_before"] as Int64)),
                         counterBefore: UInt16(truncatingIfNeeded: row["counter_before"] as Int64), phase: parsed,
                         updatedAt: date(row["updated_at"]))
    }

    // MARK: reports

    public func dailyTotals(day: String) async throws -> [DailyTotal] {
        try await read { db in
            let rows = try Row.fetchAll(db, sql: "SELECT merchant, terminal_id, count, total FROM daily_totals WHERE day = ? ORDER BY merchant, terminal_id",
                                        arguments: [day])
            var result: [DailyTotal] = []
            var merchantLine: DailyTotal?
            for row in rows {
                let merchant: String = row["merchant"]
                let line = DailyTotal(day: day, merchant: merchant, terminalID: TerminalID(UInt16(truncatingIfNeeded: row["terminal_id"] as Int64)),
                                      count: row["count"], total: Fen(Int(row["total"] as Int64)))
                if merchantLine?.merchant != merchant {
                    if let done = merchantLine { result.append(done) }
                    merchantLine = DailyTotal(day: day, merchant: merchant, terminalID: nil, count: 0, total: .zero)
                }
                merchantLine!.count += line.count
                merchantLine!.total += line.total
                result.append(line)
            }
            if let done = merchantLine { result.append(done) }
            // The merchant's line first, then its terminals.
            return result.sorted { ($0.merchant, $0.terminalID?.rawValue ?? 0) < ($1.merchant, $1.terminalID?.rawValue ?? 0) }
        }
    }

    public func statement(cardSerial: UInt32) async throws -> [LedgerEntry] {
        try await read { db in
            try Row.fetchAll(db, sql: """
                SELECT id AS movement_id, CASE WHEN card_side = 0 THEN debit ELSE credit END AS account,
                       CASE WHEN card_side = 0 THEN -amount ELSE amount END AS amount, kind, terminal_id, seq, booked_at
                FROM movements WHERE card_serial = ? ORDER BY id
                """, arguments: [Int64(cardSerial)]).map(Self.entry(from:))
        }
    }

    static func entry(from row: Row) -> LedgerEntry {
        let terminal: Int64? = row["terminal_id"]
        let sequence: Int64? = row["seq"]
        return LedgerEntry(movementID: row["movement_id"], account: row["account"], amount: Fen(Int(row["amount"] as Int64)), kind: row["kind"],
                           terminalID: terminal.map { TerminalID(UInt16(truncatingIfNeeded: $0)) },
                           terminalSequence: sequence.map { UInt32(truncatingIfNeeded: $0) }, bookedAt: date(row["booked_at"]))
    }

    public func flags(limit: Int) async throws -> [OperatorFlag] {
        guard (1...10_000).contains(limit) else { throw SettlementError(.badRequest, "a flag list holds 1–10000 flags, not \(limit)") }
        return try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM flags ORDER BY id DESC LIMIT ?", arguments: [limit]).map { row in
                let terminal: Int64? = row["terminal_id"]
                let sequence: Int64? = row["seq"]
                let serial: Int64? = row["card_serial"]
                return OperatorFlag(id: row["id"], code: row["code"], terminalID: terminal.map { TerminalID(UInt16(truncatingIfNeeded: $0)) },
                                    terminalSequence: sequence.map { UInt32(truncatingIfNeeded: $0) },
                                    cardSerial: serial.map { UInt32(truncatingIfNeeded: $0) }, message: row["message"],
                                    raisedAt: Self.date(row["raised_at"]))
            }
        }
    }

    public func ledgerImbalance() async throws -> Fen {
        try await read { db in Fen(Int(try Int64.fetchOne(db, sql: "SELECT COALESCE(SUM(amount), 0) FROM ledger") ?? 0)) }
    }

    public func rowCounts() async throws -> [String: Int] {
        try await read { db in
            var counts: [String: Int] = [:]
            for table in Schema.tables { counts[table] = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \(table)") ?? 0 }
            return counts
        }
    }

    // MARK: shared writing

    /// Loads the books of `uids` (with their issued cards): one cached query, the UIDs as one JSON array.
    static func loadBooks(_ db: Database, uids: some Collection<String>) throws -> [String: CardBook] {
        var books: [String: CardBook] = [:]
        guard !uids.isEmpty else { return books }
        books.reserveCapacity(uids.count)
        let statement = try db.cachedStatement(sql: """
            SELECT \(cardColumns), u.value, b.book
            FROM json_each(?) u LEFT JOIN cards c ON c.uid = u.value LEFT JOIN card_books b ON b.uid = u.value
            WHERE c.uid IS NOT NULL OR b.uid IS NOT NULL
            """)
        let rows = try Row.fetchCursor(statement, arguments: [jsonArray(of: uids)])
        while let row = try rows.next() {
            // No serial: a book of a UID never issued.
            let card = (row[0] as Int64?) == nil ? nil : try card(from: row)
            var book = CardBook(uid: row[7], card: card)
            if let blob = try row.withUnsafeData(atIndex: 8, { $0.map { [UInt8]($0) } }) {
                let wallets = try CardBookCoding.decode(blob)
                book.purse = wallets.purse
                book.water = wallets.water
            }
            books[book.uid] = book
        }
        return books
    }

    /// A JSON array of strings (for `json_each`): UIDs are hex, but any text is escaped as JSON requires.
    static func jsonArray(of texts: some Sequence<String>) -> String {
        var json = "["
        var first = true
        for text in texts {
            if !first { json += "," }
            first = false
            json += "\""
            if text.utf8.allSatisfy({ $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) {
                json += text
            } else {
                for scalar in text.unicodeScalars {
                    switch scalar {
                    case "\"": json += "\\\""
                    case "\\": json += "\\\\"
                    case _ where scalar.value < 0x20: json += String(format: "\\u%04x", scalar.value)
                    default: json.unicodeScalars.append(scalar)
                    }
                }
            }
            json += "\""
        }
        return json + "]"
    }

    /// Writes books back (multi-row upserts). An unknown UID's book keeps a zero mirror (it has no card).
    static func saveBooks(_ db: Database, _ books: some Collection<CardBook>) throws {
        var values: [DatabaseValue] = []
        values.reserveCapacity(books.count * 4)
        for book in books {
            values.append(book.uid.databaseValue)
            values.append(Int64(book.card?.purseMirror.rawValue ?? 0).databaseValue)
            values.append(book.card?.purseCounter.map { Int64($0).databaseValue } ?? .null)
            values.append(Data(CardBookCoding.encode(purse: book.purse, water: book.water)).databaseValue)
        }
        try BulkStatement.insert(db, "INSERT INTO card_books (uid, purse_mirror, purse_counter, book) VALUES ", columns: 4,
                                 tail: " ON CONFLICT (uid) DO UPDATE SET purse_mirror = excluded.purse_mirror, purse_counter = excluded.purse_counter, book = excluded.book",
                                 values: values)
    }

    /// Writes movements (one ledger row each: debit, credit, amount), the holders' account balances they move, and
    /// the daily totals.
    static func post(_ movements: [Movement], db: Database, at now: Double) throws {
        guard !movements.isEmpty else { return }
        var accountDeltas: [Int64: Int] = [:]
        var totals: [DailyKey: (count: Int, total: Int)] = [:]
        var values: [DatabaseValue] = []
        values.reserveCapacity(movements.count * 9)
        for movement in movements {
            values.append(movement.from.databaseValue)
            values.append(movement.to.databaseValue)
            values.append(Int64(movement.amount.rawValue).databaseValue)
            values.append(movement.kind.databaseValue)
            values.append(movement.terminalID.map { Int64($0.rawValue).databaseValue } ?? .null)
            values.append(movement.terminalSequence.map { Int64($0).databaseValue } ?? .null)
            values.append(now.databaseValue)
            let side: Int64? = switch movement.cardSide {
            case .from: 0
            case .to: 1
            case .neither: nil
            }
            values.append(side == nil ? .null : (movement.cardSerial.map { Int64($0).databaseValue } ?? .null))
            values.append(side.map(\.databaseValue) ?? .null)
            if let id = Ledger.holderAccountID(movement.from) { accountDeltas[id, default: 0] -= movement.amount.rawValue }
            if let id = Ledger.holderAccountID(movement.to) { accountDeltas[id, default: 0] += movement.amount.rawValue }
            if let merchant = movement.merchant, let terminal = movement.terminalID {
                let key = DailyKey(day: movement.day, merchant: merchant, terminal: terminal.rawValue)
                totals[key, default: (0, 0)].count += 1
                totals[key, default: (0, 0)].total += movement.amount.rawValue
            }
        }
        // The ids follow the highest (SQLite's rowid), in the movements' order.
        try BulkStatement.insert(db, "INSERT INTO movements (debit, credit, amount, kind, terminal_id, seq, booked_at, card_serial, card_side) VALUES ",
                                 columns: 9, values: values)
        let account = try db.cachedStatement(sql: "UPDATE accounts SET balance = balance + ? WHERE id = ?")
        for (id, delta) in accountDeltas where delta != 0 {
            try BulkStatement.execute(account, [Int64(delta).databaseValue, id.databaseValue])
        }
        if !totals.isEmpty {
            let upsert = try db.cachedStatement(sql: """
                INSERT INTO daily_totals (day, merchant, terminal_id, count, total) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (day, merchant, terminal_id) DO UPDATE SET count = count + excluded.count, total = total + excluded.total
                """)
            for (key, value) in totals {
                try BulkStatement.execute(upsert, [key.day.databaseValue, key.merchant.databaseValue, Int64(key.terminal).databaseValue,
                                                   value.count.databaseValue, Int64(value.total).databaseValue])
            }
        }
    }

    struct DailyKey: Hashable {
        var day: String
        var merchant: String
        var terminal: UInt16
    }

    static func raise(_ flags: [RaisedFlag], db: Database, at now: Double) throws {
        var values: [DatabaseValue] = []
        values.reserveCapacity(flags.count * 6)
        for flag in flags {
            values.append(flag.code.databaseValue)
            values.append(flag.terminalID.map { Int64($0.rawValue).databaseValue } ?? .null)
            values.append(flag.terminalSequence.map { Int64($0).databaseValue } ?? .null)
            values.append(flag.cardSerial.map { Int64($0).databaseValue } ?? .null)
            values.append(flag.message.databaseValue)
            values.append(now.databaseValue)
        }
        try BulkStatement.insert(db, "INSERT INTO flags (code, terminal_id, seq, card_serial, message, raised_at) VALUES ", columns: 6,
                                 values: values)
    }
}
