import CampusCard
import Foundation
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import SettlementCore

/// settlementd's HTTP application over any `SettlementStore` (docs/settlement-api.yaml): the same code runs in
/// settlementd and in the tests.
public struct SettlementServer: Sendable {
    public let store: any SettlementStore
    public let admins: AdminCredentials
    /// The service's clock (tests move it).
    public let now: @Sendable () -> Date
    public let limits: ServerLimits
    /// The bytes of the request bodies held now (`ServerLimits.bodyBudget`) and the connections open.
    let bodies: BodyBudget
    let connections: SharedCount
    let refusingConnections = NIOLockedValueBox(false)

    public init(store: any SettlementStore, admins: AdminCredentials, limits: ServerLimits = .init(),
                now: @escaping @Sendable () -> Date = { Date() }) {
        self.store = store
        self.admins = admins
        self.now = now
        self.limits = limits
        bodies = BodyBudget(limit: limits.bodyBudget, perCaller: limits.bodyBudgetPerCaller)
        connections = SharedCount(limit: limits.maxConnections)
    }

    /// The router: error middleware outermost, then the method check, the body cap and request signing, then the
    /// routes.
    public func router() -> Router<SettlementRequestContext> {
        // A first router only to read the route table back: a known path asked with a method it does not serve is a
        // 405 naming the methods it does (RFC 9110 §15.5.6), before any signature is checked.
        let table = Router(context: SettlementRequestContext.self)
        addRoutes(to: table)
        let router = Router(context: SettlementRequestContext.self)
        router.add(middleware: ErrorMiddleware())
        router.add(middleware: MethodMiddleware(routes: table.routes.map { ($0.method, $0.path.description) }))
        router.add(middleware: SigningMiddleware(store: store, admins: admins, bodies: bodies, bodyDeadline: limits.bodyDeadline, now: now))
        addRoutes(to: router)
        return router
    }

    private func addRoutes(to router: Router<SettlementRequestContext>) {
        let v1 = router.group("v1")
        v1.get("time") { _, _ in jsonResponse(WireTime(unixTime: unixSeconds(now()), signingWindow: RequestSigning.window)) }
        v1.post("transactions") { _, context in try await upload(context) }
        v1.get("blacklist") { request, _ in try await blacklist(request) }
        v1.get("parameters") { _, context in jsonResponse(WireParameters(try await store.parameters(for: try context.terminal))) }
        v1.post("loads") { _, context in try await prepareLoad(context) }
        v1.post("loads/:reference/confirm") { _, context in try await confirmLoad(context) }
        v1.post("loads/:reference/reverse") { _, context in try await reverseLoad(context) }

        let admin = v1.group("admin")
        admin.post("accounts") { _, context in try await openAccount(context) }
        admin.get("accounts/:id") { _, context in try await showAccount(context) }
        admin.post("cards") { _, context in try await issueCard(context) }
        admin.get("cards/:serial") { _, context in jsonResponse(WireCard(try await existingCard(context))) }
        for (action, status) in [("lost", CardStatus.lost), ("found", .active), ("freeze", .frozen), ("cancel", .cancelled)] {
            admin.post("cards/:serial/\(action)") { _, context in try await changeStatus(context, to: status, action: action) }
        }
        admin.post("loads/:reference/settle") { _, context in try await settleLoad(context) }
        admin.post("terminals") { _, context in try await registerTerminal(context) }
        admin.get("terminals/:id") { _, context in jsonResponse(WireTerminal(try await existingTerminal(context))) }
        admin.post("terminals/:id/disable") { _, context in try await changeTerminal(context, enabled: false) }
        admin.post("terminals/:id/enable") { _, context in try await changeTerminal(context, enabled: true) }
        admin.post("terminals/:id/allow-loads") { _, context in try await changeTerminal(context, loads: true) }
        admin.post("terminals/:id/deny-loads") { _, context in try await changeTerminal(context, loads: false) }
        admin.get("reports/daily") { request, _ in try await dailyReport(request) }
        admin.get("reports/cards/:serial/statement") { _, context in try await statement(context) }
        admin.get("reports/flags") { request, _ in try await flags(request) }
    }

    /// An application listening on `host:port` (port 0: an ephemeral port, reported through `onServerRunning`).
    /// `services` run beside the server (e.g. a database client's pool) and shut down with it; `prepare` runs once
    /// they started, before the server accepts requests (e.g. migrations).
    public func application(host: String, port: Int, logger: Logger, services: [any Service] = [],
                            prepare: (@Sendable () async throws -> Void)? = nil,
                            onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        var app = Application(
            router: router(),
            server: .http1(configuration: .init(
                additionalChannelHandlers: [ConnectionCap(open: connections, full: refusingConnections, logger: logger)],
                idleTimeout: limits.idleTimeout)),
            configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: "settlementd"),
            services: services,
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? port) },
            logger: logger
        )
        if let prepare { app.beforeServerStarts(perform: prepare) }
        return app
    }

    // MARK: terminal endpoints

    private func upload(_ context: SettlementRequestContext) async throws -> Response {
        let terminal = try context.terminal
        let records = try WireUpload.decode(context.body).records(from: terminal)
        try await settleOnlineLoads(records, terminal)
        let acks = try await store.ingest(records, from: terminal, at: now())
        guard acks.count == records.count else {
            throw APIError(.internalServerError, code: "storage", "the store acknowledged \(acks.count) of \(records.count) records: resend the batch")
        }
        return jsonResponse(bytes: WireUploadResponse(acks: acks.map(WireAck.init), serverTime: unixSeconds(now())).json)
    }

    /// A load station's purse-load record settles its online load when the station's own confirmation (or reversal)
    /// was lost: done confirms it, not done reverses it (both idempotent), before the record is ingested (the
    /// confirmed load's counter link then books the record as the same money, once). A record of no online load
    /// (an office load) finds none and is booked as it is. A confirmation refused (the figures disagree: the load is
    /// disputed and flagged) leaves the record to the ledger, which books a record of an unconfirmed load from
    /// suspense, never from cash.
    private func settleOnlineLoads(_ records: [TerminalRecord], _ terminal: TerminalID) async throws {
        let loads = records.filter { $0.kind == .purseLoad && $0.outcome != .undetermined }
        guard !loads.isEmpty else { return }
        func loadReference(_ record: TerminalRecord) -> String {
            OnlineLoadReference.named(terminal: terminal, sequence: record.terminalSequence)
        }
        // Office loads are purse loads too: only those prepared online have anything to settle.
        let online = try await store.loadReferences(among: loads.map(loadReference))
        for record in loads where online.contains(loadReference(record)) {
            let reference = loadReference(record)
            do {
                switch record.outcome {
                case .done:
                    guard let balance = record.balanceAfter, let counter = record.counterAfter else { continue }
                    _ = try await store.confirmLoad(reference: reference, balanceAfter: balance, counterAfter: counter, at: now())
                case .notDone:
                    _ = try await store.reverseLoad(reference: reference, at: now())
                case .undetermined:
                    continue
                }
            } catch let error as SettlementError where error.code == .notFound || error.code == .conflict {
                continue
            }
        }
    }

    private func blacklist(_ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        let after = try query.get("after").map { try Check.integer(String($0), "after", 0...Check.maxSafeInteger) } ?? 0
        let limit = try query.get("limit").map { try Check.integer(String($0), "limit", 1...Int64(SettlementLimits.maxPageSize)) } ?? 500
        return jsonResponse(WireBlacklistPage(try await store.blacklist(after: after, limit: Int(limit))))
    }

    /// Load references are the terminal's own: the store keeps them under the terminal's id, so one terminal can
    /// neither see nor settle another's load.
    private func storeReference(_ reference: String, _ terminal: TerminalID) -> String { OnlineLoadReference.stored(reference, terminal: terminal) }

    private func pathReference(_ context: SettlementRequestContext) throws -> String {
        try Check.loadReference(context.parameters.get("reference") ?? "", "reference")
    }

    private func prepareLoad(_ context: SettlementRequestContext) async throws -> Response {
        let terminal = try context.terminal
        guard context.isLoadStation else {
            throw APIError.forbidden("terminal \(terminal) is no station: online loads are prepared only at a station; the card office makes it one (cardctl office terminal \(terminal) --allow-loads)")
        }
        let wire = try decodeBody(WireLoadPrepare.self, from: context.body)
        let reference = try Check.loadReference(wire.reference, "reference")
        let load = try await store.prepareLoad(
            reference: storeReference(reference, terminal), terminal: terminal,
            cardSerial: try Check.uint32(wire.cardSerial, "cardSerial", minimum: 1), amount: try Check.amount(wire.amount, "amount"),
            balanceBefore: try Check.balance(wire.balanceBefore, "balanceBefore"),
            counterBefore: try Check.counter(wire.counterBefore, "counterBefore"), at: now())
        return jsonResponse(WireLoad(load, reference: reference))
    }

    private func confirmLoad(_ context: SettlementRequestContext) async throws -> Response {
        let terminal = try context.terminal
        let reference = try pathReference(context)
        let wire = try decodeBody(WireLoadConfirm.self, from: context.body)
        let load = try await store.confirmLoad(
            reference: storeReference(reference, terminal), balanceAfter: try Check.balance(wire.balanceAfter, "balanceAfter"),
            counterAfter: try Check.counter(wire.counterAfter, "counterAfter"), at: now())
        return jsonResponse(WireLoad(load, reference: reference))
    }

    private func reverseLoad(_ context: SettlementRequestContext) async throws -> Response {
        let terminal = try context.terminal
        let reference = try pathReference(context)
        let load = try await store.reverseLoad(reference: storeReference(reference, terminal), at: now())
        return jsonResponse(WireLoad(load, reference: reference))
    }

    // MARK: admin endpoints

    private func openAccount(_ context: SettlementRequestContext) async throws -> Response {
        let wire = try decodeBody(WireAccountOpen.self, from: context.body)
        let account = try await store.openAccount(
            name: try Check.text(wire.name, "name", max: 100),
            initialBalance: try Check.balance(wire.initialBalance ?? 0, "initialBalance"), at: now())
        return jsonResponse(WireAccount(account), status: .created)
    }

    private func showAccount(_ context: SettlementRequestContext) async throws -> Response {
        let id = try Check.integer(context.parameters.get("id"), "id", 1...Check.maxSafeInteger)
        guard let account = try await store.account(id) else { throw APIError.notFound("no account \(id): open one first (POST /v1/admin/accounts)") }
        return jsonResponse(WireAccount(account))
    }

    private func issueCard(_ context: SettlementRequestContext) async throws -> Response {
        let wire = try decodeBody(WireCardIssue.self, from: context.body)
        let serial = try Check.uint32(wire.serial, "serial", minimum: 1)
        let uid = try Check.uid(wire.uid, "uid")
        let accountID = try Check.range(wire.accountID, "accountID", 1...Check.maxSafeInteger)
        guard try await store.account(accountID) != nil else {
            throw APIError.notFound("no account \(accountID): open one first (POST /v1/admin/accounts)")
        }
        if try await store.card(serial: serial) != nil {
            throw APIError.conflict("card serial \(serial) is already issued: give another serial")
        }
        if try await store.card(uid: uid) != nil {
            throw APIError.conflict("a card with UID \(uid) is already issued: cancel it first or check the UID")
        }
        let card = try await store.issueCard(serial: serial, uid: uid, accountID: accountID, at: now())
        return jsonResponse(WireCard(card), status: .created)
    }

    private func cardSerial(_ context: SettlementRequestContext) throws -> UInt32 {
        let number: Int64 = try Check.integer(context.parameters.get("serial"), "serial", 1...Int64(UInt32.max))
        return UInt32(number)
    }

    private func existingCard(_ context: SettlementRequestContext) async throws -> Card {
        let serial = try cardSerial(context)
        guard let card = try await store.card(serial: serial) else { throw APIError.notFound("no card \(serial): issue it first (POST /v1/admin/cards)") }
        return card
    }

    private func changeStatus(_ context: SettlementRequestContext, to status: CardStatus, action: String) async throws -> Response {
        let card = try await existingCard(context)
        let wire = try decodeBody(WireStatusChange.self, from: context.body, emptyIs: WireStatusChange())
        let reason = try wire.reason.map { try Check.text($0, "reason", max: 200) } ?? action
        if card.status == .cancelled {
            throw APIError.conflict("card \(card.serial) is cancelled: a cancelled card never changes status again; issue a new card")
        }
        let (changed, version) = try await store.setCardStatus(serial: card.serial, to: status, reason: reason, at: now())
        return jsonResponse(WireCardStatusChange(card: WireCard(changed), blacklistVersion: version))
    }

    /// The card office's decision on a disputed load, named as its `load-mismatch` flag names it (`T<terminal>-<reference>`).
    private func settleLoad(_ context: SettlementRequestContext) async throws -> Response {
        let reference = try Check.storedLoadReference(context.parameters.get("reference") ?? "", "reference")
        let wire = try decodeBody(WireLoadSettle.self, from: context.body)
        let reason = try Check.text(wire.reason, "reason", max: 200)
        let load = try await store.settleDisputedLoad(reference: reference, credited: wire.credited, reason: reason, at: now())
        return jsonResponse(WireLoad(load, reference: reference))
    }

    private func registerTerminal(_ context: SettlementRequestContext) async throws -> Response {
        let wire = try decodeBody(WireTerminalRegister.self, from: context.body)
        let id = try Check.terminalID(wire.id, "id")
        let merchant = try Check.name(wire.merchant, "merchant")
        var generator = SystemRandomNumberGenerator()
        let secret = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let terminal = TerminalInfo(id: id, merchant: merchant, secret: secret, enabled: true, loads: wire.loads ?? false)
        try await store.addTerminal(terminal)
        return jsonResponse(WireTerminal(terminal, showingSecret: true), status: .created)
    }

    private func existingTerminal(_ context: SettlementRequestContext) async throws -> TerminalInfo {
        let id = try terminalID(context)
        guard let terminal = try await store.terminal(id) else { throw noTerminal(id) }
        return terminal
    }

    private func terminalID(_ context: SettlementRequestContext) throws -> TerminalID {
        TerminalID(UInt16(try Check.integer(context.parameters.get("id"), "id", 1...Int64(UInt16.max))))
    }

    private func noTerminal(_ id: TerminalID) -> APIError {
        APIError.notFound("no terminal \(id): register it first (POST /v1/admin/terminals)")
    }

    /// One statement in the store: a disable and an allow-loads at once both hold (a read here and a whole-row
    /// write had let the later write undo the other, after both were answered as done).
    private func changeTerminal(_ context: SettlementRequestContext, enabled: Bool? = nil, loads: Bool? = nil) async throws -> Response {
        let id = try terminalID(context)
        guard let terminal = try await store.changeTerminal(id, enabled: enabled, loads: loads) else { throw noTerminal(id) }
        return jsonResponse(WireTerminal(terminal))
    }

    private func dailyReport(_ request: Request) async throws -> Response {
        let day = try Check.day(request.uri.queryParameters.get("day").map { String($0) }, "day")
        let totals = try await store.dailyTotals(day: day).map {
            WireDailyTotal(day: $0.day, merchant: $0.merchant, terminalID: $0.terminalID?.rawValue, count: $0.count, total: $0.total.rawValue)
        }
        return jsonResponse(WireDailyReport(day: day, totals: totals))
    }

    private func statement(_ context: SettlementRequestContext) async throws -> Response {
        let card = try await existingCard(context)
        let entries = try await store.statement(cardSerial: card.serial).map {
            WireLedgerEntry(movementID: $0.movementID, account: $0.account, amount: $0.amount.rawValue, kind: $0.kind,
                            terminalID: $0.terminalID?.rawValue, terminalSequence: $0.terminalSequence, bookedAt: unixSeconds($0.bookedAt))
        }
        return jsonResponse(WireStatement(serial: card.serial, entries: entries))
    }

    private func flags(_ request: Request) async throws -> Response {
        let limit = try request.uri.queryParameters.get("limit").map { try Check.integer(String($0), "limit", 1...Int64(SettlementLimits.maxPageSize)) } ?? 100
        let flags = try await store.flags(limit: Int(limit)).map {
            WireFlag(id: $0.id, code: $0.code, terminalID: $0.terminalID?.rawValue, terminalSequence: $0.terminalSequence,
                     cardSerial: $0.cardSerial, message: $0.message, raisedAt: unixSeconds($0.raisedAt))
        }
        return jsonResponse(WireFlagList(flags: flags))
    }
}
