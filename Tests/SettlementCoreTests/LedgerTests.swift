import CampusCard
import Crypto
import Foundation
import SettlementCore
import Testing

/// A record as a terminal uploads it: `done` fills the figures a card would show.
func record(_ kind: TransactionIntent.Kind, amount: Fen, before: Fen, counter: UInt16, outcome: RecordOutcome = .done, sequence: UInt32 = 1,
            terminal: TerminalID = 3, uid: String = "A1B2C3D4", at seconds: Int = 1_750_000_000) -> TerminalRecord {
    let after = Ledger.expectedBalanceAfter(kind: kind, amount: amount, balanceBefore: before)
    return TerminalRecord(terminalID: terminal, terminalSequence: sequence, kind: kind, cardUID: uid, cardSerial: nil, amount: amount,
                          balanceBefore: before, counterBefore: counter, outcome: outcome,
                          balanceAfter: outcome == .done ? after : nil, counterAfter: outcome == .done ? counter &+ 1 : nil,
                          createdAt: Date(timeIntervalSince1970: TimeInterval(seconds)))
}

func book(status: CardStatus = .active, issued: Bool = true) -> CardBook {
    CardBook(uid: "A1B2C3D4", card: issued ? Card(serial: 1001, uid: "A1B2C3D4", accountID: 7, status: status, purseMirror: 0, purseCounter: nil,
                                                   issuedAt: Date(timeIntervalSince1970: 0)) : nil)
}

@Suite struct CounterWindowTests {
    @Test func positionsAndInsertion() {
        var window = CounterWindow()
        #expect(window.position(of: 500) == .newer(gap: false))
        window.insert(10)
        #expect(window.position(of: 10) == .repeated)
        #expect(window.position(of: 11) == .newer(gap: false))
        #expect(window.position(of: 12) == .newer(gap: true))
        #expect(window.position(of: 9) == .lateUnseen)
        window.insert(20)
        #expect(window.position(of: 10) == .repeated)
        #expect(window.position(of: 15) == .lateUnseen)
        window.insert(15)
        #expect(window.position(of: 15) == .repeated)
        window.insert(20 + 63)
        #expect(window.position(of: 20) == .repeated)
        #expect(window.position(of: 19) == .stale)
        #expect(window.position(of: 10) == .stale)
        window.insert(19)  // stale: nothing changes
        #expect(window.position(of: 19) == .stale)
    }

    @Test func wrapsModulo65536() {
        var window = CounterWindow()
        window.insert(65_534)
        #expect(window.position(of: 65_535) == .newer(gap: false))
        #expect(window.position(of: 0) == .newer(gap: true))
        window.insert(65_535)
        window.insert(0)
        #expect(window.highest == 0)
        #expect(window.position(of: 65_534) == .repeated)
        #expect(window.position(of: 1) == .newer(gap: false))
    }

    @Test func aJumpPastTheWindowForgetsTheOldCounters() {
        var window = CounterWindow(highest: 5, seen: 1)
        window.insert(200)
        #expect(window.seen == 1)
        #expect(window.position(of: 199) == .lateUnseen)
        #expect(window.position(of: 5) == .stale)
    }
}

@Suite struct LedgerTests {
    @Test func businessDayIsUTCPlus8() {
        // 2025-06-15 15:59:59 UTC is 23:59:59 in Beijing; a second later it is the 16th there.
        #expect(Ledger.businessDay(of: Date(timeIntervalSince1970: 1_750_003_199)) == "2025-06-15")
        #expect(Ledger.businessDay(of: Date(timeIntervalSince1970: 1_750_003_200)) == "2025-06-16")
        #expect(Ledger.businessDay(of: Date(timeIntervalSince1970: 0)) == "1970-01-01")
        #expect(Ledger.businessDay(of: Date(timeIntervalSince1970: 951_782_400)) == "2000-02-29")  // 2000-02-28 16:00 UTC
    }

    @Test func purseDebitDoneBooksPurseToMerchantAndMovesTheMirror() {
        var card = book()
        let decision = Ledger.apply(record(.purseDebit, amount: 250, before: 1000, counter: 4), merchant: "canteen", to: &card)
        #expect(decision.booking == .booked)
        #expect(decision.flags.isEmpty)
        #expect(decision.movements.count == 1)
        let movement = decision.movements[0]
        #expect(movement.from == "purse:1001" && movement.to == "merchant:canteen" && movement.amount == 250)
        #expect(movement.merchant == "canteen" && movement.cardSide == .from && movement.cardSerial == 1001)
        #expect(movement.entries(movementID: 1, bookedAt: Date()).map(\.amount.rawValue).reduce(0, +) == 0)
        #expect(card.card?.purseMirror == 750 && card.card?.purseCounter == 5)
        #expect(card.purse.window.highest == 5)
    }

    @Test(arguments: [
        (TransactionIntent.Kind.waterDebit, "water:1001", "merchant:canteen"),
        (.purseLoad, "cash", "purse:1001"),
        (.purseSubsidy, "subsidy", "purse:1001"),
        (.waterSettle, "account:7", "water:1001"),
        (.waterRefund, "water:1001", "account:7"),
        (.waterReset, "water-reset", "water:1001"),
    ])
    func eachKindBooksItsPair(kind: TransactionIntent.Kind, from: String, to: String) {
        var card = book()
        let decision = Ledger.apply(record(kind, amount: 300, before: 500, counter: 0), merchant: "canteen", to: &card, loaders: [3])
        #expect(decision.booking == .booked)
        #expect(decision.movements.map { [$0.from, $0.to] } == [[from, to]])
        #expect(decision.movements.first?.amount == 300)
        #expect(decision.flags == (kind == .waterReset ? ["water-reset"] : []))
        #expect(decision.raised.map(\.code) == (kind == .waterReset ? ["water-reset"] : []))
    }

    @Test func notDoneBooksNothing() {
        var card = book()
        let decision = Ledger.apply(record(.purseDebit, amount: 250, before: 1000, counter: 4, outcome: .notDone), merchant: "m", to: &card)
        #expect(decision.booking == .nothing && decision.movements.isEmpty && decision.raised.isEmpty)
        #expect(card.card?.purseCounter == nil)
    }

    @Test func figuresThatDisagreeAreFlaggedNotBooked() {
        var card = book()
        var wrong = record(.purseDebit, amount: 250, before: 1000, counter: 4)
        wrong.balanceAfter = 800
        let decision = Ledger.apply(wrong, merchant: "m", to: &card)
        #expect(decision.booking == .flagged && decision.flags == ["amount-mismatch"])
        #expect(decision.movements.isEmpty && decision.raised.map(\.code) == ["amount-mismatch"])
        #expect(card.purse.window.highest == nil && card.card?.purseCounter == nil)
        var load = record(.purseLoad, amount: 250, before: 1000, counter: 4)
        load.balanceAfter = 750  // a load that lowered the balance
        #expect(Ledger.apply(load, merchant: "m", to: &card).flags == ["amount-mismatch"])
        // A debit of a negative amount: its figures add up, but the card's balance rose.
        let negative = Ledger.apply(record(.purseDebit, amount: -250, before: 1000, counter: 4, sequence: 3), merchant: "m", to: &card)
        #expect(negative.booking == .flagged && negative.flags == ["amount-mismatch"] && negative.movements.isEmpty)
        #expect(card.purse.window.highest == nil && card.card?.purseMirror == 0 && card.card?.purseCounter == nil)
    }

    @Test func counterRepeatStaleGapAndLateUpload() {
        var card = book()
        #expect(Ledger.apply(record(.purseDebit, amount: 10, before: 1000, counter: 99, sequence: 1), merchant: "m", to: &card).booking == .booked)
        let repeatDecision = Ledger.apply(record(.purseDebit, amount: 10, before: 1000, counter: 99, sequence: 2), merchant: "m", to: &card)
        #expect(repeatDecision.booking == .flagged && repeatDecision.flags == ["counter-repeat"] && repeatDecision.movements.isEmpty)
        let gap = Ledger.apply(record(.purseDebit, amount: 10, before: 800, counter: 109, sequence: 3), merchant: "m", to: &card)
        #expect(gap.booking == .booked && gap.flags == ["counter-gap"] && gap.movements.count == 1)
        #expect(gap.raised.map(\.code) == ["counter-gap"])
        let late = Ledger.apply(record(.purseDebit, amount: 10, before: 990, counter: 100, sequence: 4), merchant: "m", to: &card)
        #expect(late.booking == .booked && late.flags.isEmpty)
        // The mirror stays at the newest counter (110) though the late record came after it.
        #expect(card.card?.purseCounter == 110 && card.card?.purseMirror == 790)
        _ = Ledger.apply(record(.purseDebit, amount: 10, before: 500, counter: 200, sequence: 5), merchant: "m", to: &card)
        let stale = Ledger.apply(record(.purseDebit, amount: 10, before: 990, counter: 120, sequence: 6), merchant: "m", to: &card)
        #expect(stale.booking == .flagged && stale.flags == ["counter-stale"] && stale.movements.isEmpty)
    }

    @Test func purseAndWaterCountersAreSeparate() {
        var card = book()
        _ = Ledger.apply(record(.purseDebit, amount: 10, before: 1000, counter: 5), merchant: "m", to: &card)
        let water = Ledger.apply(record(.waterDebit, amount: 10, before: 1000, counter: 5, sequence: 2), merchant: "m", to: &card)
        #expect(water.booking == .booked && water.flags.isEmpty)
    }

    @Test func unknownAndCancelledCardsBookToSuspense() {
        var unknown = book(issued: false)
        let decision = Ledger.apply(record(.purseDebit, amount: 300, before: 1000, counter: 1), merchant: "m", to: &unknown)
        #expect(decision.booking == .suspense && decision.flags == ["unknown-card"])
        #expect(decision.movements.map { [$0.from, $0.to] } == [["suspense", "merchant:m"]])
        var cancelled = book(status: .cancelled)
        let load = Ledger.apply(record(.purseLoad, amount: 300, before: 1000, counter: 1), merchant: "m", to: &cancelled, loaders: [3])
        #expect(load.booking == .suspense && load.flags == ["cancelled-card"])
        #expect(load.movements.map { [$0.from, $0.to] } == [["cash", "suspense"]])
        #expect(load.movements.first?.cardSerial == 1001)
        // A lost card is still the holder's: booked normally.
        var lost = book(status: .lost)
        #expect(Ledger.apply(record(.purseDebit, amount: 1, before: 10, counter: 1), merchant: "m", to: &lost).booking == .booked)
    }

    @Test func undeterminedDecidedDoneByTheNextRecordInEitherOrder() {
        let torn = record(.purseDebit, amount: 300, before: 1000, counter: 7, outcome: .undetermined, sequence: 1)
        let next = record(.purseDebit, amount: 100, before: 700, counter: 8, sequence: 2)
        // Torn first.
        var card = book()
        #expect(Ledger.apply(torn, merchant: "m", to: &card).booking == .pending)
        #expect(card.purse.pending.count == 1)
        let decision = Ledger.apply(next, merchant: "m", to: &card)
        #expect(decision.booking == .booked)
        #expect(decision.decided == [PendingDecision(terminalID: 3, terminalSequence: 1, booking: .booked, flags: [])])
        #expect(decision.movements.map(\.amount) == [300, 100])
        #expect(card.purse.pending.isEmpty && card.card?.purseMirror == 600 && card.card?.purseCounter == 9)
        // Decider first.
        var other = book()
        let first = Ledger.apply(next, merchant: "m", to: &other)
        #expect(first.booking == .booked && first.flags.isEmpty)
        let late = Ledger.apply(torn, merchant: "m", to: &other)
        #expect(late.booking == .booked && late.movements.map(\.amount) == [300] && late.decided.isEmpty)
        #expect(other.purse.pending.isEmpty && other.card?.purseMirror == 600)
    }

    @Test func undeterminedDecidedNotDoneInEitherOrder() {
        let torn = record(.purseDebit, amount: 300, before: 1000, counter: 7, outcome: .undetermined, sequence: 1)
        let retry = record(.purseDebit, amount: 300, before: 1000, counter: 7, sequence: 2)  // the same card state: the torn one did not happen
        var card = book()
        _ = Ledger.apply(torn, merchant: "m", to: &card)
        let decision = Ledger.apply(retry, merchant: "m", to: &card)
        #expect(decision.decided == [PendingDecision(terminalID: 3, terminalSequence: 1, booking: .nothing, flags: [])])
        #expect(decision.movements.map(\.amount) == [300])
        var other = book()
        _ = Ledger.apply(retry, merchant: "m", to: &other)
        let late = Ledger.apply(torn, merchant: "m", to: &other)
        #expect(late.booking == .nothing && late.movements.isEmpty && other.purse.pending.isEmpty)
    }

    @Test func undeterminedStaysPendingWhenTheReadsDoNotContinueItsBalance() {
        let torn = record(.purseDebit, amount: 300, before: 1000, counter: 7, outcome: .undetermined, sequence: 1)
        // The next counter, but not with the balance the torn debit would leave (700): it does not decide it done.
        let next = record(.purseDebit, amount: 100, before: 900, counter: 8, sequence: 2)
        // The torn record's own counter, but with another balance than it read: it does not decide it undone either.
        let sameCounter = record(.purseDebit, amount: 100, before: 950, counter: 7, outcome: .notDone, sequence: 3)
        var card = book()
        #expect(Ledger.apply(torn, merchant: "m", to: &card).booking == .pending)
        let decision = Ledger.apply(next, merchant: "m", to: &card)
        #expect(decision.booking == .booked && decision.decided.isEmpty && decision.movements.map(\.amount) == [100])
        #expect(Ledger.apply(sameCounter, merchant: "m", to: &card).decided.isEmpty)
        #expect(card.purse.pending.map(\.terminalSequence) == [1])
        #expect(card.card?.purseMirror == 800 && card.card?.purseCounter == 9)
        // The other order: the torn record arrives after both reads and stays pending, booking nothing.
        var other = book()
        _ = Ledger.apply(next, merchant: "m", to: &other)
        _ = Ledger.apply(sameCounter, merchant: "m", to: &other)
        let late = Ledger.apply(torn, merchant: "m", to: &other)
        #expect(late.booking == .pending && late.movements.isEmpty && other.purse.pending.count == 1)
    }

    @Test func undeterminedRecordsPastTheWalletsLimitAreListedForAnOperator() {
        // A terminal that uploads torn debits with balances no read will continue (an attacker's walk-through uploaded
        // 67,000: each record walked them all, and the book's coding kept 65,535).
        var card = book()
        for index in 0..<WalletBook.pendingKept {
            let torn = record(.purseDebit, amount: 1, before: Fen(2000 + index), counter: 5, outcome: .undetermined, sequence: UInt32(index + 1))
            #expect(Ledger.apply(torn, merchant: "m", to: &card).booking == .pending)
        }
        let over = record(.purseDebit, amount: 1, before: 1000, counter: 5, outcome: .undetermined, sequence: 999)
        let decision = Ledger.apply(over, merchant: "m", to: &card)
        #expect(decision.booking == .flagged && decision.flags == ["undetermined-over-limit"] && decision.movements.isEmpty)
        #expect(decision.raised.map(\.code) == ["undetermined-over-limit"] && decision.raised.first?.terminalSequence == 999)
        #expect(card.purse.pending.count == WalletBook.pendingKept)
        // The ones held are still decided by the card's reads.
        let next = Ledger.apply(record(.purseDebit, amount: 1, before: 1999 + 7, counter: 6, sequence: 1000), merchant: "m", to: &card)
        #expect(next.decided.map(\.terminalSequence) == [8])
        #expect(card.purse.pending.count == WalletBook.pendingKept - 1)
        // A record decided at once by the reads already seen is not held, so the limit does not refuse it.
        let decidable = record(.purseDebit, amount: 1, before: 1999 + 7, counter: 6, outcome: .undetermined, sequence: 1001)
        #expect(Ledger.apply(decidable, merchant: "m", to: &card).booking == .nothing)
    }

    @Test func undeterminedLeftUnresolvedIsFlaggedOnceAndStaysPending() {
        let torn = record(.purseDebit, amount: 300, before: 1000, counter: 7, outcome: .undetermined, sequence: 1)
        var card = book()
        _ = Ledger.apply(torn, merchant: "m", to: &card)
        // A later counter whose balance fits neither outcome.
        let later = Ledger.apply(record(.purseDebit, amount: 5, before: 444, counter: 12, sequence: 2), merchant: "m", to: &card)
        #expect(later.raised.map(\.code).contains("undetermined-unresolved"))
        #expect(later.decided.isEmpty && card.purse.pending.count == 1 && card.purse.pending[0].unresolvedFlagged)
        let again = Ledger.apply(record(.purseDebit, amount: 5, before: 439, counter: 13, sequence: 3), merchant: "m", to: &card)
        #expect(!again.raised.map(\.code).contains("undetermined-unresolved"))
        // Arriving after such a record: flagged at once.
        var other = book()
        _ = Ledger.apply(record(.purseDebit, amount: 5, before: 444, counter: 12, sequence: 2), merchant: "m", to: &other)
        let late = Ledger.apply(torn, merchant: "m", to: &other)
        #expect(late.booking == .pending && late.flags == ["undetermined-unresolved"])
    }

    @Test func anOnlineLoadsUploadedRecordBooksNothing() {
        var card = book()
        let already = Ledger.confirmOnlineLoad(reference: "L1", amount: 5000, balanceAfter: 6000, counterAfter: 3, in: &card)
        #expect(!already && card.card?.purseMirror == 6000 && card.card?.purseCounter == 3)
        let decision = Ledger.apply(record(.purseLoad, amount: 5000, before: 1000, counter: 2), merchant: "office", to: &card)
        #expect(decision.booking == .nothing && decision.movements.isEmpty && decision.flags.isEmpty)
        // The other order: the uploaded record booked the counter first.
        var other = book()
        _ = Ledger.apply(record(.purseLoad, amount: 5000, before: 1000, counter: 2), merchant: "office", to: &other)
        #expect(Ledger.confirmOnlineLoad(reference: "L1", amount: 5000, balanceAfter: 6000, counterAfter: 3, in: &other))
        // An uploaded load of another amount at the online load's counter is not that load: a repeated counter.
        var third = book()
        _ = Ledger.confirmOnlineLoad(reference: "L1", amount: 5000, balanceAfter: 6000, counterAfter: 3, in: &third)
        let odd = Ledger.apply(record(.purseLoad, amount: 4000, before: 2000, counter: 2), merchant: "office", to: &third)
        #expect(odd.booking == .flagged && odd.flags == ["counter-repeat"] && odd.movements.isEmpty)
    }

    @Test func aRecordOfAnUnconfirmedOnlineLoadIsBookedFromSuspenseNotCash() {
        let load = record(.purseLoad, amount: 500, before: 100, counter: 3, sequence: 7, terminal: 4)
        let reference = OnlineLoadReference.named(terminal: 4, sequence: 7)
        #expect(reference == "T4-load-t4-s7")
        #expect(OnlineLoadReference.record(named: reference).map { [Int($0.terminal.rawValue), Int($0.sequence)] } == [4, 7])
        #expect(OnlineLoadReference.record(named: "T4-L-1") == nil && OnlineLoadReference.record(named: "T5-load-t4-s7") == nil)
        #expect(Ledger.loadReferences(of: [load, record(.purseDebit, amount: 5, before: 600, counter: 4)], books: []) == [reference])
        for phase in [LoadState.Phase.prepared, .disputed, .reversed, .confirmed] {
            var card = book()
            let decision = Ledger.apply(load, merchant: "office", to: &card, loads: [reference: phase])
            #expect(decision.booking == .suspense && decision.flags == ["load-unconfirmed"], "\(phase)")
            #expect(decision.movements.map { [$0.from, $0.to] } == [[Ledger.suspense, "purse:1001"]], "\(phase)")
            #expect(decision.raised.map(\.code) == ["load-unconfirmed"] && decision.raised.first?.terminalSequence == 7)
            // The counter rules still apply: the window and the mirror move.
            #expect(card.card?.purseMirror == 600 && card.card?.purseCounter == 4)
        }
        // No online load under its reference: an office load, from cash.
        var office = book()
        #expect(Ledger.apply(load, merchant: "office", to: &office, loads: [:], loaders: [4]).movements.map(\.from) == [Ledger.cash])
        // Confirmed with it (the link): nothing, whatever the phase map says.
        var linked = book()
        _ = Ledger.confirmOnlineLoad(reference: reference, amount: 500, balanceAfter: 600, counterAfter: 4, in: &linked)
        let nothing = Ledger.apply(load, merchant: "office", to: &linked, loads: [reference: .confirmed])
        #expect(nothing.booking == .nothing && nothing.movements.isEmpty && nothing.raised.isEmpty)
        // A torn record of the load decided done later is booked from suspense too.
        var torn = book()
        let pending = Ledger.apply(record(.purseLoad, amount: 500, before: 100, counter: 3, outcome: .undetermined, sequence: 7, terminal: 4),
                                   merchant: "office", to: &torn, loads: [reference: .prepared])
        #expect(pending.booking == .pending)
        let next = record(.purseDebit, amount: 5, before: 600, counter: 4)
        #expect(Ledger.loadReferences(of: [next], books: [torn]) == [reference])
        let decided = Ledger.apply(next, merchant: "m", to: &torn, loads: [reference: .prepared])
        #expect(decided.decided.map(\.booking) == [.suspense])
        #expect(decided.movements.map(\.from) == [Ledger.suspense, "purse:1001"])
    }

    /// Each credit: its station's pair, and the pair a terminal that is no station gets (suspense for the side that
    /// is not the card's), with the text its flag must carry.
    static let credits: [(TransactionIntent.Kind, station: [String], other: [String], says: String)] = [
        (.purseLoad, ["cash", "purse:1001"], ["suspense", "purse:1001"], "not cash"),
        (.purseSubsidy, ["subsidy", "purse:1001"], ["suspense", "purse:1001"], "not subsidy"),
        (.waterSettle, ["account:7", "water:1001"], ["suspense", "water:1001"], "not the holder's account"),
        (.waterRefund, ["water:1001", "account:7"], ["water:1001", "suspense"], "to suspense, not the holder's account"),
        (.waterReset, ["water-reset", "water:1001"], ["suspense", "water:1001"], "from suspense"),
    ]

    @Test(arguments: LedgerTests.credits)
    func aCreditFromATerminalThatIsNoStationIsBookedAgainstSuspense(credit: (TransactionIntent.Kind, station: [String], other: [String], says: String)) {
        let kind = credit.0
        let amount: Fen = kind == .waterRefund ? 50 : 2_000_000
        let load = record(kind, amount: amount, before: 100, counter: 3, sequence: 9, terminal: 5)
        var card = book()
        let decision = Ledger.apply(load, merchant: "canteen", to: &card, loaders: [3, 4])
        let extra = kind == .waterReset ? ["water-reset"] : []
        #expect(decision.booking == .suspense && decision.flags == ["credit-not-permitted"] + extra)
        #expect(decision.movements.map { [$0.from, $0.to] } == [credit.other])
        let flag = decision.raised.first
        #expect(decision.raised.map(\.code) == ["credit-not-permitted"] + extra && flag?.terminalID == 5 && flag?.terminalSequence == 9)
        #expect(flag?.message.contains("terminal 5 is no station") == true && flag?.message.contains(credit.says) == true, "\(flag?.message ?? "")")
        // The card's side moved: the counter rules and the mirror move as for any done record.
        if kind == .purseLoad || kind == .purseSubsidy { #expect(card.card?.purseMirror == 2_000_100 && card.card?.purseCounter == 4) }
        // A station's: the kind's own pair.
        var station = book()
        #expect(Ledger.apply(load, merchant: "office", to: &station, loaders: [5]).movements.map { [$0.from, $0.to] } == [credit.station])
        // Neither a debit's terminal nor a not-done credit's is asked about.
        let others = [record(.purseDebit, amount: 5, before: 600, counter: 4, terminal: 6),
                      record(.waterDebit, amount: 5, before: 600, counter: 4, terminal: 8),
                      record(kind, amount: 5, before: 600, counter: 4, outcome: .notDone, terminal: 7)]
        #expect(Ledger.loaderCandidates(of: [load] + others, books: []) == [5])
    }

    @Test func aPurseRecordThatDoesNotStartFromTheBookedBalanceIsFlagged() {
        var card = book()
        _ = Ledger.apply(record(.purseDebit, amount: 100, before: 5000, counter: 10, sequence: 1), merchant: "m", to: &card)
        #expect(card.card?.purseMirror == 4900 && card.card?.purseCounter == 11)
        // The next counter from the booked balance: nothing to say.
        let next = Ledger.apply(record(.purseDebit, amount: 100, before: 4900, counter: 11, sequence: 2), merchant: "m", to: &card)
        #expect(next.booking == .booked && next.flags.isEmpty)
        // The next counter from a balance the service never booked (a raised card, a forged record): booked, flagged.
        let raised = Ledger.apply(record(.purseDebit, amount: 800_000, before: 900_000, counter: 12, sequence: 3), merchant: "m", to: &card)
        #expect(raised.booking == .booked && raised.flags == ["balance-mismatch"])
        #expect(raised.raised.map(\.code) == ["balance-mismatch"] && raised.raised.first?.message.contains("showed ¥9000.00 at counter 12, where the service last booked ¥48.00") == true,
                "\(raised.raised.first?.message ?? "")")
        // A late record (an older counter) or one after a gap cannot be checked against the mirror: no flag.
        let late = Ledger.apply(record(.purseDebit, amount: 1, before: 77, counter: 9, sequence: 4), merchant: "m", to: &card)
        #expect(!late.flags.contains("balance-mismatch"))
        let afterGap = Ledger.apply(record(.purseDebit, amount: 1, before: 77, counter: 40, sequence: 5), merchant: "m", to: &card)
        #expect(afterGap.flags == ["counter-gap"])
    }

    @Test func aTornWaterSettlementDecidedByAControllersReadIsBookedByItsStationsRole() {
        let torn = record(.waterSettle, amount: 500, before: 100, counter: 3, outcome: .undetermined, sequence: 7, terminal: 4)
        let read = record(.waterDebit, amount: 5, before: 600, counter: 4, terminal: 3)
        var card = book()
        #expect(Ledger.apply(torn, merchant: "office", to: &card, loaders: [4]).booking == .pending)
        #expect(Ledger.loaderCandidates(of: [read], books: [card]) == [4])
        let decision = Ledger.apply(read, merchant: "canteen", to: &card, loaders: [4])
        #expect(decision.decided.map(\.booking) == [.booked] && decision.decided.first?.flags == [])
        #expect(decision.movements.map { [$0.from, $0.to] } == [["account:7", "water:1001"], ["water:1001", "merchant:canteen"]])
    }

    @Test func aTornLoadDecidedByAnotherTerminalsReadIsBookedByItsOwnTerminalsRole() {
        let torn = record(.purseLoad, amount: 500, before: 100, counter: 3, outcome: .undetermined, sequence: 7, terminal: 4)
        let read = record(.purseDebit, amount: 5, before: 600, counter: 4, terminal: 3)
        for (loaders, from, flags) in [([TerminalID(4)], Ledger.cash, [String]()), ([3], Ledger.suspense, ["credit-not-permitted"])] {
            var card = book()
            #expect(Ledger.apply(torn, merchant: "office", to: &card, loaders: Set(loaders)).booking == .pending)
            #expect(Ledger.loaderCandidates(of: [read], books: [card]) == [4])
            let decision = Ledger.apply(read, merchant: "canteen", to: &card, loaders: Set(loaders))
            #expect(decision.decided.map(\.booking) == [flags.isEmpty ? .booked : .suspense] && decision.decided.first?.flags == flags)
            #expect(decision.movements.map { [$0.from, $0.to] } == [[from, "purse:1001"], ["purse:1001", "merchant:canteen"]])
        }
    }

    @Test func aLoadMismatchFlagIsOneLineNamingTheLoad() {
        let load = LoadState(reference: "T4-load-t4-s7", terminalID: 4, cardSerial: 1001, amount: 500, balanceBefore: 100, counterBefore: 3,
                             phase: .prepared, updatedAt: Date(timeIntervalSince1970: 0))
        let flag = Ledger.loadMismatchFlag(load, accountID: 7, balanceAfter: 650, counterAfter: 4)
        #expect(flag.code == "load-mismatch" && flag.terminalID == 4 && flag.terminalSequence == 7 && flag.cardSerial == 1001)
        #expect(flag.message.contains("T4-load-t4-s7") && flag.message.contains("\(Fen(650))") && flag.message.contains("\(Fen(600))"))
        #expect(flag.message.contains("account 7") && !flag.message.contains("\n"))
    }

    @Test func aLateOnlineLoadConfirmationLeavesTheMirrorAtTheNewestCounter() {
        // Loaded online to counter 3, then spent twice; the sales are uploaded before the load's confirmation arrives.
        var card = book()
        _ = Ledger.apply(record(.purseDebit, amount: 100, before: 6000, counter: 3, sequence: 1), merchant: "m", to: &card)
        _ = Ledger.apply(record(.purseDebit, amount: 100, before: 5900, counter: 4, sequence: 2), merchant: "m", to: &card)
        #expect(card.card?.purseMirror == 5800 && card.card?.purseCounter == 5)
        let already = Ledger.confirmOnlineLoad(reference: "L1", amount: 5000, balanceAfter: 6000, counterAfter: 3, in: &card)
        #expect(!already)
        #expect(card.card?.purseMirror == 5800 && card.card?.purseCounter == 5)
        #expect(card.purse.window.position(of: 3) == .repeated)
    }

    @Test func waterResetStartsTheWaterWindowAfresh() {
        var card = book()
        _ = Ledger.apply(record(.waterDebit, amount: 5, before: 500, counter: 40), merchant: "m", to: &card)
        let reset = Ledger.apply(record(.waterReset, amount: 1000, before: 77, counter: 0, sequence: 2), merchant: "m", to: &card, loaders: [3])
        #expect(reset.booking == .booked && reset.flags == ["water-reset"])
        #expect(card.water.window.highest == 1)
        let next = Ledger.apply(record(.waterDebit, amount: 5, before: 1000, counter: 1, sequence: 3), merchant: "m", to: &card)
        #expect(next.booking == .booked && next.flags.isEmpty)
    }

    @Test func cardBooksSurviveTheirBinaryForm() throws {
        var card = book()
        _ = Ledger.apply(record(.purseDebit, amount: 300, before: 1000, counter: 7, outcome: .undetermined), merchant: "食堂-1", to: &card)
        _ = Ledger.apply(record(.waterDebit, amount: 5, before: 500, counter: 40, sequence: 2), merchant: "m", to: &card)
        _ = Ledger.confirmOnlineLoad(reference: "ref-1", amount: 5, balanceAfter: 10, counterAfter: 30, in: &card)
        let bytes = CardBookCoding.encode(purse: card.purse, water: card.water)
        let decoded = try CardBookCoding.decode(bytes)
        #expect(decoded.purse == card.purse && decoded.water == card.water)
        #expect(throws: SettlementError.self) { try CardBookCoding.decode(Array(bytes.dropLast())) }
        #expect(throws: SettlementError.self) { try CardBookCoding.decode([9] + bytes.dropFirst()) }
    }
}

@Suite struct RecordDigestTests {
    @Test func theDigestIsSHA256HexOfTheFieldsAndTellsRecordsApart() {
        let a = record(.purseDebit, amount: 250, before: 1000, counter: 4)
        #expect(a.contentDigest.count == 64 && a.contentDigest.allSatisfy { "0123456789abcdef".contains($0) })
        // The fixed text of the fields (format v1), hashed independently of the implementation.
        let text = "v1|3|1|purse-debit|A1B2C3D4|-|250|1000|4|-|-|-|done|750|5|1750000000"
        #expect(a.contentDigest == sha256Hex(text))
        var b = a
        b.amount = 251
        #expect(a.contentDigest != b.contentDigest)
        var c = a
        c.cardUID = "a1b2c3d4"  // the UID's case is not content
        #expect(a.contentDigest == c.contentDigest)
    }

    @Test func everyFieldIsContent() {
        let base = TerminalRecord(terminalID: 3, terminalSequence: 9, kind: .waterSettle, cardUID: "A1B2C3D4", cardSerial: 1001, amount: 500,
                                  balanceBefore: 795, counterBefore: 21, consumption: 120, referenceBefore: 40, settlementReference: 41,
                                  outcome: .done, balanceAfter: 1295, counterAfter: 22, createdAt: Date(timeIntervalSince1970: 1_750_000_000))
        let changes: [(String, (inout TerminalRecord) -> Void)] = [
            ("terminalID", { $0.terminalID = 4 }), ("terminalSequence", { $0.terminalSequence = 10 }), ("kind", { $0.kind = .waterRefund }),
            ("cardUID", { $0.cardUID = "A1B2C3D5" }), ("cardSerial", { $0.cardSerial = 1002 }), ("no cardSerial", { $0.cardSerial = nil }),
            ("amount", { $0.amount = 501 }), ("balanceBefore", { $0.balanceBefore = 796 }), ("counterBefore", { $0.counterBefore = 20 }),
            ("consumption", { $0.consumption = 121 }), ("no consumption", { $0.consumption = nil }),
            ("referenceBefore", { $0.referenceBefore = 39 }), ("no referenceBefore", { $0.referenceBefore = nil }),
            ("settlementReference", { $0.settlementReference = 42 }), ("no settlementReference", { $0.settlementReference = nil }),
            ("outcome", { $0.outcome = .undetermined }), ("balanceAfter", { $0.balanceAfter = 1294 }), ("no balanceAfter", { $0.balanceAfter = nil }),
            ("counterAfter", { $0.counterAfter = 23 }), ("no counterAfter", { $0.counterAfter = nil }),
            ("createdAt", { $0.createdAt = Date(timeIntervalSince1970: 1_750_000_001) }),
        ]
        var digests: [String: String] = [base.contentDigest: "base"]
        for (name, change) in changes {
            var changed = base
            change(&changed)
            let digest = changed.contentDigest
            #expect(digests[digest] == nil, "changing \(name) gives the digest of \(digests[digest] ?? "")")
            digests[digest] = name
        }
    }
}

/// The uplink marks a record acknowledged (and later prunes it) only on `accepted` or `duplicate`.
@Suite struct RecordAckTests {
    @Test func onlyAcceptedAndDuplicateAcknowledge() {
        let acknowledging = RecordAck.Status.allCases.filter {
            RecordAck(terminalSequence: 1, status: $0, booking: .booked, receivedAt: Date(timeIntervalSince1970: 0)).acknowledges
        }
        #expect(acknowledging == [.accepted, .duplicate])
    }
}

func sha256Hex(_ text: String) -> String {
    SHA256.hash(data: Data(text.utf8)).map { String(format: "%02x", $0) }.joined()
}
