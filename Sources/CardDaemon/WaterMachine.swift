import CampusCard
import Foundation

/// A prepaid-unit water controller as a value: events in, actions out, no I/O; time comes only through `now`.
///
/// Rules (each one tested in WaterMachineTests):
/// - Fail closed: the first action of a new machine is `.closeValve(.startup)`; `.stop`, a fault and every end of a
///   session close the valve; after `.stop`, or while a latched fault (a leak, a valve that could not be driven) is
///   not cleared, the valve never opens and cards are refused.
/// - A card arrival → `.checkCard` (status, expiry, balance); a blacklisted card → `.lock` instead. A card that is not
///   normal, expired, or holds less than one unit is refused; so is one the offline policy refuses.
/// - A good card → `.debitUnit` for the first unit; the valve opens only after that debit succeeded, and only while
///   the card is still on the reader.
/// - The meter's pulses count the paid water down. When `prefetchPulses` or fewer paid pulses remain, the next unit
///   is debited; if they run out before that debit answered, the valve closes (`.awaitingDebit`) and reopens when it
///   succeeds. Pulses past the paid ones (the valve's closing time) are counted against the next unit.
/// - Insufficient funds (or a policy refusal) for the next unit: no more debits; the paid rest is dispensed, then
///   the valve closes (`.walletEmpty` / `.refused`). A refused or undetermined debit of another kind closes at once.
/// - Card left, meter silent for `meterSilence` while open, session longer than `maxSession`, `.fault` → close, and
///   the session ends; the card must leave and come back for a new one. Pulses while closed beyond
///   `leakTolerancePulses` → a leak: a latched fault.
/// - A unit debited after its session ended (the card left meanwhile) is reported, never dispensed.
public struct WaterMachine: Sendable {
    public struct Configuration: Hashable, Sendable {
        /// The price of one unit (e.g. 0.05 yuan).
        public var unitPrice: Fen
        /// Meter pulses per unit (e.g. 450 for one litre on a YF-S201).
        public var pulsesPerUnit: Int
        /// Debit the next unit when this many paid pulses or fewer remain (0 ... pulsesPerUnit - 1).
        public var prefetchPulses: Int
        public var maxSession: TimeInterval
        /// The valve closes when the meter counts nothing for this long while it is open.
        public var meterSilence: TimeInterval
        /// Pulses counted while the valve is closed (since it closed) beyond this are a leak.
        public var leakTolerancePulses: Int
        public var policy: OfflinePolicy

        public init(unitPrice: Fen = Fen(5), pulsesPerUnit: Int = 450, prefetchPulses: Int? = nil, maxSession: TimeInterval = 1_800,
                    meterSilence: TimeInterval = 30, leakTolerancePulses: Int = 20, policy: OfflinePolicy = .defaults) {
            self.unitPrice = unitPrice
            self.pulsesPerUnit = pulsesPerUnit
            self.prefetchPulses = prefetchPulses ?? pulsesPerUnit / 2
            self.maxSession = maxSession
            self.meterSilence = meterSilence
            self.leakTolerancePulses = leakTolerancePulses
            self.policy = policy
        }
    }

    public enum Event: Equatable, Sendable {
        /// Optional: the machine's first event of any kind yields `.closeValve(.startup)`.
        case start
        case cardArrived(CardUID, blacklisted: BlacklistHit? = nil)
        case cardLeft(CardUID)
        /// The answer to `.checkCard`.
        case checkFinished(CardUID, WaterCheckOutcome, decisions: [EarlierDecision] = [])
        /// The answer to `.debitUnit`.
        case debitFinished(CardUID, DebitOutcome, decisions: [EarlierDecision] = [])
        case lockFinished(CardUID, LockOutcome)
        /// Pulses the meter counted since the last `.pulses`.
        case pulses(Int)
        case context(TerminalContext)
        /// Driving the valve failed: a latched fault (close is attempted again).
        case valveFailed(String)
        /// Something else went wrong (the reader loop, the meter backend, the watchdog): the session ends, closed.
        case fault(String)
        /// The operator cleared a latched fault (a leak repaired, the valve fixed).
        case clearFault
        /// A fault latched before the daemon restarted (kept on disk): latched again, until the operator clears it.
        case restoreFault(String)
        /// Shutting down: close and never open again.
        case stop
        case tick
    }

    public enum Action: Equatable, Sendable {
        case openValve
        case closeValve(CloseReason)
        /// Read the card's identity and water wallet (`readIdentity`, `waterTap`), then send `.checkFinished`.
        case checkCard(CardUID)
        /// Debit one unit (`waterDebit(_:terminal:validityChecked: true)`), then send `.debitFinished`.
        case debitUnit(CardUID, amount: Fen, unit: Int)
        case lock(CardUID, LockStatus)
        case notify(Notice)
    }

    public enum CloseReason: String, Sendable, Hashable {
        case startup, cardLeft = "card-left", walletEmpty = "wallet-empty", refused, debitFailed = "debit-failed"
        case awaitingDebit = "awaiting-debit", meterSilent = "meter-silent", leak, maxSession = "max-session"
        case stopped, fault, valveFailed = "valve-failed"
    }

    public enum Notice: Equatable, Sendable {
        case cardArrived(CardUID)
        case cardLeft(CardUID)
        case cardRefused(CardUID, Refusal)
        case sessionStarted(CardUID, balance: Fen)
        case unitDebited(CardUID, unit: Int, balance: Fen)
        /// A unit was debited after its session had ended: paid, not dispensed (the record says so).
        case unitNotDispensed(CardUID, unit: Int)
        case debitUndetermined(CardUID, unit: Int, message: String)
        case valveOpened(CardUID)
        case valveClosed(CloseReason)
        /// Whole units dispensed so far in the session.
        case unitsDispensed(CardUID, units: Int)
        case sessionEnded(CardUID, SessionSummary)
        case leakDetected(pulses: Int)
        /// A `.fault` event's message (the session ended, closed).
        case fault(String)
        case faultLatched(String)
        case faultCleared
        case cardLocked(CardUID, LockStatus)
        case lockFailed(CardUID, message: String)
        case earlierDecided(CardUID, [EarlierDecision])
    }

    public struct SessionSummary: Hashable, Sendable {
        public var unitsPaid: Int
        public var pulsesDispensed: Int
        public var reason: CloseReason
        public init(unitsPaid: Int, pulsesDispensed: Int, reason: CloseReason) {
            self.unitsPaid = unitsPaid
            self.pulsesDispensed = pulsesDispensed
            self.reason = reason
        }
    }

    enum Phase: Equatable, Sendable {
        case checking, debitingFirst, running
    }

    struct Session: Equatable, Sendable {
        var uid: CardUID
        /// The unit price when the session began: a tariff that arrives meanwhile applies to the next session.
        var unitPrice: Fen
        var phase: Phase = .checking
        var openedAt: Date?
        var unitsPaid = 0
        var paidPulses = 0
        var dispensedPulses = 0
        var lastPulseAt: Date?
        /// Set when no further unit may be debited: the reason to close with when the paid pulses run out.
        var lastUnitReason: CloseReason?
        var debitInFlight = false
        var remaining: Int { paidPulses - dispensedPulses }
    }

    struct Presence: Equatable, Sendable {
        var uid: CardUID
        var blacklisted: BlacklistHit?
        var served = false
    }

    enum InFlight: Equatable, Sendable {
        case check(CardUID)
        case debit(CardUID, unit: Int)
        case lock(CardUID, LockStatus)
    }

    public private(set) var configuration: Configuration
    public private(set) var context: TerminalContext
    /// The valve as last commanded.
    public private(set) var valveOpen = false
    public private(set) var stopped = false
    /// A fault that keeps the valve closed until `.clearFault`.
    public private(set) var latchedFault: String?
    var started = false
    var card: Presence?
    var session: Session?
    var inFlight: InFlight?
    /// Pulses counted while closed since the valve last closed.
    var closedPulses = 0

    public init(configuration: Configuration, context: TerminalContext = TerminalContext()) {
        self.configuration = configuration
        self.context = context
    }

    /// The settlement service sent new offline limits: they apply from the next check on (the unit price of a session
    /// in progress does not change).
    public mutating func apply(policy: OfflinePolicy) { configuration.policy = policy }

    /// The settlement service's water tariff: the price of a unit from the next session on (a session in progress
    /// keeps the price it began with). A price outside 0.01…the wallet's cap is ignored: the machine keeps its own.
    @discardableResult
    public mutating func apply(unitPrice: Fen) -> Bool {
        guard unitPrice > .zero, unitPrice <= WaterSettlement.maximumCap else { return false }
        configuration.unitPrice = unitPrice
        return true
    }

    /// When the machine next needs a `.tick`: the meter-silence or max-session deadline of an open valve.
    public var nextDeadline: Date? {
        guard valveOpen, let session, let openedAt = session.openedAt else { return nil }
        let silent = (session.lastPulseAt ?? openedAt).addingTimeInterval(configuration.meterSilence)
        return min(silent, openedAt.addingTimeInterval(configuration.maxSession))
    }

    public mutating func handle(_ event: Event, now: Date) -> [Action] {
        var actions: [Action] = []
        if !started {
            started = true
            valveOpen = false
            actions.append(.closeValve(.startup))
        }
        checkTimers(now: now, into: &actions)
        switch event {
        case .start, .tick:
            break
        case .cardArrived(let uid, let blacklisted):
            if let present = card {
                if present.uid == uid { break }
                cardLeft(present.uid, into: &actions)
            }
            card = Presence(uid: uid, blacklisted: blacklisted)
            actions.append(.notify(.cardArrived(uid)))
        case .cardLeft(let uid):
            if card?.uid == uid { cardLeft(uid, into: &actions) }
        case .checkFinished(let uid, let outcome, let decisions):
            if !decisions.isEmpty { actions.append(.notify(.earlierDecided(uid, decisions))) }
            guard inFlight == .check(uid) else { break }
            inFlight = nil
            finishCheck(uid: uid, outcome: outcome, now: now, into: &actions)
        case .debitFinished(let uid, let outcome, let decisions):
            if !decisions.isEmpty { actions.append(.notify(.earlierDecided(uid, decisions))) }
            guard case .debit(uid, let unit) = inFlight else { break }
            inFlight = nil
            finishDebit(uid: uid, unit: unit, outcome: outcome, now: now, into: &actions)
        case .lockFinished(let uid, let outcome):
            guard case .lock(uid, let status) = inFlight else { break }
            inFlight = nil
            switch outcome {
            case .locked: actions.append(.notify(.cardLocked(uid, status)))
            case .failed(let message): actions.append(.notify(.lockFailed(uid, message: message)))
            }
        case .pulses(let count):
            guard count > 0 else { break }
            countPulses(count, now: now, into: &actions)
        case .context(let context):
            self.context = context
        case .valveFailed(let message):
            latch("the valve could not be driven: \(message)", reason: .valveFailed, into: &actions)
        case .fault(let message):
            actions.append(.notify(.fault(message)))
            failClosed(.fault, into: &actions)
        case .restoreFault(let message):
            latch(message, reason: .fault, into: &actions)
        case .clearFault:
            if latchedFault != nil {
                latchedFault = nil
                closedPulses = 0
                actions.append(.notify(.faultCleared))
            }
        case .stop:
            stopped = true
            failClosed(.stopped, into: &actions)
        }
        serve(now: now, into: &actions)
        return actions
    }

    // MARK: Steps

    mutating func cardLeft(_ uid: CardUID, into actions: inout [Action]) {
        card = nil
        actions.append(.notify(.cardLeft(uid)))
        if session?.uid == uid { endSession(.cardLeft, into: &actions) }
    }

    mutating func checkTimers(now: Date, into actions: inout [Action]) {
        guard valveOpen, let session, let openedAt = session.openedAt else { return }
        if now >= openedAt.addingTimeInterval(configuration.maxSession) {
            endSession(.maxSession, into: &actions)
        } else if now >= (session.lastPulseAt ?? openedAt).addingTimeInterval(configuration.meterSilence) {
            endSession(.meterSilent, into: &actions)
        }
    }

    mutating func finishCheck(uid: CardUID, outcome: WaterCheckOutcome, now: Date, into actions: inout [Action]) {
        guard var current = session, current.uid == uid, current.phase == .checking else { return }
        let refusal: Refusal?
        switch outcome {
        case .refused(let refused):
            refusal = refused
        case .card(let facts):
            if let locked = facts.locked {
                refusal = Refusal(.cardLocked, "the card is \(locked.rawValue): no water; send the holder to the card office")
            } else if facts.expired {
                refusal = Refusal(.expired, "the card has expired: no water; the holder needs a new card from the card office")
            } else if let price = session?.unitPrice, facts.balance < price {
                refusal = Refusal(.insufficientFunds, "the water wallet holds \(facts.balance.yuan) yuan, less than one unit (\(price.yuan)): refill it at a settlement station")
            } else {
                refusal = policyRefusal(now: now)
            }
            if refusal == nil {
                current.phase = .debitingFirst
                session = current
                actions.append(.notify(.sessionStarted(uid, balance: facts.balance)))
                debitNextUnit(into: &actions)
                return
            }
        }
        if let refusal { actions.append(.notify(.cardRefused(uid, refusal))) }
        session = nil
    }

    mutating func finishDebit(uid: CardUID, unit: Int, outcome: DebitOutcome, now: Date, into actions: inout [Action]) {
        guard var current = session, current.uid == uid else {
            if case .done = outcome { actions.append(.notify(.unitNotDispensed(uid, unit: unit))) }
            if case .undetermined(let message) = outcome { actions.append(.notify(.debitUndetermined(uid, unit: unit, message: message))) }
            return
        }
        current.debitInFlight = false
        switch outcome {
        case .done(let balance, _):
            current.unitsPaid += 1
            current.paidPulses += configuration.pulsesPerUnit
            if current.phase == .debitingFirst {
                current.phase = .running
                current.openedAt = now
            }
            session = current
            actions.append(.notify(.unitDebited(uid, unit: unit, balance: balance)))
            if !valveOpen, current.remaining > 0 { open(now: now, into: &actions) }
            // The carried-over overshoot may have eaten into the new unit already.
            prefetchIfDue(now: now, into: &actions)
        case .refused(let refusal):
            session = current
            actions.append(.notify(.cardRefused(uid, refusal)))
            if refusal.code == .insufficientFunds && current.phase == .running {
                session?.lastUnitReason = .walletEmpty
                if current.remaining <= 0 { endSession(.walletEmpty, into: &actions) }
            } else {
                endSession(.refused, into: &actions)
            }
        case .undetermined(let message):
            session = current
            actions.append(.notify(.debitUndetermined(uid, unit: unit, message: message)))
            endSession(.debitFailed, into: &actions)
        }
    }

    mutating func countPulses(_ count: Int, now: Date, into actions: inout [Action]) {
        if var current = session, current.phase == .running {
            let unitsBefore = current.dispensedPulses / configuration.pulsesPerUnit
            current.dispensedPulses += count
            if valveOpen { current.lastPulseAt = now }
            session = current
            let unitsAfter = current.dispensedPulses / configuration.pulsesPerUnit
            if unitsAfter > unitsBefore { actions.append(.notify(.unitsDispensed(current.uid, units: unitsAfter))) }
        }
        if !valveOpen {
            closedPulses += count
            if closedPulses > configuration.leakTolerancePulses {
                actions.append(.notify(.leakDetected(pulses: closedPulses)))
                latch("water flows with the valve closed (\(closedPulses) pulses): a leak or a stuck valve; shut the supply and check the valve", reason: .leak, into: &actions)
            }
            return
        }
        // Due (or overdue: a burst of pulses used the unit up at once) → the next unit's debit.
        prefetchIfDue(now: now, into: &actions)
        guard let current = session, current.remaining <= 0 else { return }
        if current.debitInFlight {
            close(.awaitingDebit, into: &actions)
        } else {
            endSession(current.lastUnitReason ?? .walletEmpty, into: &actions)
        }
    }

    mutating func prefetchIfDue(now: Date, into actions: inout [Action]) {
        guard let current = session, current.phase == .running, !current.debitInFlight, current.lastUnitReason == nil,
              current.remaining <= configuration.prefetchPulses, card?.uid == current.uid else { return }
        if let refusal = policyRefusal(now: now) {
            actions.append(.notify(.cardRefused(current.uid, refusal)))
            session?.lastUnitReason = .refused
            if current.remaining <= 0 { endSession(.refused, into: &actions) }
            return
        }
        debitNextUnit(into: &actions)
    }

    mutating func debitNextUnit(into actions: inout [Action]) {
        guard var current = session, inFlight == nil else { return }
        let unit = current.unitsPaid + 1
        current.debitInFlight = true
        session = current
        inFlight = .debit(current.uid, unit: unit)
        actions.append(.debitUnit(current.uid, amount: current.unitPrice, unit: unit))
    }

    /// Opens only for a running session of the card on the reader, with paid pulses left, never after a stop or
    /// under a latched fault.
    mutating func open(now: Date, into actions: inout [Action]) {
        guard !stopped, latchedFault == nil, !valveOpen, let current = session, current.phase == .running,
              current.remaining > 0, card?.uid == current.uid else { return }
        valveOpen = true
        closedPulses = 0
        session?.lastPulseAt = now
        actions.append(.openValve)
        actions.append(.notify(.valveOpened(current.uid)))
    }

    mutating func close(_ reason: CloseReason, into actions: inout [Action], always: Bool = false) {
        guard valveOpen || always else { return }
        if valveOpen { closedPulses = 0 }
        valveOpen = false
        actions.append(.closeValve(reason))
        actions.append(.notify(.valveClosed(reason)))
    }

    mutating func endSession(_ reason: CloseReason, into actions: inout [Action]) {
        close(reason, into: &actions)
        guard let ended = session else { return }
        session = nil
        actions.append(.notify(.sessionEnded(ended.uid, SessionSummary(unitsPaid: ended.unitsPaid, pulsesDispensed: ended.dispensedPulses,
                                                                       reason: reason))))
    }

    /// Ends the session and commands the valve closed even when it is believed closed already (fail closed).
    mutating func failClosed(_ reason: CloseReason, into actions: inout [Action]) {
        let wasOpen = valveOpen
        endSession(reason, into: &actions)
        if !wasOpen { close(reason, into: &actions, always: true) }
    }

    mutating func latch(_ message: String, reason: CloseReason, into actions: inout [Action]) {
        failClosed(reason, into: &actions)
        if latchedFault == nil { actions.append(.notify(.faultLatched(message))) }
        latchedFault = message
    }

    /// Starts a session for an arrived card, when nothing is in flight.
    mutating func serve(now: Date, into actions: inout [Action]) {
        guard inFlight == nil, session == nil, var present = card, !present.served else { return }
        present.served = true
        card = present
        if let hit = present.blacklisted {
            actions.append(.notify(.cardRefused(present.uid, Refusal(.blacklisted, "the card is on the blacklist (\(hit.status.rawValue)): refused and locked; send the holder to the card office"))))
            inFlight = .lock(present.uid, hit.status)
            actions.append(.lock(present.uid, hit.status))
            return
        }
        if stopped || latchedFault != nil {
            actions.append(.notify(.cardRefused(present.uid, Refusal(.outOfService, stopped ? "the water controller is shutting down" : "the water controller is out of service: \(latchedFault ?? "")"))))
            return
        }
        session = Session(uid: present.uid, unitPrice: configuration.unitPrice)
        inFlight = .check(present.uid)
        actions.append(.checkCard(present.uid))
    }

    func policyRefusal(now: Date) -> Refusal? {
        configuration.policy.check(amount: session?.unitPrice ?? configuration.unitPrice, queue: context.queue, blacklistUpdatedAt: context.blacklistUpdatedAt,
                                   now: now)?.refusal
    }
}
