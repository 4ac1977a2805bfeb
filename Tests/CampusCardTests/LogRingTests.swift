import CampusCard
import CardEmulator
import CardReader
import Foundation
import MifareClassic
import SmartCard
import Testing

/// Layout v2's 24-entry log ring (issue 8, item 6): an interrupted terminal decides its intent from the log when the
/// card comes back after more purse operations elsewhere than a six-entry ring keeps, and a card issued with layout
/// v1 keeps its six-entry ring and works as before.
@Suite struct LogRingTests {
    static let cardUID = "5A170199"

    /// Issues the bench's card with `ring` and loads 1,000.00 yuan (counter 1).
    static func bench(_ ring: LogRing, kind: ReaderKind = .acr122u) throws -> CardBench {
        let bench = try CardBench(kind: kind)
        try bench.operations().issue(Identity(serial: bench.serial, account: 42, type: .student, keyVersion: 1, issued: CardDay(bench.now),
                                              expires: CardDay(rawValue: CardDay(bench.now).rawValue + 1_000)), ring: ring)
        try bench.operations().load(Fen(100_000), terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        return bench
    }

    /// Terminal 7's debit of 3.00 is torn at its commit write with `effect` (the intent stays open); terminal 9 then
    /// debits the card `elsewhere` times; 7's next tap decides. Returns 7's outcome.
    static func decide(_ ring: LogRing, commit effect: TearEffect, elsewhere: Int) throws -> TransactionOutcome? {
        let bench = try bench(ring)
        let seven = Terminal(id: 7, journal: InMemoryTerminalJournal(startingSequence: 0))
        let nine = Terminal(id: 9, journal: InMemoryTerminalJournal(startingSequence: 100))
        bench.tear(atAPDU: 8, effect) { try bench.operations().debit(Fen(300), terminal: seven) }
        #expect(try seven.journal.openIntents(cardUID: cardUID).count == 1, "the commit went unanswered")
        for _ in 0..<elsewhere { try bench.operations().debit(Fen(100), terminal: nine) }
        try bench.operations().tap(terminal: seven)
        return try seven.journal.outcome(terminalSequence: 1)
    }

    /// The issue's case: on a v2 card the intent is decided — done when the commit landed, not done when it did not —
    /// after 6 to 22 debits elsewhere (the entry for counter before + 1 is still in the ring while fewer than 24
    /// operations followed it). A six-entry ring loses it after 6.
    @Test(arguments: [6, 7, 12, 22])
    func aV2CardDecidesAfterManyOperationsElsewhere(elsewhere: Int) throws {
        #expect(try Self.decide(.v2, commit: .executed, elsewhere: elsewhere) == .done(balanceAfter: 99_700, counterAfter: 2))
        #expect(try Self.decide(.v2, commit: .leftOld, elsewhere: elsewhere) == .notDone)
    }

    /// A v1 card decides exactly as before: within its six entries from the log, past them undetermined (the settlement
    /// service decides), never wrongly.
    @Test func aV1CardDecidesAsBefore() throws {
        #expect(try Self.decide(.v1, commit: .executed, elsewhere: 4) == .done(balanceAfter: 99_700, counterAfter: 2))
        #expect(try Self.decide(.v1, commit: .leftOld, elsewhere: 4) == .notDone)
        #expect(try Self.decide(.v1, commit: .executed, elsewhere: 8) == .undetermined)
        #expect(try Self.decide(.v1, commit: .leftOld, elsewhere: 8) == .undetermined)
        // Past 24 operations a v2 card's ring has rotated too: undetermined, not a guess.
        #expect(try Self.decide(.v2, commit: .executed, elsewhere: 25) == .undetermined)
    }

    /// A v1 card keeps its six-entry ring in sectors 4-5: its value blocks keep address 09, entries go to
    /// `counter % 6` and verify without the layout byte, sectors 6-15 stay free, and the debit costs what it did.
    @Test func aV1CardKeepsItsLayout() throws {
        let bench = try Self.bench(.v1)
        let pos = Terminal(id: 7, journal: InMemoryTerminalJournal())
        for _ in 0..<8 { try bench.operations().debit(Fen(100), terminal: pos) }
        let ops = bench.operations()
        let writes = bench.reader.statistics.blockWrites
        let state = try ops.debit(Fen(100), terminal: pos)
        #expect(ops.session.apduCount == 12 && bench.reader.statistics.blockWrites - writes == 4)
        #expect(state.logRing == .v1 && state.record.counter == 10)
        let memory = try #require(bench.reader.currentCard?.memory)
        #expect(try ValueBlock(block: Array(memory[9 * 16..<10 * 16])).address == 0x09)
        let macKey = try bench.keystore.macKey(uid: bench.uid, version: 1)
        let log = try bench.operations().readLog(uid: bench.uid, macKey: macKey, version: 1)
        #expect(log.map(\.counter) == Array(5...10), "six entries, the newest six")
        let entry = try #require(LogEntry(block: Array(memory[LogEntry.block(forCounter: 10) * 16..<LogEntry.block(forCounter: 10) * 16 + 16]),
                                          number: LogEntry.block(forCounter: 10), uid: bench.uid, macKey: macKey))
        #expect(entry.balanceAfter == Fen(99_100))
        for sector in 6...15 { #expect(Array(memory[(sector * 4 + 3) * 16..<(sector * 4 + 4) * 16]) == SectorTrailer.transport.block) }
        let mad = try MAD(blocks: Array(memory[16..<48]))
        #expect(mad.sectors(of: CampusCardOperations.applicationID) == [1, 2, 3, 4, 5])
    }

    /// A v2 card: 24 entries in sectors 4-11, the ring learnt from the value blocks' address byte (89) with no extra
    /// APDU — a debit whose log write lands in sector 6 or beyond costs 12 APDUs (10 on the ACR1252U) and 4 writes.
    @Test(arguments: [ReaderKind.acr122u, .acr1252u])
    func aV2CardLogsTwentyFourEntriesAtTheSameCost(kind: ReaderKind) throws {
        let bench = try Self.bench(.v2, kind: kind)
        let pos = Terminal(id: 7, journal: InMemoryTerminalJournal())
        for count in 2...30 {
            let ops = bench.operations()
            let writes = bench.reader.statistics.blockWrites
            let state = try ops.debit(Fen(100), terminal: pos)
            #expect(state.logRing == .v2 && state.record.counter == UInt16(count))
            #expect(ops.session.apduCount == (kind == .acr122u ? 12 : 10), "counter \(count)")
            #expect(bench.reader.statistics.blockWrites - writes == 4)
        }
        let memory = try #require(bench.reader.currentCard?.memory)
        #expect(try ValueBlock(block: Array(memory[9 * 16..<10 * 16])).address == 0x89)
        #expect(try ValueBlock(block: Array(memory[10 * 16..<11 * 16])).address == 0x89)
        let macKey = try bench.keystore.macKey(uid: bench.uid, version: 1)
        let log = try bench.operations().readLog(uid: bench.uid, macKey: macKey, version: 1)
        #expect(log.map(\.counter) == Array(7...30), "24 entries, the newest 24")
        #expect(log.last?.balanceAfter == Fen(100_000 - 29 * 100))
        // Entry 30 is in slot 30 % 24 = 6: block 24, sector 6; it does not verify as a v1 entry (the layout byte).
        #expect(LogRing.v2.block(forCounter: 30) == 24)
        let block24 = Array(memory[24 * 16..<25 * 16])
        #expect(LogEntry(block: block24, number: 24, uid: bench.uid, macKey: macKey, ring: .v2)?.counter == 30)
        #expect(LogEntry(block: block24, number: 24, uid: bench.uid, macKey: macKey, ring: .v1) == nil)
    }

    /// A record torn garbled on a v2 card whose newest entry is in an added sector is rebuilt from it.
    @Test func aTornRecordIsRebuiltFromAnEntryInAnAddedSector() throws {
        let bench = try Self.bench(.v2)
        let pos = Terminal(id: 7, journal: InMemoryTerminalJournal())
        for _ in 2...14 { try bench.operations().debit(Fen(100), terminal: pos) }  // counter 14: slot 14, block 34 (sector 8)
        let other = Terminal(id: 9, journal: InMemoryTerminalJournal(startingSequence: 100))
        bench.tear(atAPDU: 8, .garbled) { try bench.operations().debit(Fen(500), terminal: other) }
        let state = try bench.operations().readPurse()
        #expect(state.resolution == .recordRebuilt && state.balance == Fen(100_000 - 13 * 100) && state.record.counter == 14)
        // Rebuilt: MAC'd again (today's total unknown, so the next debit asks for the PIN, as on any rebuilt card).
        #expect(try bench.operations().readPurse().resolution == .consistent)
    }

    /// The ring is named by a byte only key B can write, and an entry's MAC binds it to its ring: a v2 card whose
    /// address byte was rewritten to v1's finds no v1 entries (so no older entry can steer a rebuild), and an address
    /// no layout uses is refused before anything is written.
    @Test func aRewrittenAddressByteBuysNothing() throws {
        for (address, expected) in [(UInt8(0x09), CardOperationError.Code.tampered), (0x42, .unsupportedLayout)] {
            let bench = try Self.bench(.v2)
            let pos = Terminal(id: 7, journal: InMemoryTerminalJournal())
            for _ in 2...9 { try bench.operations().debit(Fen(1_000), terminal: pos) }
            let ops = bench.operations()
            let uid = try ops.session.uid()
            try ops.session.authenticate(sector: 2, keyType: .b, key: bench.keystore.sectorKey(uid: uid, sector: 2, role: .loader, version: 1))
            // An older balance that the entry for counter 5 (slot 5, block 22: read by a six-entry ring) shows.
            for block in [9, 10] { try ops.session.storeValue(block: block, value: 96_000, address: address) }
            try ops.session.write(block: 8, [UInt8](repeating: 0xA5, count: 16))  // and the record torn
            let writes = bench.reader.statistics.blockWrites
            let error = #expect(throws: CardOperationError.self) { try bench.operations().debit(Fen(100), terminal: pos) }
            #expect(error?.code == expected, "address \(address)")
            #expect(bench.reader.statistics.blockWrites == writes, "address \(address): nothing written")
        }
    }

    /// `card issue` writes the v2 sectors like sectors 4-5 (diversified keys, 7F 07 88, the MAD lists them), and
    /// `card rekey` re-keys them; on a v1 card it leaves sectors 6-15 alone.
    @Test func rekeyCoversTheAddedSectors() throws {
        for ring in LogRing.all {
            let bench = try Self.bench(ring)
            let rotated = try FileKeystore.rotate(path: bench.path)
            let rekeyed = try bench.operations(keystore: rotated).rekey()
            #expect(rekeyed.sorted() == [0, 1, 2, 3] + ring.sectors, "\(ring)")
            let memory = try #require(bench.reader.currentCard?.memory)
            for sector in ring.sectors {
                let keyA = try rotated.sectorKey(uid: bench.uid, sector: sector, role: .terminal, version: 2).bytes
                let trailer = Array(memory[(sector * 4 + 3) * 16..<(sector * 4 + 3) * 16 + 10])
                let expected: [UInt8] = keyA + [0x7F, 0x07, 0x88, 0x69]
                #expect(trailer == expected, "sector \(sector)")
            }
            for sector in (ring.sectors.last! + 1)...15 {
                #expect(Array(memory[(sector * 4 + 3) * 16..<(sector * 4 + 4) * 16]) == SectorTrailer.transport.block)
            }
            let pos = Terminal(id: 7, journal: InMemoryTerminalJournal())
            #expect(try bench.operations(keystore: rotated).debit(Fen(100), terminal: pos).balance == Fen(99_900))
        }
    }
}
