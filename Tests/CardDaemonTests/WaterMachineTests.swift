import CampusCard
import CardDaemon
import Foundation
import Testing

extension WaterMachine.Action {
    var notice: WaterMachine.Notice? { if case .notify(let notice) = self { notice } else { nil } }
}
extension Array where Element == WaterMachine.Action {
    var effects: [WaterMachine.Action] { filter { $0.notice == nil } }
    var notices: [WaterMachine.Notice] { compactMap(\.notice) }
    var opens: Int { filter { $0 == .openValve }.count }
    var closes: [WaterMachine.CloseReason] { compactMap { if case .closeValve(let reason) = $0 { reason } else { nil } } }
}

/// Drives a water machine and checks, after every event, the invariant that guards the water: the valve is open only
/// while a card is on the reader and more pulses were paid than dispensed (up to the closing overshoot).
struct WaterRig {
    var machine: WaterMachine
    var open = false
    var log: [WaterMachine.Action] = []

    init(_ configuration: WaterMachine.Configuration = Self.configuration) {
        machine = WaterMachine(configuration: configuration, context: freshContext)
        #expect(send(.start, -1) == [.closeValve(.startup)])
    }

    /// 10 pulses a unit of 5 fen; the next unit is debited when 3 or fewer paid pulses remain.
    static let configuration = WaterMachine.Configuration(unitPrice: Fen(5), pulsesPerUnit: 10, prefetchPulses: 3, maxSession: 600,
                                                          meterSilence: 20, leakTolerancePulses: 5)

    @discardableResult
    mutating func send(_ event: WaterMachine.Event, _ time: TimeInterval) -> [WaterMachine.Action] {
        let actions = machine.handle(event, now: at(time))
        for action in actions {
            if action == .openValve { open = true }
            if case .closeValve = action { open = false }
        }
        #expect(open == machine.valveOpen)
        log += actions
        return actions
    }

    /// A card arrives, passes the check, its first unit is debited: the valve opens.
    mutating func startSession(_ uid: CardUID = "04A1", balance: Fen = Fen(1_000), at time: TimeInterval = 0) {
        #expect(send(.cardArrived(uid), time).effects == [.checkCard(uid)])
        #expect(send(.checkFinished(uid, .card(WaterCardFacts(balance: balance))), time).effects == [.debitUnit(uid, amount: Fen(5), unit: 1)])
        #expect(send(.debitFinished(uid, .done(balance: Fen(balance.rawValue - 5), warnings: [])), time).effects == [.openValve])
    }
}

@Suite struct WaterMachineTests {
    @Test func theFirstActionOfANewMachineClosesTheValve() {
        var fresh = WaterMachine(configuration: WaterRig.configuration)
        #expect(fresh.handle(.start, now: at(0)) == [.closeValve(.startup)])
        var other = WaterMachine(configuration: WaterRig.configuration, context: freshContext)
        #expect(other.handle(.cardArrived("04A1"), now: at(0)).first == .closeValve(.startup))
        #expect(fresh.handle(.start, now: at(1)).isEmpty)
    }

    @Test func theValveOpensOnlyAfterTheFirstUnitsDebitSucceeded() {
        var rig = WaterRig()
        rig.send(.start, 0)
        #expect(rig.send(.cardArrived("04A1"), 0).opens == 0)
        #expect(rig.send(.checkFinished("04A1", .card(WaterCardFacts(balance: Fen(100)))), 1).opens == 0)
        #expect(!rig.machine.valveOpen)
        let debited = rig.send(.debitFinished("04A1", .done(balance: Fen(95), warnings: [])), 2)
        #expect(debited.effects == [.openValve])
        #expect(debited.notices.contains(.unitDebited("04A1", unit: 1, balance: Fen(95))))
    }

    @Test func aRefusedOrUndeterminedFirstDebitNeverOpens() {
        for outcome in [DebitOutcome.refused(Refusal(.insufficientFunds, "empty")), .refused(Refusal(.cardError, "gone")), .undetermined("lost")] {
            var rig = WaterRig()
            rig.send(.cardArrived("04A1"), 0)
            rig.send(.checkFinished("04A1", .card(WaterCardFacts(balance: Fen(100)))), 0)
            rig.send(.debitFinished("04A1", outcome), 1)
            rig.send(.pulses(1), 2)
            rig.send(.tick, 3)
            #expect(rig.log.opens == 0)
        }
    }

    @Test func theCheckRefusesLockedExpiredPoorAndUnreadableCards() {
        let cases: [(WaterCheckOutcome, Refusal.Code)] = [
            (.card(WaterCardFacts(locked: .lost, balance: Fen(100))), .cardLocked),
            (.card(WaterCardFacts(expired: true, balance: Fen(100))), .expired),
            (.card(WaterCardFacts(balance: Fen(4))), .insufficientFunds),
            (.refused(Refusal(.waterInterrupted, "torn")), .waterInterrupted),
        ]
        for (outcome, code) in cases {
            var rig = WaterRig()
            rig.send(.cardArrived("04A1"), 0)
            let checked = rig.send(.checkFinished("04A1", outcome), 1)
            #expect(checked.effects.isEmpty)
            #expect(checked.notices.contains { if case .cardRefused(_, let refusal) = $0 { refusal.code == code } else { false } })
            // Lying there, it is not checked again; it must leave and come back.
            #expect(rig.send(.tick, 2).effects.isEmpty)
            rig.send(.cardLeft("04A1"), 3)
            #expect(rig.send(.cardArrived("04A1"), 4).effects == [.checkCard("04A1")])
        }
    }

    @Test func theNextUnitIsDebitedBeforeItIsDispensed() {
        var rig = WaterRig()
        rig.startSession()
        #expect(rig.send(.pulses(6), 1).effects.isEmpty)  // 4 paid pulses left
        #expect(rig.send(.pulses(1), 2).effects == [.debitUnit("04A1", amount: Fen(5), unit: 2)])  // 3 left: prefetch
        #expect(rig.send(.pulses(1), 2.5).effects.isEmpty)  // one debit at a time
        #expect(rig.send(.debitFinished("04A1", .done(balance: Fen(990), warnings: [])), 3).effects.isEmpty)  // still open
        #expect(rig.machine.valveOpen)
        let units = rig.send(.pulses(3), 4)
        #expect(units.notices.contains(.unitsDispensed("04A1", units: 1)))
        #expect(rig.log.compactMap { if case .debitUnit(_, _, let unit) = $0 { unit } else { nil } } == [1, 2])
    }

    @Test func aNewTariffAppliesFromTheNextSessionNotToTheRunningOne() {
        var rig = WaterRig()
        rig.startSession()
        let taken = rig.machine.apply(unitPrice: Fen(8))
        #expect(taken)
        // The running session keeps 0.05 a unit.
        #expect(rig.send(.pulses(7), 1).effects == [.debitUnit("04A1", amount: Fen(5), unit: 2)])
        rig.send(.debitFinished("04A1", .done(balance: Fen(990), warnings: [])), 1.5)
        rig.send(.cardLeft("04A1"), 2)
        // The next session pays 0.08; a wallet under it is refused.
        #expect(rig.send(.cardArrived("04B2"), 10).effects == [.checkCard("04B2")])
        #expect(rig.send(.checkFinished("04B2", .card(WaterCardFacts(balance: Fen(1_000)))), 10).effects == [.debitUnit("04B2", amount: Fen(8), unit: 1)])
        rig.send(.debitFinished("04B2", .done(balance: Fen(992), warnings: [])), 10)
        rig.send(.cardLeft("04B2"), 11)
        #expect(rig.send(.cardArrived("04C3"), 20).effects == [.checkCard("04C3")])
        let poor = rig.send(.checkFinished("04C3", .card(WaterCardFacts(balance: Fen(7)))), 20)
        #expect(poor.effects.allSatisfy { if case .debitUnit = $0 { false } else { true } })
        // A price of zero or above the wallet's cap is not taken.
        let zero = rig.machine.apply(unitPrice: .zero), tooMuch = rig.machine.apply(unitPrice: Fen(10_001))
        #expect(!zero && !tooMuch)
        #expect(rig.machine.configuration.unitPrice == Fen(8))
    }

    @Test func theValveClosesWhenPaidPulsesRunOutBeforeTheDebitAndReopensAfter() {
        var rig = WaterRig()
        rig.startSession()
        #expect(rig.send(.pulses(7), 1).effects == [.debitUnit("04A1", amount: Fen(5), unit: 2)])
        #expect(rig.send(.pulses(3), 1.5).effects == [.closeValve(.awaitingDebit)])  // the unit is used up, debit pending
        rig.send(.pulses(2), 1.6)  // the closing overshoot, counted against the next unit
        #expect(rig.send(.debitFinished("04A1", .done(balance: Fen(990), warnings: [])), 2).effects == [.openValve])
        // 10 paid + 10 paid - 12 dispensed = 8 left: 5 more pulses leave 3, the third unit is debited.
        #expect(rig.send(.pulses(5), 3).effects == [.debitUnit("04A1", amount: Fen(5), unit: 3)])
    }

    @Test func insufficientFundsForTheNextUnitDispensesThePaidRestThenCloses() {
        var rig = WaterRig()
        rig.startSession(balance: Fen(5))
        rig.send(.pulses(7), 1)
        let refused = rig.send(.debitFinished("04A1", .refused(Refusal(.insufficientFunds, "empty"))), 2)
        #expect(refused.effects.isEmpty)  // 3 paid pulses left: still open
        #expect(rig.machine.valveOpen)
        #expect(rig.send(.pulses(2), 3).effects.isEmpty)
        let last = rig.send(.pulses(1), 4)
        #expect(last.effects == [.closeValve(.walletEmpty)])
        #expect(last.notices.contains(.sessionEnded("04A1", .init(unitsPaid: 1, pulsesDispensed: 10, reason: .walletEmpty))))
        #expect(rig.send(.pulses(1), 5).opens == 0)
        #expect(rig.log.compactMap { if case .debitUnit(_, _, let unit) = $0 { unit } else { nil } } == [1, 2])  // no retry
    }

    @Test func insufficientWhilePausedEndsTheSession() {
        var rig = WaterRig()
        rig.startSession(balance: Fen(5))
        rig.send(.pulses(7), 1)
        rig.send(.pulses(3), 1.1)  // paused, awaiting the debit
        let refused = rig.send(.debitFinished("04A1", .refused(Refusal(.insufficientFunds, "empty"))), 2)
        #expect(refused.notices.contains { if case .sessionEnded(_, let summary) = $0 { summary.reason == .walletEmpty } else { false } })
        #expect(rig.log.opens == 1)
    }

    @Test func aFailedNextDebitClosesAtOnce() {
        for (outcome, reason) in [(DebitOutcome.undetermined("reader"), WaterMachine.CloseReason.debitFailed),
                                  (.refused(Refusal(.tampered, "mac")), .refused)] {
            var rig = WaterRig()
            rig.startSession()
            rig.send(.pulses(7), 1)
            #expect(rig.send(.debitFinished("04A1", outcome), 2).closes == [reason])
            rig.send(.pulses(1), 3)
            #expect(rig.log.opens == 1)
        }
    }

    @Test func cardLeftClosesAndAUnitDebitedAfterwardsIsNeverDispensed() {
        var rig = WaterRig()
        rig.startSession()
        rig.send(.pulses(7), 1)  // unit 2 asked for
        #expect(rig.send(.cardLeft("04A1"), 2).closes == [.cardLeft])
        let late = rig.send(.debitFinished("04A1", .done(balance: Fen(990), warnings: [])), 3)
        #expect(late.opens == 0)
        #expect(late.notices == [.unitNotDispensed("04A1", unit: 2)])
        // The card comes back: a new session, checked again first.
        #expect(rig.send(.cardArrived("04A1"), 4).effects == [.checkCard("04A1")])
        #expect(rig.log.opens == 1)
    }

    @Test func aCardLeavingDuringTheCheckOrFirstDebitNeverOpens() {
        var rig = WaterRig()
        rig.send(.cardArrived("04A1"), 0)
        rig.send(.cardLeft("04A1"), 1)
        #expect(rig.send(.checkFinished("04A1", .card(WaterCardFacts(balance: Fen(100)))), 2).effects.isEmpty)
        var second = WaterRig()
        second.send(.cardArrived("04A1"), 0)
        second.send(.checkFinished("04A1", .card(WaterCardFacts(balance: Fen(100)))), 1)
        second.send(.cardLeft("04A1"), 2)
        #expect(second.send(.debitFinished("04A1", .done(balance: Fen(95), warnings: [])), 3).opens == 0)
    }

    @Test func aNewCardReplacingTheOldOneClosesFirst() {
        var rig = WaterRig()
        rig.startSession()
        let swap = rig.send(.cardArrived("04B2"), 1)
        #expect(swap.effects == [.closeValve(.cardLeft), .checkCard("04B2")])
    }

    @Test func meterSilenceWhileOpenCloses() {
        var rig = WaterRig()
        rig.startSession()
        rig.send(.pulses(2), 5)
        #expect(rig.machine.nextDeadline == at(25))
        #expect(rig.send(.tick, 24.9).closes.isEmpty)
        let silent = rig.send(.tick, 25)
        #expect(silent.closes == [.meterSilent])
        #expect(rig.send(.tick, 60).opens == 0)
    }

    @Test func maxSessionCloses() {
        var rig = WaterRig()
        rig.startSession()
        var time: TimeInterval = 0
        var closed: [WaterMachine.CloseReason] = []
        // Keep water flowing and units paid until the session's 600 s are up.
        while closed.isEmpty && time < 700 {
            time += 10
            let actions = rig.send(.pulses(1), time)
            closed = actions.closes
            if actions.contains(where: { if case .debitUnit = $0 { true } else { false } }) {
                closed = rig.send(.debitFinished("04A1", .done(balance: Fen(900), warnings: [])), time).closes
            }
        }
        #expect(closed == [.maxSession])
        #expect(time == 600)
    }

    @Test func pulsesWhileClosedBeyondToleranceAreALeakThatLatches() {
        var rig = WaterRig()
        rig.send(.start, 0)
        rig.send(.pulses(5), 1)  // within tolerance
        #expect(rig.machine.latchedFault == nil)
        let leak = rig.send(.pulses(1), 2)
        #expect(leak.closes == [.leak])
        #expect(leak.notices.contains(.leakDetected(pulses: 6)))
        #expect(rig.machine.latchedFault != nil)
        // Latched: cards are refused, nothing opens, until an operator clears it.
        let refused = rig.send(.cardArrived("04A1"), 3)
        #expect(refused.effects.isEmpty)
        #expect(refused.notices.contains { if case .cardRefused(_, let refusal) = $0 { refusal.code == .outOfService } else { false } })
        rig.send(.cardLeft("04A1"), 4)
        rig.send(.clearFault, 5)
        rig.startSession(at: 6)
    }

    @Test func aLeakDuringAPauseEndsTheSession() {
        var rig = WaterRig()
        rig.startSession()
        rig.send(.pulses(10), 1)  // closes, awaiting unit 2
        let leak = rig.send(.pulses(6), 2)
        #expect(leak.notices.contains(.leakDetected(pulses: 6)))
        #expect(rig.send(.debitFinished("04A1", .done(balance: Fen(990), warnings: [])), 3).opens == 0)
    }

    @Test func stopClosesAndNothingOpensAfterwards() {
        var rig = WaterRig()
        rig.startSession()
        let stop = rig.send(.stop, 1)
        #expect(stop.closes == [.stopped])
        rig.send(.cardLeft("04A1"), 2)
        let after = rig.send(.cardArrived("04A1"), 3)
        #expect(after.effects.isEmpty)
        rig.send(.debitFinished("04A1", .done(balance: Fen(1), warnings: [])), 4)
        rig.send(.clearFault, 5)
        rig.send(.pulses(1), 6)
        #expect(rig.log.opens == 1)
        // A stop of a machine believed closed still commands the valve closed (fail closed).
        var idle = WaterRig()
        #expect(idle.send(.stop, 0).closes == [.stopped])
    }

    @Test func aFaultClosesEndsTheSessionAndNeedsTheCardToLeave() {
        var rig = WaterRig()
        rig.startSession()
        let fault = rig.send(.fault("watchdog"), 1)
        #expect(fault.closes == [.fault])
        #expect(fault.notices.contains(.fault("watchdog")))
        #expect(rig.send(.tick, 2).effects.isEmpty)
        rig.send(.cardLeft("04A1"), 3)
        rig.startSession(at: 4)  // not latched: the next presence works
    }

    @Test func aValveFailureLatches() {
        var rig = WaterRig()
        rig.startSession()
        let failed = rig.send(.valveFailed("EIO"), 1)
        #expect(failed.closes == [.valveFailed])
        #expect(rig.machine.latchedFault != nil)
    }

    @Test func blacklistedCardIsLockedNotChecked() {
        var rig = WaterRig()
        let arrival = rig.send(.cardArrived("04A1", blacklisted: BlacklistHit(status: .cancelled)), 0)
        #expect(arrival.effects == [.lock("04A1", .cancelled)])
        #expect(rig.send(.lockFinished("04A1", .failed("no key B")), 1).notices == [.lockFailed("04A1", message: "no key B")])
        #expect(rig.log.opens == 0)
    }

    @Test func thePolicyStopsNewSessionsAndFurtherUnits() {
        var rig = WaterRig()
        rig.send(.context(TerminalContext(queue: .empty, blacklistUpdatedAt: nil)), 0)
        rig.send(.cardArrived("04A1"), 0)
        let checked = rig.send(.checkFinished("04A1", .card(WaterCardFacts(balance: Fen(100)))), 1)
        #expect(checked.effects.isEmpty)
        #expect(checked.notices.contains { if case .cardRefused(_, let refusal) = $0 { refusal.code == .blacklistMissing } else { false } })
        // Mid-session, the queue fills: the paid unit runs out, no further debit.
        var running = WaterRig()
        running.startSession()
        running.send(.context(TerminalContext(queue: QueueSummary(count: 500), blacklistUpdatedAt: at(0))), 1)
        #expect(running.send(.pulses(7), 2).effects.isEmpty)
        #expect(running.send(.pulses(3), 3).closes == [.refused])
    }

    @Test func earlierDecisionsArePassedThrough() {
        var rig = WaterRig()
        rig.send(.cardArrived("04A1"), 0)
        let decision = EarlierDecision(terminalSequence: 3, kind: "water-debit", amount: Fen(5), recordedAt: at(-100), outcome: .notDone)
        let checked = rig.send(.checkFinished("04A1", .card(WaterCardFacts(balance: Fen(100))), decisions: [decision]), 1)
        #expect(checked.notices.first == .earlierDecided("04A1", [decision]))
    }
}
