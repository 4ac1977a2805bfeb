import CampusCard
import CardDaemon
import CardSession
import DaemonSupport
import Foundation
import Logging
import PCSC
import SettlementCore
import TerminalStore

/// The box's one mode, as a value machine.
enum ModeMachine: Sendable {
    case pos(PosMachine)
    case water(WaterMachine)
    case settle(SettleMachine)
}

/// The last card tap, for `daemon status`.
struct LastTap: Sendable, Codable {
    var at: Date
    var card: String
    var result: String
}

/// The terminal daemon: the mode machine, the store, the reader and the control API's subscribers. Every event goes
/// through `handle`, which runs the machine and carries out its actions; card operations run one at a time on the
/// `CardPort`. Actor reentrancy lets a card leaving or a client's request be handled while a card operation runs:
/// the machines keep their own in-flight state.
actor Daemon {
    let config: DaemonConfig
    let store: TerminalStore
    let actions: CardActions
    let port: CardPort
    let logger: Logger
    let valve: (any Valve)?
    let meter: (any FlowMeter)?
    let simulatedMeter: SimulatedFlowMeter?
    private(set) var machine: ModeMachine
    private var subscribers: [UUID: AsyncStream<EventLine>.Continuation] = [:]
    private(set) var lastTap: LastTap?
    private(set) var readerName: String?
    private(set) var cardUID: String?
    private(set) var pcscdUp = true
    private(set) var stopping = false
    /// What happened to each notice: observers such as `cardctl pos charge` wait on these.
    private(set) var taps = 0
    /// The store-and-forward service, when the box has a settlement service (`uplink.url`).
    private(set) var uplink: Uplink?

    init(config: DaemonConfig, store: TerminalStore, keystore: any Keystore, logger: Logger,
         valve: (any Valve)?, meter: (any FlowMeter)?) {
        self.config = config
        self.store = store
        self.logger = logger
        self.valve = valve
        self.meter = meter
        self.simulatedMeter = meter as? SimulatedFlowMeter
        let port = CardPort(reader: config.readerName, profile: nil, logger: logger)
        self.port = port
        let terminal = Terminal(id: TerminalID(config.terminalID), journal: store,
                                lastSeenCounter: { uid in (try? store.lastSeenCounter(cardUID: uid)) ?? nil })
        self.actions = CardActions(port: port, keystore: keystore, terminal: terminal)
        switch config.mode {
        case .pos, .load: machine = .pos(PosMachine(configuration: config.pos))
        case .water: machine = .water(WaterMachine(configuration: config.waterMachine))
        case .settle: machine = .settle(SettleMachine(policy: config.offline))
        }
    }

    // MARK: Events in

    /// Starts the machine: a water controller closes its valve first (fail closed, also after a crash restart).
    func start() async {
        if let saved = try? store.savedParameters(),
           let parameters = try? SettlementJSON.decoder().decode(TerminalParameters.self, from: Data(saved.json.utf8)) {
            apply(parameters)
        }
        await refreshContext()
        if case .water = machine {
            await water(.start)
            if let message = LatchedFaultFile(store: config.storePath).load() { await water(.restoreFault(message)) }
        }
    }

    func cardArrived(reader: String) async {
        guard !stopping else { return }
        // A card that arrives while another is still on record as present: that one left (its removal was missed
        // or coalesced). A new arrival is always a new presence.
        if cardUID != nil { await cardLeft() }
        readerName = reader
        let uid: String
        do {
            uid = try await port.attach(reader: reader)
        } catch {
            logger.warning("card arrived but could not be read", metadata: ["reader": "\(reader)", "error": "\(error)"])
            broadcast(EventLine(event: "card-unreadable", message: "\(error)"))
            return
        }
        cardUID = uid
        taps += 1
        let hit = blacklistHit(uid)
        switch machine {
        case .pos: await pos(.cardArrived(uid, blacklisted: hit))
        case .water: await water(.cardArrived(uid, blacklisted: hit))
        case .settle: await settle(.cardArrived(uid, blacklisted: hit))
        }
        // A tap may have queued a record or hit an offline limit: upload now rather than at the next interval.
        await uplink?.nudge()
    }

    func attach(uplink: Uplink) { self.uplink = uplink }

    /// An uplink pass changed the queue or the blacklist, or brought parameters: the policy sees them from now on.
    func uplinkChanged(_ parameters: TerminalParameters?) async {
        if let parameters { apply(parameters) }
        await refreshContext()
    }

    /// The settlement service's parameters replace the configured ones (they are the campus's, versioned): the offline
    /// limits, a water controller's unit price, a POS's fixed prices by window name.
    private func apply(_ parameters: TerminalParameters) {
        // A load station is online only: no offline limit and no fixed price applies to it.
        guard config.mode != .load else { return }
        let policy = OfflinePolicy(maxDebit: parameters.maxOfflineDebit, maxUnsentCount: parameters.maxUnsentCount,
                                   maxUnsentTotal: parameters.maxUnsentTotal, maxUnsentAge: TimeInterval(parameters.maxUnsentAge),
                                   maxBlacklistAge: TimeInterval(parameters.maxBlacklistAge))
        switch machine {
        case .pos(var current):
            current.apply(policy: policy)
            let changed = current.apply(fixedPrices: parameters.fixedPrices)
            if !changed.isEmpty { logger.notice("fixed prices from the settlement service", metadata: ["windows": "\(changed)"]) }
            machine = .pos(current)
        case .water(var current):
            current.apply(policy: policy)
            if !current.apply(unitPrice: parameters.waterUnitPrice) {
                logger.warning("the settlement service's water unit price is out of range; the configured one stays",
                               metadata: ["unitPrice": "\(parameters.waterUnitPrice)"])
            }
            machine = .water(current)
        case .settle(var current): current.apply(policy: policy); machine = .settle(current)
        }
    }

    func cardLeft() async {
        guard let uid = cardUID else { return }
        cardUID = nil
        await port.detach()
        switch machine {
        case .pos: await pos(.cardLeft(uid))
        case .water: await water(.cardLeft(uid))
        case .settle: await settle(.cardLeft(uid))
        }
    }

    func serviceChanged(up: Bool) async {
        pcscdUp = up
        broadcast(EventLine(event: up ? "pcscd-restored" : "pcscd-lost"))
        if !up {
            if case .water = machine { await water(.fault("pcscd is unreachable")) }
            await cardLeft()
        }
    }

    func tick() async {
        switch machine {
        case .pos(let machine): if let deadline = machine.nextDeadline, deadline <= Date() { await pos(.tick) }
        case .water:
            if let meter, let count = try? meter.takePulses(), count > 0 { await water(.pulses(count)) }
            await water(.tick)
        case .settle: break
        }
    }

    /// SIGTERM: the machine stops (a water controller closes its valve), the card operation in progress finishes
    /// (its journal record decides it either way), then the reader is released.
    func stop() async {
        guard !stopping else { return }
        stopping = true
        if case .water = machine { await water(.stop) }
        await port.close()
        for continuation in subscribers.values { continuation.finish() }
        subscribers.removeAll()
    }

    // MARK: Client requests

    /// A client's request to the POS machine, and its rejection if the machine did not take it: the rejection
    /// belongs to the sender alone (another client's sale with the same id must not read it as its own end).
    struct Rejection: Sendable, Error {
        var saleID: String
        var code: PosMachine.RequestRejection
        var message: String
        var line: EventLine
    }

    func arm(saleID: String, amount: Fen, timeout: TimeInterval?) async -> Rejection? {
        guard case .pos = machine else { return nil }
        return Self.rejection(in: await pos(.arm(saleID: saleID, amount: amount, timeout: timeout)))
    }

    func cancel(saleID: String) async -> Rejection? {
        guard case .pos = machine else { return nil }
        return Self.rejection(in: await pos(.cancel(saleID: saleID)))
    }

    func pin(saleID: String, _ pin: PIN) async -> Rejection? {
        guard case .pos = machine else { return nil }
        return Self.rejection(in: await pos(.pin(saleID: saleID, pin)))
    }

    /// The client waiting for `saleID` went away: an armed sale (or one waiting for its PIN) is cancelled, as nobody
    /// would hear its result; a debit already running is left to finish (its result is in the store and the log).
    func abandon(saleID: String) async {
        guard case .pos(let current) = machine, current.openSaleID == saleID, current.nextDeadline != nil else { return }
        logger.notice("the client of sale \(saleID) went away before a card paid it: cancelled")
        await pos(.cancel(saleID: saleID))
    }

    private static func rejection(in notices: [PosMachine.Notice]) -> Rejection? {
        for notice in notices {
            if case .requestRejected(let saleID, let code, let message) = notice {
                return Rejection(saleID: saleID, code: code, message: message, line: EventLine(notice))
            }
        }
        return nil
    }

    /// Simulated meter only: pulses as a flow meter would count them.
    func injectPulses(_ count: Int) async -> Bool {
        guard let simulatedMeter else { return false }
        simulatedMeter.inject(count)
        await tick()
        return true
    }

    func clearFault() async { if case .water = machine { await water(.clearFault) } }

    func subscribe() -> (UUID, AsyncStream<EventLine>) {
        let (stream, continuation) = AsyncStream<EventLine>.makeStream(bufferingPolicy: .bufferingNewest(1024))
        let id = UUID()
        if stopping { continuation.finish() } else { subscribers[id] = continuation }
        return (id, stream)
    }

    func unsubscribe(_ id: UUID) { subscribers[id]?.finish(); subscribers[id] = nil }

    var openSaleID: String? { if case .pos(let machine) = machine { machine.openSaleID } else { nil } }

    var valveOpen: Bool? { if case .water(let machine) = machine { machine.valveOpen } else { nil } }

    var latchedFault: String? { if case .water(let machine) = machine { machine.latchedFault } else { nil } }

    // MARK: The machines

    /// Runs the POS machine on `event` and carries out its actions; returns the notices of this event's own actions
    /// (not those of the follow-up events), so a client request can tell its own rejection.
    @discardableResult
    private func pos(_ event: PosMachine.Event) async -> [PosMachine.Notice] {
        guard case .pos(var current) = machine else { return [] }
        let actions = current.handle(event, now: Date())
        machine = .pos(current)
        var notices: [PosMachine.Notice] = []
        for action in actions {
            switch action {
            case .notify(let notice): publish(notice); notices.append(notice)
            case .debit(let uid, let amount, let pin, _):
                // A load station's armed amount is a load onto the card (online: held at the service first).
                let (outcome, decisions) = config.mode == .load
                    ? await self.actions.load(uid, amount: amount, client: uplink?.client)
                    : await self.actions.debit(uid, amount: amount, pin: pin)
                await refreshContext()
                await pos(.debitFinished(uid, outcome, decisions: decisions))
            case .tap(let uid):
                let (outcome, decisions) = await self.actions.tap(uid)
                await pos(.tapFinished(uid, outcome, decisions: decisions))
            case .lock(let uid, let status):
                let outcome = await self.actions.lock(uid, status)
                await pos(.lockFinished(uid, outcome))
            }
        }
        return notices
    }

    private func water(_ event: WaterMachine.Event) async {
        guard case .water(var current) = machine else { return }
        let actions = current.handle(event, now: Date())
        machine = .water(current)
        for action in actions {
            switch action {
            case .notify(let notice):
                // A latched fault outlives a restart (a leak is not repaired by one): kept beside the store.
                if case .faultLatched(let message) = notice { LatchedFaultFile(store: config.storePath).save(message, logger: logger) }
                if case .faultCleared = notice { LatchedFaultFile(store: config.storePath).save(nil, logger: logger) }
                publish(notice)
            case .openValve:
                do { try await valve?.set(open: true) } catch { await water(.valveFailed("\(error)")) }
            case .closeValve:
                do { try await valve?.set(open: false) } catch { await water(.valveFailed("\(error)")) }
            case .checkCard(let uid):
                let (outcome, decisions) = await self.actions.waterCheck(uid, now: Date())
                await water(.checkFinished(uid, outcome, decisions: decisions))
            case .debitUnit(let uid, let amount, _):
                let (outcome, decisions) = await self.actions.waterDebit(uid, amount: amount)
                await refreshContext()
                await water(.debitFinished(uid, outcome, decisions: decisions))
            case .lock(let uid, let status):
                let outcome = await self.actions.lock(uid, status)
                await water(.lockFinished(uid, outcome))
            }
        }
    }

    private func settle(_ event: SettleMachine.Event) async {
        guard case .settle(var current) = machine else { return }
        let actions = current.handle(event, now: Date())
        machine = .settle(current)
        for action in actions {
            switch action {
            case .notify(let notice): publish(notice)
            case .settle(let uid):
                let (outcome, decisions) = await self.actions.settle(uid)
                await refreshContext()
                await settle(.settleFinished(uid, outcome, decisions: decisions))
            case .lock(let uid, let status):
                let outcome = await self.actions.lock(uid, status)
                await settle(.lockFinished(uid, outcome))
            }
        }
    }

    // MARK: Store

    private func blacklistHit(_ uid: String) -> BlacklistHit? {
        do {
            guard let entry = try store.blacklisted(cardUID: uid, serial: nil) else { return nil }
            return BlacklistHit(status: entry.lockStatus, version: entry.version)
        } catch {
            logger.error("cannot read the blacklist", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// The offline policy's inputs, fresh from the store, into the machine.
    func refreshContext() async {
        let context = storeContext()
        switch machine {
        case .pos: await pos(.context(context))
        case .water: await water(.context(context))
        case .settle: await settle(.context(context))
        }
    }

    func storeContext() -> TerminalContext {
        let summary = try? store.queueSummary()
        let blacklist = try? store.blacklistStatus()
        let queue = CardDaemon.QueueSummary(count: summary?.unacknowledged ?? 0, total: summary?.unacknowledgedDebits ?? .zero,
                                            oldest: summary?.oldestUnacknowledgedAt)
        return TerminalContext(queue: queue, blacklistUpdatedAt: blacklist?.updatedAt)
    }

    // MARK: Observers

    /// A machine's notice: to the event stream's subscribers and the log (one event line for both), and the last tap.
    private func publish(_ notice: some NoticeDescribing) {
        let line = notice.eventLine
        broadcast(line)
        if let (card, result) = notice.tapResult { lastTap = LastTap(at: Date(), card: card, result: result) }
        logger.info("\(String(data: (try? EventLine.encoder.encode(line)) ?? Data(), encoding: .utf8) ?? "")")
    }

    private func broadcast(_ line: EventLine) {
        for continuation in subscribers.values { continuation.yield(line) }
    }
}

extension BlacklistEntry {
    /// The status a listed card is locked with, from the reason's words: "lost"/"stolen" → lost, "cancel..." →
    /// cancelled, anything else → frozen (reversible: the card office decides).
    var lockStatus: LockStatus {
        let words = reason.lowercased().split(whereSeparator: { !$0.isLetter })
        if words.contains(where: { $0 == "lost" || $0 == "stolen" }) { return .lost }
        if words.contains(where: { $0.hasPrefix("cancel") }) { return .cancelled }
        return .frozen
    }
}
