import CampusCard
import CardEmulator
import Foundation
import MifareClassic
import Testing

/// Issue 8, items 3 and 4: a water balance counts only when a MAC'd record vouches for it; cancelled, locked, lost
/// and expired cards spend no water; cancelling settles and empties the wallet.
@Suite struct WaterSafetyTests {
    /// A card with 10.00 yuan settled into its water wallet and 3.00 spent.
    func settledCard() throws -> (CardBench, station: Terminal, shower: Terminal) {
        let bench = try CardBench()
        let station = Terminal(id: 3, journal: InMemoryTerminalJournal())
        let shower = Terminal(id: 40, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(5_000, terminal: station)
        try bench.operations().waterSettle(terminal: station, reference: 1)
        try bench.operations().waterDebit(Fen(300), terminal: shower)
        return (bench, station, shower)
    }

    /// Writes `value` into the water wallet's primary and/or backup value block, as an attacker with key B can.
    func forge(_ bench: CardBench, primary: Int32?, backup: Int32?) throws {
        var image = try #require(bench.reader.currentCard).memory
        if let primary { image.replaceSubrange(13 * 16..<14 * 16, with: ValueBlock(value: primary, address: 13).block) }
        if let backup { image.replaceSubrange(14 * 16..<15 * 16, with: ValueBlock(value: backup, address: 13).block) }
        bench.reader.insert(try EmulatedCard(image: image))
    }

    /// Both value blocks set to a balance the card never had (9.91), or back to the refill (10.00) after 3.00 was
    /// spent: no controller accepts it, and the station's reset charges a full refill with the consumption unknown
    /// (never "0.00": the forger buys nothing).
    @Test(arguments: [991, 1_000, 701, 0] as [Int32])
    func aForgedWaterBalanceIsNeverAccepted(forged: Int32) throws {
        let (bench, station, shower) = try settledCard()
        try forge(bench, primary: forged, backup: forged)
        let read = #expect(throws: CardOperationError.self) { try bench.operations().readWater() }
        #expect(read?.code == .waterInterrupted)
        let debit = #expect(throws: CardOperationError.self) { try bench.operations().waterDebit(Fen(5), terminal: shower) }
        #expect(debit?.code == .waterInterrupted, "the shower's journal holds no witness for a forged value")
        let reset = try bench.operations().waterSettle(terminal: station, reference: 2)
        #expect(reset.consumption == nil && reset.unverifiedBalance == Fen(Int(forged)))
        #expect(reset.refill == Fen(1_000) && reset.state.balance == Fen(1_000), "the whole new balance is charged as a refill")
        let intent = try #require((station.journal as? InMemoryTerminalJournal)?.entries.last)
        #expect(intent.intent.kind == .waterReset && intent.intent.amount == 1_000 && intent.outcome == .done(balanceAfter: 1_000, counterAfter: 0))
        #expect(try bench.operations().readWater().resolution == .consistent)
    }

    /// Every single-block mutation of the water value blocks: the wallet reads as a balance it really had (7.00, when
    /// the record still vouches for the untouched copy) or is refused; never any other value.
    @Test func mutatedWaterValueBlocksNeverReadAsANewBalance() throws {
        var refused = 0, restored = 0
        for value: Int32 in [0, 1, 5, 299, 300, 695, 699, 701, 705, 991, 999, 1_000, 1_001, 10_000, 65_535] {
            for (primary, backup) in [(value, nil), (nil, value), (value, value)] as [(Int32?, Int32?)] {
                let (bench, _, _) = try settledCard()
                try forge(bench, primary: primary, backup: backup)
                do {
                    let state = try bench.operations().readWater()
                    #expect(state.balance == Fen(700), "primary \(String(describing: primary)) backup \(String(describing: backup)): \(state.balance)")
                    restored += 1
                } catch let error as CardOperationError {
                    #expect(error.code == .waterInterrupted)
                    refused += 1
                }
            }
        }
        #expect(refused > 0 && restored > 0)
    }

    @Test(arguments: [Identity.Status.lost, .frozen, .cancelled])
    func lockedCardsSpendNoWater(status: Identity.Status) throws {
        let (bench, _, shower) = try settledCard()
        try bench.operations().setStatus(status)
        let writes = bench.reader.statistics.blockWrites
        let error = #expect(throws: CardOperationError.self) { try bench.operations().waterDebit(Fen(5), terminal: shower) }
        #expect(error?.code == .cardLocked)
        #expect(bench.reader.statistics.blockWrites == writes, "nothing written")
    }

    @Test func expiredCardsSpendNoWater() throws {
        let (bench, _, shower) = try settledCard()
        let later = CampusCardOperations(session: bench.operations().session, keystore: bench.keystore,
                                         now: bench.now.addingTimeInterval(1_001 * 86_400))
        let error = #expect(throws: CardOperationError.self) { try later.waterDebit(Fen(5), terminal: shower) }
        #expect(error?.code == .expired)
        #expect(try bench.operations().readWater().balance == Fen(700))
    }

    /// Cancel: the consumption since the refill is recorded and the rest leaves the card for the account.
    @Test func cancellingSettlesAndEmptiesTheWallet() throws {
        let (bench, station, shower) = try settledCard()
        try bench.operations().setStatus(.cancelled)
        let result = try bench.operations().emptyWater(terminal: station)
        #expect(result.consumption == Fen(300) && result.refund == Fen(700) && result.refill == .zero && result.state.balance == .zero)
        let entry = try #require((station.journal as? InMemoryTerminalJournal)?.entries.last)
        #expect(entry.intent.kind == .waterRefund && entry.intent.amount == 700 && entry.intent.consumption == 300)
        #expect(entry.outcome == .done(balanceAfter: 0, counterAfter: 3))
        #expect(try bench.operations().readWater().balance == .zero)
        let error = #expect(throws: CardOperationError.self) { try bench.operations().waterDebit(Fen(5), terminal: shower) }
        #expect(error?.code == .cardLocked)
        // Emptied again (a repeated cancel): nothing more leaves, nothing more is consumed.
        let again = try bench.operations().emptyWater(terminal: station)
        #expect(again.refund == .zero && again.consumption == .zero)
    }

    /// The interrupted controller restores a record its own commit tore; the value it restores is the one its journal
    /// saw vouched for (a witness that vouches for neither value is not used).
    @Test func theInterruptedControllerRestoresItsTornRecord() throws {
        let (bench, _, shower) = try settledCard()
        bench.tear(atAPDU: 13, .garbled) { try bench.operations().waterDebit(Fen(5), terminal: shower) }
        let state = try bench.operations().waterTap(terminal: shower)
        #expect(state.balance == Fen(700) && state.resolution == .rolledBack)
        #expect(try shower.journal.outcome(terminalSequence: 2) == .notDone)
        #expect(try bench.operations().readWater().resolution == .consistent)
        // Torn again, and then the values forged: the witness vouches for neither, so the card stays refused.
        bench.tear(atAPDU: 13, .garbled) { try bench.operations().waterDebit(Fen(5), terminal: shower) }
        try forge(bench, primary: 1_000, backup: 1_000)
        let error = #expect(throws: CardOperationError.self) { try bench.operations().waterTap(terminal: shower) }
        #expect(error?.code == .waterInterrupted)
    }
}

extension WaterSafetyTests {
    /// FOUND BY THE TEAR SOAK (seed 1, 20,000 operations, layout v2 cards: op #7426 … #7474): a wrong decision. A
    /// shower's debit commit lands but its answer is lost (its intent keeps the record before as a witness); a station
    /// settles, refilling the wallet to the cap (the witness's balance again); a later settlement tears the record
    /// garbled. At the shower's next tap its witness vouched for the value on the card, so it put back a record from
    /// before the settlement and decided its debit "not done". Now an own witness is put back only while the intent's
    /// value change is the last thing on the card (backup = its balance before, primary = its balance after): here the
    /// card is refused until a station resets it, and the debit is never decided "not done".
    @Test func aWitnessFromBeforeACompletedSettlementIsNotPutBack() throws {
        let bench = try CardBench()
        let station = Terminal(id: 3, journal: InMemoryTerminalJournal())
        let shower = Terminal(id: 40, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(5_000, terminal: station)
        try bench.operations().waterSettle(terminal: station, reference: 1)
        let commit = try CardBench.commitIndex(scene: {
            let copy = try CardBench()
            try copy.issueAndLoad(5_000, terminal: Terminal(id: 3, journal: InMemoryTerminalJournal()))
            try copy.operations().waterSettle(terminal: Terminal(id: 3, journal: InMemoryTerminalJournal()), reference: 1)
            return (copy, Terminal(id: 40, journal: InMemoryTerminalJournal()))
        }, operation: { copy, terminal in try copy.operations().waterDebit(Fen(30), terminal: terminal) })
        bench.tear(atAPDU: commit, .executed) { try bench.operations().waterDebit(Fen(30), terminal: shower) }
        #expect(try bench.operations().readWater().balance == Fen(970), "the commit landed")
        try bench.operations().waterSettle(terminal: station, reference: 2)
        #expect(try bench.operations().readWater().balance == Fen(1_000), "refilled to the cap: the witness's balance")
        // A later settlement's record write torn garbled.
        let ops = bench.operations()
        let uid = try ops.session.uid()
        try ops.session.authenticate(sector: 3, keyType: .b, key: bench.keystore.sectorKey(uid: uid, sector: 3, role: .loader, version: 1))
        try ops.session.write(block: WaterRecord.block, [UInt8](repeating: 0x3C, count: 16))

        let tap = #expect(throws: CardOperationError.self) { try bench.operations().waterTap(terminal: shower) }
        #expect(tap?.code == .waterInterrupted)
        #expect(try shower.journal.outcome(terminalSequence: 1) != .notDone, "never a wrong decision: the debit landed")
        let reset = try bench.operations().waterSettle(terminal: station, reference: 3)
        #expect(reset.unverifiedBalance == Fen(1_000))
        try bench.operations().waterTap(terminal: shower)
        #expect(try shower.journal.outcome(terminalSequence: 1) != .notDone, "never a wrong decision: the debit landed")
    }
}
