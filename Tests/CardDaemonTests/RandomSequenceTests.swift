import CampusCard
import CardDaemon
import Foundation
import Testing

/// A seeded generator, so that a failing sequence can be replayed from its seed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Random event sequences against the machines, answering their actions the way a reader loop would (and sometimes
/// not at all before the card leaves), checking after every event the rules that guard money and water.
@Suite struct RandomSequenceTests {
    @Test(arguments: 0..<40) func waterMachineKeepsItsInvariants(seed: UInt64) {
        var random = SplitMix64(state: seed)
        let configuration = WaterRig.configuration
        var machine = WaterMachine(configuration: configuration, context: freshContext)
        var time: TimeInterval = 0
        var present: CardUID?
        var pending: WaterMachine.Action?
        var open = false
        var stopped = false
        var sessionCard: CardUID?
        var paid = 0, dispensed = 0
        var first = true
        var opens = 0, pauses = 0
        for step in 0..<400 {
            let event: WaterMachine.Event
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<8: event = .cardArrived(["04A1", "04B2"].randomElement(using: &random)!)
            case 8..<13: event = present.map { .cardLeft($0) } ?? .tick
            case 13..<45:
                switch pending {
                case .checkCard(let uid)?:
                    let balance = Fen(Int.random(in: 0..<30, using: &random))
                    event = .checkFinished(uid, Int.random(in: 0..<8, using: &random) == 0 ? .refused(Refusal(.garbled, "x")) : .card(WaterCardFacts(balance: balance)))
                case .debitUnit(let uid, _, _)?:
                    event = .debitFinished(uid, [DebitOutcome.done(balance: Fen(10), warnings: []), .done(balance: Fen(5), warnings: []),
                                                 .refused(Refusal(.insufficientFunds, "x")), .undetermined("x")].randomElement(using: &random)!)
                case .lock(let uid, _)?: event = .lockFinished(uid, .locked)
                default: event = .tick
                }
            // Water flows mostly while the valve is open; now and then through a closed one (the overshoot, a leak).
            case 45..<80: event = machine.valveOpen || Int.random(in: 0..<40, using: &random) == 0 ? .pulses(Int.random(in: 0...6, using: &random)) : .tick
            case 80..<94: event = .tick
            case 94: event = .fault("watchdog")
            case 95: event = Int.random(in: 0..<4, using: &random) == 0 ? .valveFailed("EIO") : .tick
            case 96..<98: event = .clearFault
            // Stops come late in a sequence, so that most of it runs.
            case 98: event = step > 300 ? .stop : .tick
            default: event = .cardArrived("04C3", blacklisted: BlacklistHit(status: .lost))
            }
            time += Double(Int.random(in: 0...3, using: &random))
            let actions = machine.handle(event, now: at(time))
            if first { #expect(actions.first == .closeValve(.startup), "seed \(seed)") }
            first = false
            switch event {
            case .cardArrived(let uid, _): present = uid
            case .cardLeft: present = nil
            case .stop: stopped = true
            case .checkFinished, .debitFinished, .lockFinished: pending = nil
            case .pulses(let count) where sessionCard != nil: dispensed += count
            default: break
            }
            if case .debitFinished(let uid, .done, _) = event, uid == sessionCard { paid += configuration.pulsesPerUnit }
            for action in actions {
                switch action {
                case .openValve:
                    // Never open after a stop, for a card gone, or for water not paid for.
                    #expect(!stopped, "seed \(seed): opened after stop")
                    #expect(present != nil && present == sessionCard, "seed \(seed): opened without its card")
                    #expect(paid > dispensed, "seed \(seed): opened with \(paid) paid, \(dispensed) dispensed")
                    open = true
                    opens += 1
                case .closeValve(let reason):
                    open = false
                    if reason == .awaitingDebit { pauses += 1 }
                case .checkCard, .debitUnit, .lock:
                    #expect(pending == nil, "seed \(seed): two card operations at once")
                    pending = action
                case .notify(.sessionStarted(let uid, _)):
                    sessionCard = uid
                    paid = 0
                    dispensed = 0
                case .notify(.sessionEnded):
                    sessionCard = nil
                default: break
                }
            }
            #expect(open == machine.valveOpen, "seed \(seed)")
            if open {
                #expect(present == sessionCard && machine.latchedFault == nil && !stopped, "seed \(seed): open without a running session")
            }
        }
        #expect(opens > 0, "seed \(seed): the sequence never opened the valve: it tests nothing")
        if ProcessInfo.processInfo.environment["CARDD_SEQUENCE_STATS"] != nil { print("water seed \(seed): \(opens) opens, \(pauses) pauses") }
    }

    @Test(arguments: 0..<40) func posMachineNeverDebitsACardTwicePerPresence(seed: UInt64) throws {
        var random = SplitMix64(state: seed)
        var pos = PosMachine(configuration: .init(saleTimeout: 10, windows: [], timeZone: TimeZone(identifier: "UTC")!, policy: .defaults),
                             context: freshContext)
        let pin = try PIN("1234")
        var time: TimeInterval = 0
        var present: CardUID?
        var pending: PosMachine.Action?
        /// Debits asked for in this presence, and whether the last answer asked for the PIN.
        var debits = 0
        var pinAsked = false
        var closedSales: Set<String> = []
        var saleNumber = 0
        var retries = 0
        var openSale = "none"
        for _ in 0..<400 {
            let event: PosMachine.Event
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<12: event = .cardArrived(["04A1", "04B2"].randomElement(using: &random)!)
            case 12..<20: event = present.map { .cardLeft($0) } ?? .tick
            case 20..<35:
                saleNumber += 1
                event = .arm(saleID: "s\(saleNumber)", amount: Fen(Int.random(in: 1...500, using: &random)))
            case 35..<40: event = .cancel(saleID: openSale)
            case 40..<50: event = .pin(saleID: Int.random(in: 0..<10, using: &random) == 0 ? "s0" : openSale, pin)
            case 50..<80:
                switch pending {
                case .debit(let uid, _, _, _)?:
                    event = .debitFinished(uid, [DebitOutcome.done(balance: Fen(1), warnings: []), .refused(Refusal(.insufficientFunds, "x")),
                                                 .refused(Refusal(.pinRequired, "x")), .refused(Refusal(.pinWrong, "x", pinTriesLeft: 1)),
                                                 .undetermined("x")].randomElement(using: &random)!)
                case .tap(let uid)?: event = .tapFinished(uid, .balance(Fen(1), warnings: []))
                case .lock(let uid, _)?: event = .lockFinished(uid, .locked)
                default: event = .tick
                }
            default: event = .tick
            }
            time += Double(Int.random(in: 0...4, using: &random))
            let actions = pos.handle(event, now: at(time))
            switch event {
            case .cardArrived(let uid, _) where uid != present:
                present = uid
                debits = 0
                pinAsked = false
            case .cardLeft:
                present = nil
            case .debitFinished(_, let outcome, _):
                pending = nil
                if case .refused(let refusal) = outcome, refusal.code == .pinRequired || refusal.code == .pinWrong { pinAsked = true }
            case .tapFinished, .lockFinished:
                pending = nil
            default: break
            }
            for action in actions {
                switch action {
                case .debit(let uid, _, let withPIN, .client(let id)):
                    #expect(pending == nil, "seed \(seed): two card operations at once")
                    #expect(uid == present, "seed \(seed): debit of a card not on the reader")
                    #expect(!closedSales.contains(id), "seed \(seed): debit for a sale already closed")
                    // A second debit in one presence only as the PIN retry the card asked for.
                    if debits > 0 {
                        #expect(pinAsked && withPIN != nil, "seed \(seed): card \(uid) charged twice in one presence")
                        retries += 1
                    }
                    debits += 1
                    pinAsked = false
                    pending = action
                case .debit:
                    Issue.record("no windows configured")
                case .tap, .lock:
                    #expect(pending == nil, "seed \(seed): two card operations at once")
                    pending = action
                case .notify(.saleArmed(let id, _, _)):
                    openSale = id
                case .notify(.saleTimedOut(let id)), .notify(.saleCancelled(let id)), .notify(.saleDone(.client(let id), _, _, _, _)),
                     .notify(.saleRefused(.client(let id), _, _)), .notify(.saleUndetermined(.client(let id), _, _)):
                    closedSales.insert(id)
                default: break
                }
            }
        }
        #expect(saleNumber > 0)
        if ProcessInfo.processInfo.environment["CARDD_SEQUENCE_STATS"] != nil { print("pos seed \(seed): \(retries) PIN retries") }
    }
}

