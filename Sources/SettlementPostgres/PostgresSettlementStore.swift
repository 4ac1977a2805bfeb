import CampusCard
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import SettlementCore

/// The settlement store on PostgreSQL, through postgres-nio's `PostgresClient` (a connection pool).
///
/// Lifecycle: the client's pool runs inside `run()` (a ServiceLifecycle `Service`: put the store in settlementd's
/// `ServiceGroup`; graceful shutdown or cancelling the task closes every connection), or scoped with
/// `withStore(url:logger:_:)`, which runs the pool, applies the migrations, calls the body and shuts the pool down
/// before it returns. `migrate()` must run once before the other methods (withStore does it). No thread of ours is left
/// behind: the pool's connections live on NIO's shared event loops, closed when `run()` returns.
///
/// Several instances (settlementd processes) may share one database: every method is one READ COMMITTED transaction;
/// ingest serialises per terminal (the terminal row, FOR UPDATE) and per card (the card's ledger state, FOR UPDATE, in
/// card-UID order, so two instances never deadlock), and the records' primary key decides a race for one key.
public final class PostgresSettlementStore: SettlementStore, Service {
    let client: PostgresClient
    let logger: Logger
    /// How long one request (each attempt of a transaction, or a read) may take, waiting for a connection included,
    /// before it fails as `unavailable`.
    let requestTimeout: Duration
    private let running = RunningPool()

    /// A store on `configuration`'s database. Nothing connects before `run()`.
    public init(configuration: PostgresClient.Configuration, requestTimeout: Duration = .seconds(30), logger: Logger) {
        // The pool logs every failed connection attempt at info, several a second while the server is down: keep
        // its warnings and errors; the store's own errors say what failed.
        var poolLogger = logger
        poolLogger.logLevel = max(logger.logLevel, .warning)
        client = PostgresClient(configuration: configuration, backgroundLogger: poolLogger)
        self.requestTimeout = requestTimeout
        self.logger = logger
    }

    /// A store on `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (TLS off: loopback or a private network; put a TLS
    /// tunnel or `sslmode` support in front for anything else). `maximumConnections` caps the pool.
    public convenience init(url: String, maximumConnections: Int = 20, requestTimeout: Duration = .seconds(30), logger: Logger) throws {
        var configuration = try Self.configuration(url: url)
        configuration.options.maximumConnections = maximumConnections
        self.init(configuration: configuration, requestTimeout: requestTimeout, logger: logger)
    }

    /// Parses a `postgres://` or `postgresql://` URL.
    public static func configuration(url: String) throws -> PostgresClient.Configuration {
        guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme ?? ""),
              let host = components.host, !host.isEmpty, let user = components.user, !user.isEmpty
        else {
            throw SettlementError(.badRequest, "not a PostgreSQL URL: expected postgres://USER:PASSWORD@HOST:PORT/DATABASE")
        }
        let database = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        return PostgresClient.Configuration(host: host, port: components.port ?? 5432, username: user,
                                            password: components.password?.removingPercentEncoding,
                                            database: database.isEmpty ? nil : database, tls: .disable)
    }

    /// Runs the connection pool until the task is cancelled or a graceful shutdown is triggered.
    public func run() async {
        await client.run()
    }

    /// Creates or updates the schema (idempotent; safe with several instances starting at once).
    public func migrate() async throws {
        do {
            // Under the request deadline: an unreachable server is a typed `unavailable`, not a start that hangs
            // while the pool retries its connection for ever.
            try await withDeadline(requestTimeout, "migrate") { [client, logger] in try await Migrations.apply(on: client, logger: logger) }
        } catch {
            throw PostgresFailure.map(error, "migrate")
        }
    }

    /// Starts the pool in a task of its own and applies the migrations: for owners that cannot nest the store's life
    /// in a scope (a test backend, a tool). Pair with `shutdown()`; `run()` and `start()` are alternatives.
    public func start() async throws {
        running.start { [client] in await client.run() }
        do {
            try await migrate()
        } catch {
            await running.stop()
            throw error
        }
    }

    /// Closes every connection and waits until the pool's task ended (after `start()`; a no-op otherwise).
    public func shutdown() async {
        await running.stop()
    }

    /// Runs a store on `url` for the duration of `body`: the pool, the migrations, then the body; the pool is shut
    /// down (every connection closed) before this returns, also when the body throws.
    public static func withStore<Result: Sendable>(url: String, maximumConnections: Int = 20, requestTimeout: Duration = .seconds(30),
                                                   logger: Logger,
                                                   _ body: (PostgresSettlementStore) async throws -> Result) async throws -> Result {
        let store = try PostgresSettlementStore(url: url, maximumConnections: maximumConnections, requestTimeout: requestTimeout, logger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await store.run() }
            do {
                try await store.migrate()
                let result = try await body(store)
                group.cancelAll()
                try await group.waitForAll()
                return result
            } catch {
                group.cancelAll()
                try? await group.waitForAll()
                throw error
            }
        }
    }

    // MARK: transactions

    /// One READ COMMITTED transaction (the server's default), run again when it lost a race (serialization failure,
    /// deadlock, a key taken between check and insert); errors come out as `SettlementError`.
    func transaction<Result: Sendable>(_ what: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> Result) async throws -> Result {
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await withDeadline(requestTimeout, what) { [client, logger] in
                    try await client.withTransaction(logger: logger) { connection in
                        try await body(connection)
                    }
                }
            } catch {
                if PostgresFailure.isRetryable(error), attempt < 5 {
                    logger.debug("transaction retried", metadata: ["store.operation": "\(what)", "store.attempt": "\(attempt)"])
                    continue
                }
                throw PostgresFailure.map(error, what)
            }
        }
    }

    /// A single statement outside an explicit transaction, with errors mapped.
    func read<Result: Sendable>(_ what: String, _ body: @escaping @Sendable (PostgresClient) async throws -> Result) async throws -> Result {
        do {
            return try await withDeadline(requestTimeout, what) { [client] in try await body(client) }
        } catch {
            throw PostgresFailure.map(error, what)
        }
    }

    // MARK: terminals

    public func putTerminal(_ terminal: TerminalInfo) async throws { try await saveTerminal(terminal, replacing: true) }

    public func addTerminal(_ terminal: TerminalInfo) async throws { try await saveTerminal(terminal, replacing: false) }

    private func saveTerminal(_ terminal: TerminalInfo, replacing: Bool) async throws {
        guard terminal.id != .none else { throw SettlementError(.badRequest, "terminal id 0 is not a terminal: use 1–65535") }
        guard !terminal.merchant.isEmpty else {
            throw SettlementError(.badRequest, "terminal \(terminal.id) has no merchant: name who its sales are booked to")
        }
        guard terminal.secret.count >= 16 else {
            throw SettlementError(.badRequest, "terminal \(terminal.id)'s secret is shorter than 16 bytes: generate a longer one")
        }
        let saved = try await transaction("put terminal") { connection -> Bool in
            let rows = try await connection.query("""
                INSERT INTO terminals (id, merchant, secret, enabled, loads)
                VALUES (\(Int64(terminal.id.rawValue)), \(terminal.merchant), \(Self.bytes(terminal.secret)), \(terminal.enabled), \(terminal.loads))
                ON CONFLICT (id) DO \(unescaped: replacing ? "UPDATE SET merchant = excluded.merchant, secret = excluded.secret, enabled = excluded.enabled, loads = excluded.loads" : "NOTHING")
                RETURNING id
                """, logger: self.logger)
            var saved = false
            for try await _ in rows { saved = true }
            return saved
        }
        guard saved else { throw SettlementError(.conflict, "terminal \(terminal.id) is already registered: its secret is shown only once; register another id") }
    }

    public func changeTerminal(_ id: TerminalID, enabled: Bool?, loads: Bool?) async throws -> TerminalInfo? {
        try await transaction("change terminal") { connection -> TerminalInfo? in
            let rows = try await connection.query("""
                UPDATE terminals SET enabled = coalesce(\(enabled), enabled), loads = coalesce(\(loads), loads)
                WHERE id = \(Int64(id.rawValue)) RETURNING merchant, secret, enabled, loads
                """, logger: self.logger)
            for try await (merchant, secret, enabled, loads) in rows.decode((String, ByteBuffer, Bool, Bool).self) {
                return TerminalInfo(id: id, merchant: merchant, secret: Array(buffer: secret), enabled: enabled, loads: loads)
            }
            return nil
        }
    }

    public func terminal(_ id: TerminalID) async throws -> TerminalInfo? {
        try await read("terminal") { client in
            let rows = try await client.query(
                "SELECT merchant, secret, enabled, loads FROM terminals WHERE id = \(Int64(id.rawValue))", logger: self.logger)
            for try await (merchant, secret, enabled, loads) in rows.decode((String, ByteBuffer, Bool, Bool).self) {
                return TerminalInfo(id: id, merchant: merchant, secret: Array(buffer: secret), enabled: enabled, loads: loads)
            }
            return nil
        }
    }

    /// Nonces are kept twice the signing window: a replay older than that fails the timestamp check anyway.
    static let nonceRetention = RequestSigning.nonceRetention

    public func rememberNonce(terminal: TerminalID, nonce: String, at date: Date) async throws -> Bool {
        try await transaction("remember nonce") { connection in
            try await connection.query(
                "DELETE FROM nonces WHERE seen_at < \(date.addingTimeInterval(-Self.nonceRetention))", logger: self.logger)
            let rows = try await connection.query("""
                INSERT INTO nonces (terminal_id, nonce, seen_at) VALUES (\(Int64(terminal.rawValue)), \(nonce), \(date))
                ON CONFLICT DO NOTHING RETURNING 1
                """, logger: self.logger)
            var inserted = false
            for try await _ in rows { inserted = true }
            return inserted
        }
    }

    // MARK: accounts and cards

    public func openAccount(name: String, initialBalance: Fen, at date: Date) async throws -> Account {
        guard !name.isEmpty, name.count <= 200 else { throw SettlementError(.badRequest, "an account needs a name of 1–200 characters") }
        guard initialBalance >= .zero else {
            throw SettlementError(.badRequest, "an account cannot open with a negative balance (\(initialBalance))")
        }
        return try await transaction("open account") { connection in
            let rows = try await connection.query("""
                INSERT INTO accounts (name, balance, created_at) VALUES (\(name), 0, \(date))
                RETURNING id
                """, logger: self.logger)
            var id: Int64 = 0
            for try await (value) in rows.decode(Int64.self) { id = value }
            if initialBalance.rawValue > 0 {
                // The opening deposit: cash in at the office.
                try await Self.post([Movement(from: Ledger.cash, to: Ledger.holderAccount(id), amount: initialBalance,
                                              kind: "account-open", terminalID: nil, terminalSequence: nil,
                                              day: Ledger.businessDay(of: date), cardSerial: nil, cardSide: .neither, merchant: nil)],
                                    on: connection, logger: self.logger, at: date)
            }
            return Account(id: id, name: name, balance: initialBalance, createdAt: date)
        }
    }

    public func account(_ id: Int64) async throws -> Account? {
        try await read("account") { client in
            let rows = try await client.query("SELECT name, balance, created_at FROM accounts WHERE id = \(id)", logger: self.logger)
            for try await (name, balance, created) in rows.decode((String, Int64, Date).self) {
                return Account(id: id, name: name, balance: Fen(Int(balance)), createdAt: created)
            }
            return nil
        }
    }

    public func issueCard(serial: UInt32, uid: String, accountID: Int64, at date: Date) async throws -> Card {
        let uid = uid.uppercased()
        guard Self.isUID(uid) else { throw SettlementError(.badRequest, "\"\(uid)\" is not a card UID (8–20 hex digits)") }
        return try await transaction("issue card") { connection in
            guard try await Self.exists("SELECT 1 FROM accounts WHERE id = \(accountID)", on: connection, logger: self.logger) else {
                throw SettlementError(.notFound, "account \(accountID) does not exist: open it first")
            }
            let rows = try await connection.query("""
                INSERT INTO cards (serial, uid, account_id, status, issued_at)
                VALUES (\(Int64(serial)), \(uid), \(accountID), 'active', \(date))
                ON CONFLICT DO NOTHING RETURNING 1
                """, logger: self.logger)
            var inserted = false
            for try await _ in rows { inserted = true }
            guard inserted else {
                throw SettlementError(.conflict, "card serial \(serial) or UID \(uid) is already issued: cancel the old card or use another")
            }
            // Records uploaded before the card was issued leave a book with a mirror: keep it.
            guard let card = try await Self.card(on: connection.query("""
                SELECT \(unescaped: Self.cardColumns) FROM cards c LEFT JOIN card_books b ON b.uid = c.uid
                WHERE c.serial = \(Int64(serial))
                """, logger: self.logger))
            else { throw SettlementError(.storage, "card \(serial) vanished right after it was issued") }
            return card
        }
    }

    /// A card with its purse mirror (kept in its book, by UID), in `card(on:)`'s order.
    static let cardColumns = "c.serial, c.uid, c.account_id, c.status, coalesce(b.purse_mirror, 0), b.purse_counter, c.issued_at"

    public func card(serial: UInt32) async throws -> Card? {
        try await read("card") { client in
            try await Self.card(on: client.query("""
                SELECT \(unescaped: Self.cardColumns) FROM cards c LEFT JOIN card_books b ON b.uid = c.uid
                WHERE c.serial = \(Int64(serial))
                """, logger: self.logger))
        }
    }

    public func card(uid: String) async throws -> Card? {
        try await read("card") { client in
            try await Self.card(on: client.query("""
                SELECT \(unescaped: Self.cardColumns) FROM cards c LEFT JOIN card_books b ON b.uid = c.uid
                WHERE c.uid = \(uid.uppercased())
                """, logger: self.logger))
        }
    }

    static func card(on rows: PostgresRowSequence) async throws -> Card? {
        for try await (serial, uid, account, status, mirror, counter, issued)
            in rows.decode((Int64, String, Int64, String, Int64, Int64?, Date).self) {
            guard let status = CardStatus(rawValue: status) else {
                throw SettlementError(.storage, "card \(serial) has the unknown status \(status): the store was written by a newer version")
            }
            return Card(serial: UInt32(truncatingIfNeeded: serial), uid: uid, accountID: account,
                        status: status, purseMirror: Fen(Int(mirror)),
                        purseCounter: counter.map { UInt16(truncatingIfNeeded: $0) }, issuedAt: issued)
        }
        return nil
    }

    public func setCardStatus(serial: UInt32, to status: CardStatus, reason: String, at date: Date) async throws -> (Card, Int64) {
        guard !reason.isEmpty, reason.count <= 200 else {
            throw SettlementError(.badRequest, "a status change needs a reason of 1–200 characters")
        }
        let result = try await transaction("set card status") { connection -> CardAndVersion in
            guard var card = try await Self.card(on: connection.query("""
                SELECT \(unescaped: Self.cardColumns) FROM cards c LEFT JOIN card_books b ON b.uid = c.uid
                WHERE c.serial = \(Int64(serial)) FOR UPDATE OF c
                """, logger: self.logger))
            else {
                throw SettlementError(.notFound, "card \(serial) is not issued")
            }
            if card.status == status {
                // Idempotent: an admin's retry changes nothing.
                let rows = try await connection.query(
                    "SELECT coalesce(max(version), 0) FROM blacklist WHERE serial = \(Int64(serial))", logger: self.logger)
                var version: Int64 = 0
                for try await value in rows.decode(Int64.self) { version = value }
                return CardAndVersion(card: card, version: version)
            }
            if card.status == .cancelled {
                throw SettlementError(.conflict, "card \(serial) is cancelled: a cancelled card stays cancelled; issue a new card")
            }
            try await connection.query(
                "UPDATE cards SET status = \(status.rawValue) WHERE serial = \(Int64(serial))", logger: self.logger)
            let action = status.isBlacklisted ? BlacklistDelta.Action.add : .remove
            let rows = try await connection.query("""
                INSERT INTO blacklist (serial, uid, action, reason, changed_at)
                VALUES (\(Int64(serial)), \(card.uid), \(action.rawValue), \("\(status.rawValue): \(reason)"), \(date))
                RETURNING version
                """, logger: self.logger)
            var version: Int64 = 0
            for try await value in rows.decode(Int64.self) { version = value }
            card.status = status
            return CardAndVersion(card: card, version: version)
        }
        return (result.card, result.version)
    }

    struct CardAndVersion: Sendable {
        var card: Card
        var version: Int64
    }

    // MARK: feeds

    public func blacklist(after version: Int64, limit: Int) async throws -> BlacklistPage {
        guard (1...10_000).contains(limit) else {
            throw SettlementError(.badRequest, "a blacklist page holds 1–10000 changes, not \(limit)")
        }
        guard version >= 0 else { throw SettlementError(.badRequest, "blacklist versions start at 0, not \(version)") }
        return try await read("blacklist") { client in
            let rows = try await client.query("""
                SELECT version, serial, uid, action, reason FROM blacklist WHERE version > \(version)
                ORDER BY version LIMIT \(Int64(limit + 1))
                """, logger: self.logger)
            var changes: [BlacklistDelta] = []
            for try await (version, serial, uid, action, reason) in rows.decode((Int64, Int64, String, String, String).self) {
                guard let parsed = BlacklistDelta.Action(rawValue: action) else {
                    throw SettlementError(.storage, "a blacklist row has the unknown action \(action)")
                }
                changes.append(BlacklistDelta(version: version, serial: UInt32(truncatingIfNeeded: serial), uid: uid,
                                              action: parsed, reason: reason))
            }
            let more = changes.count > limit
            if more { changes.removeLast() }
            return BlacklistPage(changes: changes, version: changes.last?.version ?? version, more: more)
        }
    }

    public func parameters(for terminal: TerminalID) async throws -> TerminalParameters {
        try await read("parameters") { client in
            let rows = try await client.query("""
                SELECT body::text FROM parameters WHERE scope IN (0, \(Int64(terminal.rawValue))) ORDER BY scope DESC LIMIT 1
                """, logger: self.logger)
            for try await body in rows.decode(String.self) {
                do {
                    return try JSONDecoder().decode(TerminalParameters.self, from: Data(body.utf8))
                } catch {
                    throw SettlementError(.storage, "the stored parameters do not decode (\(error)): the store was written by a newer version")
                }
            }
            return TerminalParameters(version: 0)
        }
    }

    public func setParameters(_ parameters: TerminalParameters, for terminal: TerminalID?) async throws -> TerminalParameters {
        guard parameters.maxOfflineDebit >= .zero, parameters.maxUnsentCount >= 0, parameters.maxUnsentTotal >= .zero,
              parameters.maxUnsentAge >= 0, parameters.maxBlacklistAge >= 0, parameters.waterUnitPrice >= .zero,
              parameters.waterWalletCap >= .zero, parameters.fixedPrices.values.allSatisfy({ $0 >= .zero })
        else {
            throw SettlementError(.badRequest, "terminal parameters cannot be negative")
        }
        return try await transaction("set parameters") { connection in
            let scope = Int64(terminal?.rawValue ?? 0)
            // Versions grow over every scope, so a terminal moving from the default to its own row sees a new
            // version; the lock keeps two concurrent changes from taking the same one.
            try await connection.query("LOCK TABLE parameters IN SHARE ROW EXCLUSIVE MODE", logger: self.logger)
            var version: Int64 = 0
            let locked = try await connection.query("SELECT coalesce(max(version), 0) FROM parameters", logger: self.logger)
            for try await value in locked.decode(Int64.self) { version = value }
            var stored = parameters
            stored.version = version + 1
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            let body = String(decoding: try encoder.encode(stored), as: UTF8.self)
            try await connection.query("""
                INSERT INTO parameters (scope, version, body) VALUES (\(scope), \(stored.version), \(body)::jsonb)
                ON CONFLICT (scope) DO UPDATE SET version = excluded.version, body = excluded.body
                """, logger: self.logger)
            return stored
        }
    }

    // MARK: reports

    public func dailyTotals(day: String) async throws -> [DailyTotal] {
        try await read("daily totals") { client in
            let rows = try await client.query("""
                SELECT merchant, terminal_id, count(*), sum(amount)::bigint FROM movements
                WHERE day = \(day) AND merchant IS NOT NULL
                GROUP BY GROUPING SETS ((merchant), (merchant, terminal_id))
                ORDER BY merchant, terminal_id NULLS FIRST
                """, logger: self.logger)
            var totals: [DailyTotal] = []
            for try await (merchant, terminal, count, total) in rows.decode((String, Int64?, Int64, Int64).self) {
                totals.append(DailyTotal(day: day, merchant: merchant,
                                         terminalID: terminal.map { TerminalID(UInt16(truncatingIfNeeded: $0)) },
                                         count: Int(count), total: Fen(Int(total))))
            }
            return totals
        }
    }

    public func statement(cardSerial: UInt32) async throws -> [LedgerEntry] {
        try await read("statement") { client in
            let rows = try await client.query("""
                SELECT id, CASE WHEN card_side = 0 THEN debit ELSE credit END,
                       CASE WHEN card_side = 0 THEN -amount ELSE amount END, kind, terminal_id, seq, booked_at
                FROM movements WHERE card_serial = \(Int64(cardSerial)) ORDER BY id
                """, logger: self.logger)
            var entries: [LedgerEntry] = []
            for try await (movement, account, amount, kind, terminal, sequence, booked)
                in rows.decode((Int64, String, Int64, String, Int64?, Int64?, Date).self) {
                entries.append(LedgerEntry(movementID: movement, account: account, amount: Fen(Int(amount)), kind: kind,
                                           terminalID: terminal.map { TerminalID(UInt16(truncatingIfNeeded: $0)) },
                                           terminalSequence: sequence.map { UInt32(truncatingIfNeeded: $0) }, bookedAt: booked))
            }
            return entries
        }
    }

    public func flags(limit: Int) async throws -> [OperatorFlag] {
        guard (1...10_000).contains(limit) else {
            throw SettlementError(.badRequest, "a flag list holds 1–10000 flags, not \(limit)")
        }
        return try await read("flags") { client in
            let rows = try await client.query("""
                SELECT id, code, terminal_id, seq, card_serial, message, raised_at FROM flags ORDER BY id DESC
                LIMIT \(Int64(limit))
                """, logger: self.logger)
            var flags: [OperatorFlag] = []
            for try await (id, code, terminal, sequence, serial, message, raised)
                in rows.decode((Int64, String, Int64?, Int64?, Int64?, String, Date).self) {
                flags.append(OperatorFlag(id: id, code: code,
                                          terminalID: terminal.map { TerminalID(UInt16(truncatingIfNeeded: $0)) },
                                          terminalSequence: sequence.map { UInt32(truncatingIfNeeded: $0) },
                                          cardSerial: serial.map { UInt32(truncatingIfNeeded: $0) }, message: message,
                                          raisedAt: raised))
            }
            return flags
        }
    }

    public func ledgerImbalance() async throws -> Fen {
        try await read("ledger imbalance") { client in
            let rows = try await client.query("SELECT coalesce(sum(amount), 0)::bigint FROM ledger", logger: self.logger)
            for try await total in rows.decode(Int64.self) { return Fen(Int(total)) }
            return 0
        }
    }

    /// Rows per table: a check that a refused call wrote nothing.
    public func rowCounts() async throws -> [String: Int] {
        try await read("row counts") { client in
            var counts: [String: Int] = [:]
            for table in Migrations.tables {
                let rows = try await client.query(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(table)"), logger: self.logger)
                for try await count in rows.decode(Int64.self) { counts[table] = Int(count) }
            }
            return counts
        }
    }

    static func bytes(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }
}

/// The pool's task when the store was started with `start()`.
private final class RunningPool: @unchecked Sendable {
    private let lock = NSLock()
    private var task: Task<Void, Never>?

    func start(_ body: @escaping @Sendable () async -> Void) {
        lock.withLock {
            precondition(task == nil, "PostgresSettlementStore.start() called twice")
            task = Task(operation: body)
        }
    }

    func stop() async {
        let task = lock.withLock { () -> Task<Void, Never>? in
            defer { self.task = nil }
            return self.task
        }
        task?.cancel()
        await task?.value
    }
}
