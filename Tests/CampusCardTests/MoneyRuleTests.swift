@testable import CampusCard
import CardEmulator
import Foundation
import MifareClassic
import Testing

/// Money rules that no other suite pins down exactly, each written for a mutant of `scripts/mutants.list` that
/// survived the suites before it: boundaries (exactly the balance, the card maximum, the expiry day), status and
/// expiry at every station, the log back-fill and rebuild conditions, and each condition of the interrupted-intent
/// decisions on its own.
@Suite struct MoneyRuleTests {
    // MARK: Helpers

    /// Rewrites the purse sector as a key holder would: `record` vouching for `primary`, and the two value blocks (with
    /// the address byte the card has: it names the card's log ring).
    func forgePurse(_ bench: CardBench, record: PurseRecord, primary: Int32, backup: Int32) throws {
        var image = try #require(bench.reader.currentCard).memory
        let macKey = try bench.keystore.macKey(uid: bench.uid, version: 1)
        let address = image[9 * 16 + 12]
        image.replaceSubrange(8 * 16..<9 * 16, with: record.encode(uid: bench.uid, balance: Fen(Int(primary)), macKey: macKey))
        image.replaceSubrange(9 * 16..<10 * 16, with: ValueBlock(value: primary, address: address).block)
        image.replaceSubrange(10 * 16..<11 * 16, with: ValueBlock(value: backup, address: address).block)
        bench.reader.insert(try EmulatedCard(image: image))
    }

    /// A session on the bench's card whose clock reads `days` after the bench's.
    func operations(_ bench: CardBench, daysLater days: Int) -> CampusCardOperations {
        let session = bench.operations().session
        return CampusCardOperations(session: session, keystore: bench.keystore, now: bench.now.addingTimeInterval(Double(days) * 86_400))
    }

    func code(_ body: () throws -> Void) -> CardOperationError.Code? {
        do {
            try body()
            return nil
        } catch let error as CardOperationError {
            return error.code
        } catch {
            Issue.record("not a CardOperationError: \(error)")
            return nil
        }
    }

    // MARK: Boundaries

    @Test func aDebitOfExactlyTheBalanceIsAcceptedAndOneFenMoreRefused() throws {
        let bench = try CardBench()
        let pos = Terminal(id: 7, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(1_000, terminal: pos)
        let writes = bench.reader.statistics.blockWrites
        #expect(code { try bench.operations().debit(Fen(1_001), terminal: pos) } == .insufficientFunds)
        #expect(bench.reader.statistics.blockWrites == writes, "nothing written for the refusal")
        #expect(try bench.operations().debit(Fen(1_000), terminal: pos).balance == .zero)
        #expect(try bench.operations().readPurse().balance == .zero)
    }

    @Test func aWaterDebitOfExactlyTheWalletIsAcceptedAndOneFenMoreRefused() throws {
        let bench = try CardBench()
        let station = Terminal(id: 3, journal: InMemoryTerminalJournal())
        let shower = Terminal(id: 40, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(5_000, terminal: station)
        #expect(try bench.operations().waterSettle(terminal: station, reference: 1).state.balance == Fen(1_000))
        #expect(code { try bench.operations().waterDebit(Fen(1_001), terminal: shower) } == .insufficientFunds)
        #expect(try bench.operations().waterDebit(Fen(1_000), terminal: shower).balance == .zero)
        #expect(try bench.operations().readWater().balance == .zero)
    }

    @Test func zeroAmountsAreRefusedBeforeWriting() throws {
        let bench = try CardBench()
        let station = Terminal(id: 3, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(1_000, terminal: station)
        let writes = bench.reader.statistics.blockWrites
        #expect(code { try bench.operations().debit(.zero, terminal: station) } == .overLimit)
        #expect(code { try bench.operations().load(.zero, terminal: station) } == .overLimit)
        #expect(code { try bench.operations().waterDebit(.zero, terminal: station) } == .overLimit)
        #expect(bench.reader.statistics.blockWrites == writes)
        #expect(try bench.operations().readPurse().record.counter == 1)
    }

    /// The card maximum (a value block's Int32) is reached exactly, never passed.
    @Test func aLoadReachesTheCardMaximumAndNotOneFenMore() throws {
        let bench = try CardBench()
        let station = Terminal(id: 3, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(1_000, terminal: station)
        let near = Int32.max - 100
        var record = try bench.operations().readPurse().record
        record.lastOperation = .load
        try forgePurse(bench, record: record, primary: near, backup: near)
        #expect(try bench.operations().load(Fen(100), terminal: station).balance == Fen.cardMaximum)
        let writes = bench.reader.statistics.blockWrites
        let refused = #expect(throws: CardOperationError.self) { try bench.operations().load(Fen(1), terminal: station) }
        #expect(refused?.code == .overLimit)
        #expect(bench.reader.statistics.blockWrites == writes)
        #expect(try bench.operations().readPurse().balance == Fen.cardMaximum)
    }

    /// A card expiring on day E works on E everywhere and is refused everywhere on E + 1.
    @Test func theExpiryDayIsTheLastDayAtEveryStation() throws {
        let bench = try CardBench()
        let station = Terminal(id: 3, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(5_000, terminal: station)
        try bench.operations().waterSettle(terminal: station, reference: 1)
        let days = Int(try bench.operations().readIdentity().expires.rawValue) - Int(CardDay(bench.now).rawValue)
        let pos = Terminal(id: 7, journal: InMemoryTerminalJournal())
        let shower = Terminal(id: 40, journal: InMemoryTerminalJournal())
        #expect(try operations(bench, daysLater: days).debit(Fen(100), terminal: pos).balance == Fen(4_900))
        #expect(try operations(bench, daysLater: days).load(Fen(100), terminal: station).balance == Fen(5_000))
        #expect(try operations(bench, daysLater: days).waterDebit(Fen(100), terminal: shower).balance == Fen(900))
        #expect(try operations(bench, daysLater: days).waterSettle(terminal: station, reference: 2).state.balance == Fen(1_000))
        #expect(code { try operations(bench, daysLater: days + 1).debit(Fen(100), terminal: pos) } == .expired)
        #expect(code { try operations(bench, daysLater: days + 1).load(Fen(100), terminal: station) } == .expired)
        #expect(code { try operations(bench, daysLater: days + 1).waterDebit(Fen(100), terminal: shower) } == .expired)
        #expect(code { try operations(bench, daysLater: days + 1).waterSettle(terminal: station, reference: 3) } == .expired)
        #expect(try bench.operations().readPurse().balance == Fen(5_000))
    }

    // MARK: Status at every station

    /// A lost, frozen or cancelled card: no debit, no load, no water, no water refill.
    @Test(arguments: [Identity.Status.lost, .frozen, .cancelled])
    func aLockedCardIsRefusedAtEveryStation(status: Identity.Status) throws {
        let bench = try CardBench()
        let station = Terminal(id: 3, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(5_000, terminal: station)
        try bench.operations().waterSettle(terminal: station, reference: 1)
        try bench.operations().waterDebit(Fen(100), terminal: station)
        try bench.operations().setStatus(status)
        let writes = bench.reader.statistics.blockWrites
        #expect(code { try bench.operations().debit(Fen(100), terminal: Terminal(id: 7, journal: InMemoryTerminalJournal())) } == .cardLocked)
        #expect(code { try bench.operations().load(Fen(100), terminal: station) } == .cardLocked)
        #expect(code { try bench.operations().load(Fen(100), terminal: station, kind: .purseSubsidy) } == .cardLocked)
        #expect(code { try bench.operations().waterDebit(Fen(100), terminal: Terminal(id: 40, journal: InMemoryTerminalJournal())) } == .cardLocked)
        #expect(code { try bench.operations().waterSettle(terminal: station, reference: 2) } == .cardLocked)
        #expect(bench.reader.statistics.blockWrites == writes, "every refusal before any write")
    }

    /// A lock torn after its purse record write leaves the identity normal: the record's status copy still refuses
    /// a load as it refuses a debit.
    @Test func aLoadReadsTheRecordsStatusCopyToo() throws {
        let bench = try CardBench()
        let station = Terminal(id: 3, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(1_000, terminal: station)
        var record = try bench.operations().readPurse().record
        record.status = .lost
        try forgePurse(bench, record: record, primary: 1_000, backup: 1_000)
        #expect(try bench.operations().readIdentity().status == .normal)
        #expect(code { try bench.operations().load(Fen(100), terminal: station) } == .cardLocked)
        #expect(code { try bench.operations().debit(Fen(100), terminal: station) } == .cardLocked)
    }

    // MARK: Daily limit

    @Test func todaysTotalAddsUpEveryDebit() throws {
        let bench = try CardBench()
        let pos = Terminal(id: 7, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(10_000, terminal: pos)
        try bench.setPIN()
        try bench.operations().setHolderLimits(HolderLimits(perTransaction: Fen(5_000), daily: Fen(6_000)))
        try bench.operations().debit(Fen(2_000), terminal: pos)
        #expect(try bench.operations().debit(Fen(2_000), terminal: pos).record.debitedToday == Fen(4_000))
        #expect(try bench.operations().debit(Fen(2_000), terminal: pos).record.debitedToday == Fen(6_000))
        #expect(code { try bench.operations().debit(Fen(1), terminal: pos) } == .pinRequired)
    }

    /// A debit by a terminal whose clock runs two days ahead stamps the record with its day: back on the real day,
    /// the record says nothing reliable about today's total, so the PIN is needed until that day has passed.
    @Test func aRecordDatedAfterTodayAsksForThePIN() throws {
        let bench = try CardBench()
        let pos = Terminal(id: 7, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(10_000, terminal: pos)
        try bench.setPIN()
        #expect(try operations(bench, daysLater: 2).debit(Fen(100), terminal: pos).record.lastDay == CardDay(rawValue: CardDay(bench.now).rawValue + 2))
        let refused = #expect(throws: CardOperationError.self) { try bench.operations().debit(Fen(100), terminal: pos) }
        #expect(refused?.code == .pinRequired && refused?.message.contains("unknown") == true, "\(String(describing: refused))")
        #expect(try bench.operations().debit(Fen(100), terminal: pos, pin: CardBench.pin).balance == Fen(9_800))
    }

    @Test func aReplayedStateOneOperationOldIsRefused() throws {
        let bench = try CardBench()
        let pos = Terminal(id: 7, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(1_000, terminal: pos)
        let counter = try bench.operations().readPurse().record.counter
        let sawNext = Terminal(id: 8, journal: InMemoryTerminalJournal(), lastSeenCounter: { _ in counter + 1 })
        #expect(code { try bench.operations().debit(Fen(1), terminal: sawNext) } == .replay)
        let sawThis = Terminal(id: 8, journal: InMemoryTerminalJournal(), lastSeenCounter: { _ in counter })
        #expect(try bench.operations().debit(Fen(1), terminal: sawThis).balance == Fen(999))
    }

    @Test func aSubsidyIsLoggedAsASubsidy() throws {
        let bench = try CardBench()
        let station = Terminal(id: 3, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(1_000, terminal: station)
        let state = try bench.operations().load(Fen(250), terminal: station, kind: .purseSubsidy)
        #expect(state.balance == Fen(1_250) && state.record.lastOperation == .subsidy)
        let macKey = try bench.keystore.macKey(uid: bench.uid, version: 1)
        let newest = try bench.operations().newestLogEntry(uid: bench.uid, macKey: macKey, version: 1)
        #expect(newest?.operation == .subsidy && newest?.amount == Fen(250) && newest?.balanceAfter == Fen(1_250))
        #expect(code { try bench.operations().load(Fen(1), terminal: station, kind: .purseDebit) } == .overLimit)
    }

    // MARK: Repairs: back-fill, rebuild, the OMNIKEY

    /// A card whose backup lags a committed debit (its finish never ran): the tap repairs the backup and back-fills
    /// the missing log entry, its amount from the MAC'd entry before (10.00 -> 7.00), never from the backup, which
    /// may be garbled or set by an attacker (9.00 here).
    @Test(arguments: [true, false])
    func aLogEntryIsBackFilledOnlyAfterTheLaggingBalance(previousShowsBackup: Bool) throws {
        let bench = try CardBench()
        let station = Terminal(id: 3, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(1_000, terminal: station)
        var record = try bench.operations().readPurse().record
        record.counter += 1
        record.lastOperation = .debit
        record.terminalID = 0x0B0C
        record.terminalSequence = 0x21
        let backup: Int32 = previousShowsBackup ? 1_000 : 900
        try forgePurse(bench, record: record, primary: 700, backup: backup)
        let state = try bench.operations().readPurse()
        #expect(state.resolution == .backupRepaired && state.balance == Fen(700))
        #expect(Array(try #require(bench.reader.currentCard).memory[10 * 16..<11 * 16]) == ValueBlock(value: 700, address: LogRing.current.valueAddress).block,
                "the backup now holds the committed balance")
        let macKey = try bench.keystore.macKey(uid: bench.uid, version: 1)
        let entries = try bench.operations().readLog(uid: bench.uid, macKey: macKey, version: 1)
        let filled = entries.first { $0.counter == record.counter }
        #expect(filled == LogEntry(operation: .debit, amount: Fen(300), balanceAfter: Fen(700), counter: record.counter,
                                   terminal: TerminalTag(terminalID: 0x0B0C, sequenceByte: 0x21)))
    }

    /// A torn record is rebuilt only from a log entry that shows the backup's balance.
    @Test func aTornRecordIsNotRebuiltFromAnEntryThatDisagreesWithTheBackup() throws {
        let bench = try CardBench()
        let station = Terminal(id: 3, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(1_000, terminal: station)
        var image = try #require(bench.reader.currentCard).memory
        image.replaceSubrange(8 * 16..<9 * 16, with: [UInt8](repeating: 0x5A, count: 16))
        image.replaceSubrange(9 * 16..<10 * 16, with: ValueBlock(value: 500, address: LogRing.current.valueAddress).block)
        image.replaceSubrange(10 * 16..<11 * 16, with: ValueBlock(value: 500, address: LogRing.current.valueAddress).block)
        bench.reader.insert(try EmulatedCard(image: image))
        #expect(code { _ = try bench.operations().readPurse() } == .tampered)
    }

    /// The OMNIKEY has no copy command: it refuses a repair (reader-cannot) and writes nothing.
    @Test func theOmnikeyRefusesARepairItCannotDo() throws {
        let bench = try CardBench(kind: .omnikey5422)
        let station = Terminal(id: 3, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(1_000, terminal: station)
        var record = try bench.operations().readPurse().record
        record.counter += 1
        record.lastOperation = .debit
        try forgePurse(bench, record: record, primary: 700, backup: 1_000)
        let writes = bench.reader.statistics.blockWrites
        #expect(code { try bench.operations().debit(Fen(100), terminal: station) } == .readerCannot)
        #expect(bench.reader.statistics.blockWrites == writes)
    }

    // MARK: Water: refill, reset, witness

    /// A partial refill is the base of the next consumption (not the cap).
    @Test func consumptionCountsFromThePartialRefill() throws {
        let bench = try CardBench()
        let station = Terminal(id: 3, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(5_000, terminal: station)
        let first = try bench.operations().waterSettle(terminal: station, reference: 1, maximumRefill: Fen(600))
        #expect(first.refill == Fen(600) && first.state.balance == Fen(600))
        try bench.operations().waterDebit(Fen(100), terminal: station)
        let second = try bench.operations().waterSettle(terminal: station, reference: 2, maximumRefill: Fen(50))
        #expect(second.consumption == Fen(100) && second.refill == Fen(50) && second.state.balance == Fen(550))
    }

    /// The terminals number their own settlements from 2^31: a caller's reference must be below, by one at the edge.
    @Test func aCallersSettlementReferenceEndsBelowTheTerminalsRange() throws {
        let bench = try CardBench()
        let station = Terminal(id: 3, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(5_000, terminal: station)
        let writes = bench.reader.statistics.blockWrites
        #expect(code { try bench.operations().waterSettle(terminal: station, reference: CampusCardOperations.terminalReferences) } == .overLimit)
        #expect(bench.reader.statistics.blockWrites == writes)
        #expect(try bench.operations().waterSettle(terminal: station, reference: CampusCardOperations.terminalReferences - 1).state.record.reference
                == CampusCardOperations.terminalReferences - 1)
    }

    /// A wallet whose record nothing vouches for is reset, by no more than the account can pay.
    @Test func aResetRefillsNoMoreThanTheAccountPays() throws {
        let bench = try CardBench()
        let station = Terminal(id: 3, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(5_000, terminal: station)
        try bench.operations().waterSettle(terminal: station, reference: 1)
        var image = try #require(bench.reader.currentCard).memory
        image.replaceSubrange(12 * 16..<13 * 16, with: [UInt8](repeating: 0xA5, count: 16))
        bench.reader.insert(try EmulatedCard(image: image))
        #expect(code { _ = try bench.operations().readWater() } == .waterInterrupted)
        let reset = try bench.operations().waterSettle(terminal: station, reference: 2, maximumRefill: Fen(300))
        #expect(reset.consumption == nil && reset.refill == Fen(300) && reset.unverifiedBalance == Fen(1_000))
        #expect(try bench.operations().readWater().balance == Fen(300))
    }

    /// A controller's journal witness restores a torn water record only when it vouches for a value on the card:
    /// a stale witness (an older state) is not written back.
    @Test func aStaleWitnessDoesNotRestoreATornWaterRecord() throws {
        let bench = try CardBench()
        let station = Terminal(id: 3, journal: InMemoryTerminalJournal())
        let journal = InMemoryTerminalJournal()
        let shower = Terminal(id: 40, journal: journal)
        try bench.issueAndLoad(5_000, terminal: station)
        try bench.operations().waterSettle(terminal: station, reference: 1)
        let stale = Array(try #require(bench.reader.currentCard).memory[12 * 16..<13 * 16])
        try bench.operations().waterDebit(Fen(300), terminal: shower)
        try journal.record(TransactionIntent(terminalID: 40, terminalSequence: journal.nextSequence(), kind: .waterDebit, cardUID: bench.uidHex,
                                             cardSerial: nil, amount: 1, balanceBefore: 1_000, counterBefore: 0, referenceBefore: 1,
                                             recordBefore: stale))
        var image = try #require(bench.reader.currentCard).memory
        let garbage = [UInt8](repeating: 0xA5, count: 16)
        image.replaceSubrange(12 * 16..<13 * 16, with: garbage)
        bench.reader.insert(try EmulatedCard(image: image))
        #expect(code { _ = try bench.operations().readWater(terminal: shower) } == .waterInterrupted)
        #expect(Array(try #require(bench.reader.currentCard).memory[12 * 16..<13 * 16]) == garbage, "nothing written back")
    }

    // MARK: Interrupted purse intents, one condition at a time (tearing rule 5)

    static let intent = TransactionIntent(terminalID: 0x1234, terminalSequence: 0x0156, kind: .purseDebit, cardUID: "5A170199", cardSerial: nil,
                                          amount: 300, balanceBefore: 1_000, counterBefore: 10)
    static let done = TransactionOutcome.done(balanceAfter: 700, counterAfter: 11)

    static func record(counter: UInt16, id: UInt16 = 0x1234, sequence: UInt8 = 0x56, operation: PurseRecord.Operation = .debit) -> PurseRecord {
        PurseRecord(counter: counter, status: .normal, lastOperation: operation, lastDay: CardDay(rawValue: 9_000), debitedToday: .zero,
                    expires: CardDay(rawValue: 9_999), terminalID: id, terminalSequence: sequence)
    }

    static func decide(_ record: PurseRecord, balance: Int, log: [LogEntry] = []) throws -> TransactionOutcome {
        try CampusCardOperations.outcome(of: intent, record: record, balance: Fen(balance),
                                         log: { Dictionary(uniqueKeysWithValues: log.map { ($0.counter, $0) }) })
    }

    /// The record at counter before + 1: done only when it names this terminal id, this sequence and the balance after.
    @Test func theCommittedRecordMustMatchOnIdSequenceAndBalance() throws {
        #expect(try Self.decide(Self.record(counter: 11), balance: 700) == Self.done)
        #expect(try Self.decide(Self.record(counter: 11, id: 0x1235), balance: 700) == .notDone, "another terminal id")
        #expect(try Self.decide(Self.record(counter: 11, sequence: 0x57), balance: 700) == .notDone, "another sequence")
        #expect(try Self.decide(Self.record(counter: 11), balance: 699) == .notDone, "another balance")
        #expect(try Self.decide(Self.record(counter: 10), balance: 700) == .notDone, "still the counter before")
    }

    /// The card moved on: the log entry for before + 1 decides, on every field.
    @Test func theLogEntryMustMatchOnTagOperationAmountAndBalance() throws {
        let later = Self.record(counter: 13, id: 0x0999, sequence: 1)
        func entry(_ operation: PurseRecord.Operation = .debit, amount: Int = 300, after: Int = 700, tag: TerminalTag = Self.intent.terminalTag) -> LogEntry {
            LogEntry(operation: operation, amount: Fen(amount), balanceAfter: Fen(after), counter: 11, terminal: tag)
        }
        #expect(try Self.decide(later, balance: 500, log: [entry()]) == Self.done)
        #expect(try Self.decide(later, balance: 500, log: [entry(tag: TerminalTag(terminalID: 0x1235, sequenceByte: 0x56))]) == .notDone)
        #expect(try Self.decide(later, balance: 500, log: [entry(.load)]) == .notDone)
        #expect(try Self.decide(later, balance: 500, log: [entry(amount: 301)]) == .notDone)
        #expect(try Self.decide(later, balance: 500, log: [entry(after: 701)]) == .notDone)
    }

    /// Without the entry for before + 1, the entry for before + 2 tells the balance after before + 1: the balance
    /// before means nothing moved (not done); any other cannot be told apart (undetermined).
    @Test func theNextEntryDecidesNotDoneOnlyFromTheBalanceBefore() throws {
        let later = Self.record(counter: 13, id: 0x0999, sequence: 1)
        let fromBefore = LogEntry(operation: .debit, amount: Fen(100), balanceAfter: Fen(900), counter: 12, terminal: TerminalTag(terminalID: 9, sequenceByte: 1))
        let fromAfter = LogEntry(operation: .debit, amount: Fen(100), balanceAfter: Fen(600), counter: 12, terminal: TerminalTag(terminalID: 9, sequenceByte: 1))
        #expect(try Self.decide(later, balance: 500, log: [fromBefore]) == .notDone)
        #expect(try Self.decide(later, balance: 500, log: [fromAfter]) == .undetermined)
        #expect(try Self.decide(later, balance: 500) == .undetermined)
    }

    /// A counter that went back (a replayed card state) is undetermined, whatever the log says.
    @Test func aCounterThatWentBackIsUndetermined() throws {
        let ours = LogEntry(operation: .debit, amount: Fen(300), balanceAfter: Fen(700), counter: 11, terminal: Self.intent.terminalTag)
        #expect(try Self.decide(Self.record(counter: 5), balance: 700, log: [ours]) == .undetermined)
    }

    // MARK: Interrupted water intents

    @Test func aWaterDebitIsOursOnlyWhenTheRecordNamesThisController() {
        let intent = TransactionIntent(terminalID: 0x0A07, terminalSequence: 0x22, kind: .waterDebit, cardUID: "5A170199", cardSerial: nil,
                                       amount: 50, balanceBefore: 500, counterBefore: 4, referenceBefore: 77)
        let settlement = WaterSettlement(cap: Fen(1_000), balanceAfterRefill: Fen(1_000), reference: 77, day: CardDay(rawValue: 9_000))
        let ours = WaterRecord(counter: 5, settlement: settlement, terminal: intent.terminalTag.short)
        let theirs = WaterRecord(counter: 5, settlement: settlement, terminal: 0x0823)
        #expect(CampusCardOperations.waterOutcome(of: intent, record: ours, balance: Fen(450)) == .done(balanceAfter: 450, counterAfter: 5))
        #expect(CampusCardOperations.waterOutcome(of: intent, record: theirs, balance: Fen(450)) == .notDone)
    }

    @Test func aWaterSettlementIsDecidedByItsReferenceThenByTheBalance() {
        let intent = TransactionIntent(terminalID: 3, terminalSequence: 9, kind: .waterSettle, cardUID: "5A170199", cardSerial: 1,
                                       amount: 400, balanceBefore: 600, counterBefore: 4, consumption: 400, referenceBefore: 77, settlementReference: 78)
        func record(reference: UInt32, rebuilt: Bool = false) -> WaterRecord {
            WaterRecord(counter: 0, settlement: WaterSettlement(cap: Fen(1_000), balanceAfterRefill: Fen(600), reference: reference,
                                                                day: CardDay(rawValue: 9_000)), terminal: 0, rebuilt: rebuilt)
        }
        #expect(CampusCardOperations.waterOutcome(of: intent, record: record(reference: 78), balance: Fen(1_000)) == .done(balanceAfter: 1_000, counterAfter: 5))
        #expect(CampusCardOperations.waterOutcome(of: intent, record: record(reference: 77), balance: Fen(600)) == .notDone)
        #expect(CampusCardOperations.waterOutcome(of: intent, record: record(reference: 79), balance: Fen(600)) == .undetermined, "another settlement since")
        #expect(CampusCardOperations.waterOutcome(of: intent, record: record(reference: 70, rebuilt: true), balance: Fen(600)) == .notDone)
        #expect(CampusCardOperations.waterOutcome(of: intent, record: record(reference: 70, rebuilt: true), balance: Fen(550)) == .undetermined)
    }
}

extension MoneyRuleTests {
    /// Done on the card but the journal could not record it (the disk filled up between intent and completion): the
    /// debit returns, the money moved, and the warning says not to repeat it; the card's next tap here completes it.
    @Test func doneOnTheCardButNotInTheJournalIsStillDone() throws {
        let bench = try CardBench()
        let journal = InMemoryTerminalJournal()
        let pos = Terminal(id: 7, journal: journal)
        try bench.issueAndLoad(1_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        journal.failCompleting = true
        let state = try bench.operations().debit(Fen(300), terminal: pos)
        #expect(state.balance == Fen(700))
        #expect(state.warnings.contains { $0.contains("journal could not record it") && $0.contains("do not repeat it") }, "\(state.warnings)")
        #expect(try bench.operations().readPurse().balance == Fen(700))
        #expect(try journal.outcome(terminalSequence: 1) == nil, "left open")
        journal.failCompleting = false
        try bench.operations().tap(terminal: pos)
        #expect(try journal.outcome(terminalSequence: 1) == .done(balanceAfter: 700, counterAfter: 2))
    }
}
