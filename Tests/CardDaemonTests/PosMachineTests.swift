import CampusCard
import CardDaemon
import Foundation
import Testing

/// 2026-01-05 12:00:00 UTC plus `seconds`: the injected clock.
func at(_ seconds: TimeInterval) -> Date { Date(timeIntervalSince1970: 1_767_614_400 + seconds) }
/// A context the default policy accepts: blacklist fresh, queue empty.
let freshContext = TerminalContext(queue: .empty, blacklistUpdatedAt: at(-60))

extension PosMachine.Action {
    var notice: PosMachine.Notice? { if case .notify(let notice) = self { notice } else { nil } }
}
extension Array where Element == PosMachine.Action {
    /// The actions that do something (not notices).
    var effects: [PosMachine.Action] { filter { $0.notice == nil } }
    var notices: [PosMachine.Notice] { compactMap(\.notice) }
    var debits: [PosMachine.Action] { filter { if case .debit = $0 { true } else { false } } }
}

@Suite struct PosMachineTests {
    static let utc = TimeZone(identifier: "UTC")!
    static let breakfast = PriceWindow(name: "breakfast", start: 7 * 60, end: 9 * 60, price: Fen(350))

    func machine(windows: [PriceWindow] = [], policy: OfflinePolicy = .defaults) -> PosMachine {
        PosMachine(configuration: .init(saleTimeout: 30, windows: windows, timeZone: Self.utc, policy: policy), context: freshContext)
    }

    @Test func armedSaleDebitsTheNextArrivingCardOnce() {
        var pos = machine()
        #expect(pos.handle(.arm(saleID: "s1", amount: Fen(1_250)), now: at(0)).notices == [.saleArmed(saleID: "s1", amount: Fen(1_250), expires: at(30))])
        let arrival = pos.handle(.cardArrived("04A1"), now: at(1))
        #expect(arrival.effects == [.debit("04A1", amount: Fen(1_250), pin: nil, for: .client(saleID: "s1"))])
        let done = pos.handle(.debitFinished("04A1", .done(balance: Fen(8_750), warnings: [])), now: at(2))
        #expect(done.notices == [.saleDone(.client(saleID: "s1"), card: "04A1", amount: Fen(1_250), balance: Fen(8_750), warnings: [])])
        #expect(done.effects.isEmpty)
        #expect(pos.openSaleID == nil)
    }

    @Test func aCardLeftOnTheReaderIsNeverChargedAgain() {
        var pos = machine()
        _ = pos.handle(.arm(saleID: "s1", amount: Fen(500)), now: at(0))
        _ = pos.handle(.cardArrived("04A1"), now: at(1))
        _ = pos.handle(.debitFinished("04A1", .done(balance: Fen(100), warnings: [])), now: at(2))
        // The next sale while the same card still lies there: the reader reports it again, time passes — no debit.
        _ = pos.handle(.arm(saleID: "s2", amount: Fen(500)), now: at(3))
        #expect(pos.handle(.cardArrived("04A1"), now: at(4)).debits.isEmpty)
        #expect(pos.handle(.tick, now: at(10)).debits.isEmpty)
        // It leaves and comes back: now it is debited, once.
        #expect(pos.handle(.cardLeft("04A1"), now: at(11)).debits.isEmpty)
        #expect(pos.handle(.cardArrived("04A1"), now: at(12)).debits == [.debit("04A1", amount: Fen(500), pin: nil, for: .client(saleID: "s2"))])
    }

    @Test func aCardAlreadyPresentWhenTheSaleIsArmedIsNotDebited() {
        var pos = machine()
        #expect(pos.handle(.cardArrived("04A1"), now: at(0)).effects == [.tap("04A1")])
        _ = pos.handle(.tapFinished("04A1", .balance(Fen(900), warnings: [])), now: at(1))
        #expect(pos.handle(.arm(saleID: "s1", amount: Fen(300)), now: at(2)).debits.isEmpty)
        #expect(pos.handle(.tick, now: at(3)).debits.isEmpty)
        // A different card is debited.
        #expect(pos.handle(.cardArrived("04B2"), now: at(4)).debits == [.debit("04B2", amount: Fen(300), pin: nil, for: .client(saleID: "s1"))])
    }

    @Test func aDifferentCardAfterADebitIsDebitedForTheNextSale() {
        var pos = machine()
        _ = pos.handle(.arm(saleID: "s1", amount: Fen(500)), now: at(0))
        _ = pos.handle(.cardArrived("04A1"), now: at(1))
        _ = pos.handle(.debitFinished("04A1", .done(balance: Fen(100), warnings: [])), now: at(2))
        _ = pos.handle(.arm(saleID: "s2", amount: Fen(700)), now: at(3))
        let swap = pos.handle(.cardArrived("04B2"), now: at(4))
        #expect(swap.notices.prefix(2) == [.cardLeft("04A1"), .cardArrived("04B2")])
        #expect(swap.debits == [.debit("04B2", amount: Fen(700), pin: nil, for: .client(saleID: "s2"))])
    }

    @Test func refusedSaleGoesBackToTheClientWithItsReason() {
        var pos = machine()
        _ = pos.handle(.arm(saleID: "s1", amount: Fen(5_000)), now: at(0))
        _ = pos.handle(.cardArrived("04A1"), now: at(1))
        let refusal = Refusal(.insufficientFunds, "insufficient funds")
        let refused = pos.handle(.debitFinished("04A1", .refused(refusal)), now: at(2))
        #expect(refused.notices == [.saleRefused(.client(saleID: "s1"), card: "04A1", refusal)])
        #expect(pos.openSaleID == nil)
        // The machine does not try again on its own.
        #expect(pos.handle(.tick, now: at(3)).effects.isEmpty)
    }

    @Test func pinRequiredThenThePINDebitsTheSameCardAgain() throws {
        var pos = machine()
        let pin = try PIN("123456")
        _ = pos.handle(.arm(saleID: "s1", amount: Fen(8_000)), now: at(0))
        _ = pos.handle(.cardArrived("04A1"), now: at(1))
        let asked = pos.handle(.debitFinished("04A1", .refused(Refusal(.pinRequired, "PIN"))), now: at(2))
        #expect(asked.notices == [.pinRequired(saleID: "s1", card: "04A1", triesLeft: nil)])
        #expect(asked.effects.isEmpty)
        let retry = pos.handle(.pin(saleID: "s1", pin), now: at(5))
        #expect(retry.effects == [.debit("04A1", amount: Fen(8_000), pin: pin, for: .client(saleID: "s1"))])
        // A wrong PIN: asked again, with the tries left; the next PIN debits again.
        let wrong = pos.handle(.debitFinished("04A1", .refused(Refusal(.pinWrong, "wrong", pinTriesLeft: 2))), now: at(6))
        #expect(wrong.notices == [.pinRequired(saleID: "s1", card: "04A1", triesLeft: 2)])
        #expect(pos.handle(.pin(saleID: "s1", pin), now: at(7)).debits.count == 1)
        let done = pos.handle(.debitFinished("04A1", .done(balance: Fen(0), warnings: [])), now: at(8))
        #expect(done.notices.contains(.saleDone(.client(saleID: "s1"), card: "04A1", amount: Fen(8_000), balance: Fen(0), warnings: [])))
        // Done: another PIN for the sale is rejected, nothing debited.
        let late = pos.handle(.pin(saleID: "s1", pin), now: at(9))
        #expect(late.debits.isEmpty)
        #expect(late.notices.first.map { if case .requestRejected(_, .unknownSale, _) = $0 { true } else { false } } == true)
    }

    @Test func aPINRetryOnlyOnTheSameCard() throws {
        var pos = machine()
        let pin = try PIN("1234")
        _ = pos.handle(.arm(saleID: "s1", amount: Fen(8_000)), now: at(0))
        _ = pos.handle(.cardArrived("04A1"), now: at(1))
        _ = pos.handle(.debitFinished("04A1", .refused(Refusal(.pinRequired, "PIN"))), now: at(2))
        // The card is swapped before the PIN comes: the other card is only read, and the PIN debits nothing.
        #expect(pos.handle(.cardArrived("04B2"), now: at(3)).effects == [.tap("04B2")])
        _ = pos.handle(.tapFinished("04B2", .balance(Fen(50_000), warnings: [])), now: at(4))
        #expect(pos.handle(.pin(saleID: "s1", pin), now: at(5)).debits.isEmpty)
        // The first card comes back: debited with the PIN.
        _ = pos.handle(.cardLeft("04B2"), now: at(6))
        #expect(pos.handle(.cardArrived("04A1"), now: at(7)).debits == [.debit("04A1", amount: Fen(8_000), pin: pin, for: .client(saleID: "s1"))])
    }

    @Test func aPINForAnotherSaleOrNoneAskedIsRejected() throws {
        var pos = machine()
        let pin = try PIN("1234")
        _ = pos.handle(.arm(saleID: "s1", amount: Fen(100)), now: at(0))
        let early = pos.handle(.pin(saleID: "s1", pin), now: at(1))
        #expect(early.notices == [.requestRejected(saleID: "s1", .pinNotRequested, message: "sale s1 is not waiting for a PIN")])
        #expect(pos.handle(.pin(saleID: "other", pin), now: at(1)).notices.count == 1)
        // The card arrives after the stray PINs: a plain debit, no PIN.
        #expect(pos.handle(.cardArrived("04A1"), now: at(2)).debits == [.debit("04A1", amount: Fen(100), pin: nil, for: .client(saleID: "s1"))])
    }

    @Test func timeoutTellsTheClientAndNeverDebits() {
        var pos = machine()
        _ = pos.handle(.arm(saleID: "s1", amount: Fen(500), timeout: 10), now: at(0))
        #expect(pos.nextDeadline == at(10))
        #expect(pos.handle(.tick, now: at(9.9)).notices.isEmpty)
        #expect(pos.handle(.tick, now: at(10)).notices == [.saleTimedOut(saleID: "s1")])
        #expect(pos.handle(.cardArrived("04A1"), now: at(11)).effects == [.tap("04A1")])
    }

    @Test func aCardArrivingAtTheDeadlineIsNotDebited() {
        var pos = machine()
        _ = pos.handle(.arm(saleID: "s1", amount: Fen(500), timeout: 10), now: at(0))
        let arrival = pos.handle(.cardArrived("04A1"), now: at(10))
        #expect(arrival.debits.isEmpty)
        #expect(arrival.notices.first == .saleTimedOut(saleID: "s1"))
        #expect(arrival.effects == [.tap("04A1")])
    }

    @Test func aSaleWaitingForItsPINTimesOut() throws {
        var pos = machine()
        _ = pos.handle(.arm(saleID: "s1", amount: Fen(8_000), timeout: 10), now: at(0))
        _ = pos.handle(.cardArrived("04A1"), now: at(1))
        _ = pos.handle(.debitFinished("04A1", .refused(Refusal(.pinRequired, "PIN"))), now: at(2))
        #expect(pos.nextDeadline == at(12))  // a fresh timeout for typing the PIN
        #expect(pos.handle(.tick, now: at(12)).notices == [.saleTimedOut(saleID: "s1")])
        #expect(pos.handle(.pin(saleID: "s1", try PIN("1234")), now: at(13)).debits.isEmpty)
    }

    @Test func aDebitInFlightIsNeitherTimedOutNorCancelled() {
        var pos = machine()
        _ = pos.handle(.arm(saleID: "s1", amount: Fen(500), timeout: 10), now: at(0))
        _ = pos.handle(.cardArrived("04A1"), now: at(9))
        #expect(pos.nextDeadline == nil)
        #expect(pos.handle(.tick, now: at(20)).notices.isEmpty)
        #expect(pos.handle(.cancel(saleID: "s1"), now: at(21)).notices == [.requestRejected(saleID: "s1", .debitInProgress, message: "sale s1 is being debited: wait for its result")])
        #expect(pos.handle(.debitFinished("04A1", .done(balance: Fen(1), warnings: [])), now: at(22)).notices.count == 1)
    }

    @Test func cancelDisarms() {
        var pos = machine()
        _ = pos.handle(.arm(saleID: "s1", amount: Fen(500)), now: at(0))
        #expect(pos.handle(.cancel(saleID: "s1"), now: at(1)).notices == [.saleCancelled(saleID: "s1")])
        #expect(pos.handle(.cardArrived("04A1"), now: at(2)).effects == [.tap("04A1")])
        #expect(pos.handle(.cancel(saleID: "s1"), now: at(3)).notices.count == 1)  // unknown now
    }

    @Test func aSecondArmIsRefusedWhileOneIsOpen() {
        var pos = machine()
        _ = pos.handle(.arm(saleID: "s1", amount: Fen(500)), now: at(0))
        let second = pos.handle(.arm(saleID: "s2", amount: Fen(900)), now: at(1))
        #expect(second.notices == [.requestRejected(saleID: "s2", .saleAlreadyArmed, message: "sale s1 is still open: finish or cancel it first")])
        #expect(pos.handle(.cardArrived("04A1"), now: at(2)).debits == [.debit("04A1", amount: Fen(500), pin: nil, for: .client(saleID: "s1"))])
    }

    @Test func armRejectsZeroAmountAndBadTimeout() {
        var pos = machine()
        #expect(pos.handle(.arm(saleID: "s1", amount: .zero), now: at(0)).notices.count == 1)
        #expect(pos.handle(.arm(saleID: "s1", amount: Fen(1), timeout: 0), now: at(0)).notices.count == 1)
        #expect(pos.openSaleID == nil)
    }

    @Test func fixedPriceWindowDebitsEveryArrivingCardWithoutArm() {
        var pos = machine(windows: [Self.breakfast])
        let morning = at(-5 * 3_600 + 30 * 60)  // 07:30 UTC
        #expect(pos.handle(.cardArrived("04A1"), now: morning).effects == [.debit("04A1", amount: Fen(350), pin: nil, for: .window(name: "breakfast"))])
        let done = pos.handle(.debitFinished("04A1", .done(balance: Fen(650), warnings: [])), now: morning)
        #expect(done.notices == [.saleDone(.window(name: "breakfast"), card: "04A1", amount: Fen(350), balance: Fen(650), warnings: [])])
        // The same card left lying there is not charged again; the next card is.
        #expect(pos.handle(.tick, now: morning + 5).debits.isEmpty)
        #expect(pos.handle(.cardArrived("04B2"), now: morning + 6).debits.count == 1)
        // After the window (09:00): a tap.
        var later = machine(windows: [Self.breakfast])
        #expect(later.handle(.cardArrived("04A1"), now: at(-3 * 3_600)).effects == [.tap("04A1")])
    }

    @Test func theServicesFixedPricesReplaceAWindowsPriceByName() {
        let lunch = PriceWindow(name: "lunch", start: 11 * 60, end: 13 * 60, price: Fen(800))
        var pos = machine(windows: [Self.breakfast, lunch])
        // Only the named window changes; an unknown name and a price of zero change nothing.
        let changed = pos.apply(fixedPrices: ["breakfast": Fen(400), "dinner": Fen(900), "lunch": .zero])
        #expect(changed == ["breakfast"])
        #expect(pos.configuration.windows.map(\.price) == [Fen(400), Fen(800)])
        let morning = at(-5 * 3_600 + 30 * 60)  // 07:30 UTC
        #expect(pos.handle(.cardArrived("04A1"), now: morning).debits == [.debit("04A1", amount: Fen(400), pin: nil, for: .window(name: "breakfast"))])
        // The same parameters again change nothing.
        let again = pos.apply(fixedPrices: ["breakfast": Fen(400)])
        #expect(again.isEmpty)
    }

    @Test func anArmedSaleTakesPrecedenceOverTheWindow() {
        var pos = machine(windows: [Self.breakfast])
        let morning = at(-4 * 3_600)  // 08:00 UTC
        _ = pos.handle(.arm(saleID: "s1", amount: Fen(1_000)), now: morning)
        #expect(pos.handle(.cardArrived("04A1"), now: morning).debits == [.debit("04A1", amount: Fen(1_000), pin: nil, for: .client(saleID: "s1"))])
    }

    @Test func undeterminedIsReportedAndDecidedAtTheCardsNextTap() {
        var pos = machine()
        _ = pos.handle(.arm(saleID: "s1", amount: Fen(500)), now: at(0))
        _ = pos.handle(.cardArrived("04A1"), now: at(1))
        let lost = pos.handle(.debitFinished("04A1", .undetermined("card left")), now: at(2))
        #expect(lost.notices == [.saleUndetermined(.client(saleID: "s1"), card: "04A1", message: "card left")])
        #expect(lost.effects.isEmpty)  // never retried on its own
        _ = pos.handle(.cardLeft("04A1"), now: at(3))
        #expect(pos.handle(.cardArrived("04A1"), now: at(4)).effects == [.tap("04A1")])
        let decision = EarlierDecision(terminalSequence: 7, kind: "purse-debit", amount: Fen(500), recordedAt: at(1), outcome: .done(balanceAfter: Fen(100)))
        let tapped = pos.handle(.tapFinished("04A1", .balance(Fen(100), warnings: []), decisions: [decision]), now: at(5))
        #expect(tapped.notices == [.earlierDecided(card: "04A1", [decision], saleIDs: ["s1"]), .balance(card: "04A1", Fen(100), warnings: [])])
    }

    @Test func blacklistedCardIsRefusedAndLocked() {
        var pos = machine()
        _ = pos.handle(.arm(saleID: "s1", amount: Fen(500)), now: at(0))
        let arrival = pos.handle(.cardArrived("04A1", blacklisted: BlacklistHit(status: .lost)), now: at(1))
        #expect(arrival.effects == [.lock("04A1", .lost)])
        #expect(arrival.debits.isEmpty)
        #expect(arrival.notices.contains { if case .saleRefused(.client("s1"), "04A1", let refusal) = $0 { refusal.code == .blacklisted } else { false } })
        #expect(pos.handle(.lockFinished("04A1", .locked), now: at(2)).notices == [.cardLocked(card: "04A1", .lost)])
        // Without a sale: refused and locked too.
        var idle = machine()
        #expect(idle.handle(.cardArrived("04B2", blacklisted: BlacklistHit(status: .frozen)), now: at(0)).effects == [.lock("04B2", .frozen)])
    }

    @Test func aBlacklistedCardIsNotDebitedEvenForItsPINRetry() throws {
        var pos = machine()
        let pin = try PIN("1234")
        _ = pos.handle(.arm(saleID: "s1", amount: Fen(8_000)), now: at(0))
        _ = pos.handle(.cardArrived("04A1"), now: at(1))
        _ = pos.handle(.debitFinished("04A1", .refused(Refusal(.pinRequired, "PIN"))), now: at(2))
        _ = pos.handle(.pin(saleID: "s1", pin), now: at(2.5))  // in flight: the debit with the PIN
        _ = pos.handle(.debitFinished("04A1", .refused(Refusal(.pinWrong, "wrong", pinTriesLeft: 2))), now: at(3))
        _ = pos.handle(.cardLeft("04A1"), now: at(4))
        _ = pos.handle(.pin(saleID: "s1", pin), now: at(5))
        // Reported lost meanwhile: it comes back blacklisted.
        let back = pos.handle(.cardArrived("04A1", blacklisted: BlacklistHit(status: .lost)), now: at(6))
        #expect(back.effects == [.lock("04A1", .lost)])
        #expect(back.notices.contains { if case .saleRefused(.client("s1"), _, let refusal) = $0 { refusal.code == .blacklisted } else { false } })
        #expect(pos.openSaleID == nil)
    }

    @Test func offlinePolicyRefusesBeforeAnyDebit() {
        var pos = machine(policy: OfflinePolicy(maxDebit: Fen(2_000)))
        _ = pos.handle(.arm(saleID: "s1", amount: Fen(2_001)), now: at(0))
        let arrival = pos.handle(.cardArrived("04A1"), now: at(1))
        #expect(arrival.debits.isEmpty)
        #expect(arrival.notices.contains { if case .saleRefused(_, _, let refusal) = $0 { refusal.code == .offlineAmount } else { false } })
        // A full queue refuses the next sale, a context update lets it through.
        _ = pos.handle(.context(TerminalContext(queue: QueueSummary(count: 500, total: Fen(1), oldest: at(0)), blacklistUpdatedAt: at(0))), now: at(2))
        _ = pos.handle(.arm(saleID: "s2", amount: Fen(100)), now: at(3))
        _ = pos.handle(.cardArrived("04B2"), now: at(4))
        #expect(pos.openSaleID == nil)
        _ = pos.handle(.context(freshContext), now: at(5))
        _ = pos.handle(.arm(saleID: "s3", amount: Fen(100)), now: at(6))
        #expect(pos.handle(.cardArrived("04C3"), now: at(7)).debits.count == 1)
    }

    @Test func resultsForOtherCardsOrUnaskedAreIgnored() {
        var pos = machine()
        _ = pos.handle(.arm(saleID: "s1", amount: Fen(500)), now: at(0))
        // A debit result nobody asked for changes nothing.
        #expect(pos.handle(.debitFinished("04A1", .done(balance: Fen(1), warnings: [])), now: at(1)).notices.isEmpty)
        #expect(pos.openSaleID == "s1")
    }
}
