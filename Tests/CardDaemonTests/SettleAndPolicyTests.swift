import CampusCard
import CardDaemon
import Foundation
import Testing

@Suite struct SettleMachineTests {
    @Test func everyArrivingCardIsSettledOnceUntilItLeaves() {
        var station = SettleMachine(context: freshContext)
        #expect(station.handle(.cardArrived("04A1"), now: at(0)).filter { if case .settle = $0 { true } else { false } } == [.settle("04A1")])
        let summary = SettlementSummary(consumption: Fen(340), refill: Fen(340), balance: Fen(1_000))
        #expect(station.handle(.settleFinished("04A1", .done(summary)), now: at(1)) == [.notify(.settled("04A1", summary))])
        #expect(station.handle(.cardArrived("04A1"), now: at(2)).isEmpty)  // still the same presence
        #expect(station.handle(.tick, now: at(3)).isEmpty)
        _ = station.handle(.cardLeft("04A1"), now: at(4))
        #expect(station.handle(.cardArrived("04A1"), now: at(5)).contains(.settle("04A1")))
    }

    @Test func aFailedSettlementIsNotRetriedWhileTheCardStays() {
        var station = SettleMachine(context: freshContext)
        _ = station.handle(.cardArrived("04A1"), now: at(0))
        let lost = station.handle(.settleFinished("04A1", .undetermined("card left")), now: at(1))
        #expect(lost == [.notify(.settlementUndetermined("04A1", message: "card left"))])
        #expect(station.handle(.tick, now: at(2)).isEmpty)
    }

    @Test func blacklistedCardIsLockedAndPolicyRefuses() {
        var station = SettleMachine(context: freshContext)
        #expect(station.handle(.cardArrived("04A1", blacklisted: BlacklistHit(status: .lost)), now: at(0)).contains(.lock("04A1", .lost)))
        #expect(station.handle(.lockFinished("04A1", .locked), now: at(1)) == [.notify(.cardLocked("04A1", .lost))])
        var stale = SettleMachine(context: TerminalContext(blacklistUpdatedAt: at(-2 * 86_400)))
        let refused = stale.handle(.cardArrived("04B2"), now: at(0))
        #expect(!refused.contains(.settle("04B2")))
        #expect(refused.contains { if case .notify(.cardRefused(_, let refusal)) = $0 { refusal.code == .blacklistStale } else { false } })
    }
}

@Suite struct OfflinePolicyTests {
    let policy = OfflinePolicy.defaults

    @Test func defaultsFromTheDomainReference() {
        #expect(policy.maxDebit == Fen(10_000))
        #expect(policy.maxUnsentCount == 500)
        #expect(policy.maxUnsentTotal == Fen(100_000))
        #expect(policy.maxUnsentAge == TimeInterval(7 * 86_400))
        #expect(policy.maxBlacklistAge == TimeInterval(86_400))
    }

    @Test func eachLimitRefusesWithItsCodeAndALine() {
        let fresh = at(-60)
        #expect(policy.check(amount: Fen(10_000), queue: .empty, blacklistUpdatedAt: fresh, now: at(0)) == nil)
        let cases: [(Fen, QueueSummary, Date?, PolicyRefusal.Code)] = [
            (Fen(10_001), .empty, fresh, .amount),
            (Fen(1), QueueSummary(count: 500, total: Fen(1), oldest: at(-1)), fresh, .unsentCount),
            (Fen(2), QueueSummary(count: 10, total: Fen(99_999), oldest: at(-1)), fresh, .unsentTotal),
            (Fen(1), QueueSummary(count: 1, total: Fen(1), oldest: at(-7 * 86_400 - 1)), fresh, .unsentAge),
            (Fen(1), .empty, at(-86_401), .blacklistStale),
            (Fen(1), .empty, nil, .blacklistMissing),
        ]
        for (amount, queue, updated, code) in cases {
            let refusal = policy.check(amount: amount, queue: queue, blacklistUpdatedAt: updated, now: at(0))
            #expect(refusal?.code == code)
            #expect(refusal?.refusal.code.rawValue == code.rawValue)
            #expect((refusal?.message.count ?? 0) > 20)
        }
        // At the limits exactly: accepted.
        #expect(policy.check(amount: Fen(1), queue: QueueSummary(count: 499, total: Fen(99_999), oldest: at(-7 * 86_400)),
                             blacklistUpdatedAt: at(-86_400), now: at(0)) == nil)
    }

    @Test func unlimitedRefusesNothing() {
        #expect(OfflinePolicy.unlimited.check(amount: Fen(1_000_000), queue: QueueSummary(count: 1_000_000, total: Fen(1 << 40), oldest: at(-1e9)),
                                              blacklistUpdatedAt: nil, now: at(0)) == nil)
    }
}

@Suite struct OperationResultTests {
    @Test func everyCardErrorCodeMapsToTheSameRefusalCode() {
        let codes: [CardOperationError.Code] = [.notCampusCard, .unsupportedLayout, .tampered, .replay, .insufficientFunds, .overLimit,
                                                .cardLocked, .expired, .unknownKeyVersion, .readerCannot, .notBlank, .journal, .missingKey,
                                                .garbled, .waterInterrupted, .pinRequired, .pinWrong, .pinBlocked, .pinNotSet, .invalidHolderSetting]
        for code in codes {
            var error = CardOperationError(code, "why")
            error.pinTriesLeft = 2
            let refusal = Refusal(error)
            #expect(refusal.code.rawValue == code.rawValue)
            #expect(refusal.message == "why")
            #expect(refusal.pinTriesLeft == 2)
        }
    }

    struct ReaderGone: Error {}

    func intent(_ sequence: UInt32) -> TransactionIntent {
        TransactionIntent(terminalID: 1, terminalSequence: sequence, kind: .purseDebit, cardUID: "04A1", cardSerial: nil, amount: 500,
                          balanceBefore: 1_000, counterBefore: 3, createdAt: at(0))
    }

    /// The money's outcome comes from the session's report: a refusal before any intent is refused; an intent left
    /// open by a failure is undetermined; a done intent is done even when a later step failed.
    @Test func aFailureIsUndeterminedOnlyWhenItLeftTheIntentOpen() {
        let refusal = CardOperationError(.insufficientFunds, "poor")
        #expect(DebitOutcome(OperationReport<PurseState>(error: refusal)) == .refused(Refusal(refusal)))
        guard case .refused(let closed) = DebitOutcome(OperationReport<PurseState>(error: ReaderGone())) else {
            Issue.record("a failure with no intent wrote nothing")
            return
        }
        #expect(closed.code == .cardError)
        guard case .undetermined = DebitOutcome(OperationReport<WaterState>(error: ReaderGone(), intents: [(intent(7), nil)])) else {
            Issue.record("an intent left open by a failure is undetermined")
            return
        }
        let doneLate = OperationReport<PurseState>(error: ReaderGone(), intents: [(intent(8), .done(balanceAfter: 500, counterAfter: 4))])
        #expect(DebitOutcome(doneLate) == .done(balance: Fen(500), warnings: ["ReaderGone()"]))
        let notDone = OperationReport<PurseState>(error: ReaderGone(), intents: [(intent(9), .notDone)])
        guard case .refused = DebitOutcome(notDone) else {
            Issue.record("an intent decided not done is not done")
            return
        }
    }

    @Test func earlierDecisionsComeFromTheReport() {
        let decided = [DecidedIntent(intent: intent(3), outcome: .done(balanceAfter: 500, counterAfter: 4))]
        #expect(EarlierDecision.decided(decided) == [
            EarlierDecision(terminalSequence: 3, kind: "purse-debit", amount: Fen(500), recordedAt: at(0), outcome: .done(balanceAfter: Fen(500))),
        ])
    }
}

@Suite struct UplinkScheduleTests {
    @Test func successWaitsTheIntervalAndFailuresBackOffExponentiallyWithJitterUpToTheCap() {
        var schedule = UplinkSchedule(interval: .seconds(30), firstBackoff: .seconds(1), maxBackoff: .seconds(60))
        #expect(schedule.succeeded() == .seconds(30))
        // jitter 1: the ceiling itself; 0: half of it.
        #expect(schedule.failed(jitter: 1) == .seconds(1))
        #expect(schedule.failed(jitter: 1) == .seconds(2))
        #expect(schedule.failed(jitter: 0) == .seconds(2))
        #expect(schedule.failed(jitter: 1) == .seconds(8))
        #expect(schedule.failures == 4)
        for _ in 0..<100 { _ = schedule.failed(jitter: 1) }
        #expect(schedule.failed(jitter: 1) == .seconds(60))
        #expect(schedule.failed(jitter: 0) == .seconds(30))
        // Out-of-range jitter is clamped, never beyond the cap nor under half of it.
        #expect(schedule.failed(jitter: 7) == .seconds(60))
        #expect(schedule.failed(jitter: -3) == .seconds(30))
        #expect(schedule.succeeded() == .seconds(30))
        #expect(schedule.failures == 0)
        #expect(schedule.failed(jitter: 1) == .seconds(1))
    }
}
