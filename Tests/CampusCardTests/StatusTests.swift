import CampusCard
import CardEmulator
import Testing

@Suite struct StatusTests {
    @Test func lockedCardsAreRefusedEverywhereUntilUnlocked() throws {
        let bench = try CardBench()
        let pos = Terminal(id: 7, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(5_000, terminal: pos)
        try bench.operations().waterSettle(terminal: pos, reference: 1)
        try bench.operations().setStatus(.lost)
        let writes = bench.reader.statistics.blockWrites
        // Every station refuses it: POS debit, loading station, settlement station, water controller.
        let attempts: [(String, () throws -> Void)] = [
            ("POS debit", { try bench.operations().debit(Fen(100), terminal: pos) }),
            ("load", { try bench.operations().load(Fen(100), terminal: pos) }),
            ("water settlement", { try bench.operations().waterSettle(terminal: pos, reference: 2) }),
            ("water debit", { try bench.operations().waterDebit(Fen(5), terminal: pos) }),
        ]
        for (station, attempt) in attempts {
            let error = #expect(throws: CardOperationError.self, "\(station)") { try attempt() }
            #expect(error?.code == .cardLocked, "\(station): \(String(describing: error))")
        }
        #expect(bench.reader.statistics.blockWrites == writes, "nothing written")
        #expect(try bench.operations().readIdentity().status == .lost)
        try bench.operations().setStatus(.normal)
        #expect(try bench.operations().debit(Fen(100), terminal: pos).balance == Fen(4_900))
    }

    @Test func expiredCardsAreNotLoaded() throws {
        let bench = try CardBench()
        let station = Terminal(id: 3, journal: InMemoryTerminalJournal())
        try bench.operations().issue(Identity(serial: 1, account: 1, type: .temporary, keyVersion: 1,
                                              issued: CardDay(rawValue: 9_000), expires: CardDay(rawValue: 9_001)))
        let error = #expect(throws: CardOperationError.self) { try bench.operations().load(Fen(100), terminal: station) }
        #expect(error?.code == .expired)
        let water = #expect(throws: CardOperationError.self) { try bench.operations().waterSettle(terminal: station, reference: 1) }
        #expect(water?.code == .expired)
        // A POS refuses it too, from the purse record's copy of the expiry (no identity read on the debit path).
        let pos = #expect(throws: CardOperationError.self) { try bench.operations().debit(Fen(1), terminal: station) }
        #expect(pos?.code == .expired)
    }

    /// A lock torn at any APDU: the card either still debits with the identity normal, or refuses debits.
    @Test func tornLockNeverLeavesADebitableLockedCard() throws {
        let probe = try CardBench()
        try probe.issueAndLoad(5_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let ops = probe.operations()
        try ops.setStatus(.frozen)
        let apdus = ops.session.apduCount
        for index in 1...apdus {
            for effect in TearEffect.allCases {
                let bench = try CardBench()
                let pos = Terminal(id: 7, journal: InMemoryTerminalJournal())
                try bench.issueAndLoad(5_000, terminal: pos)
                try bench.setPIN()
                bench.tear(atAPDU: index, effect, { try bench.operations().setStatus(.frozen) })
                // A block 5 torn mid-write makes the identity unreadable until the card office repeats the change.
                let identityStatus = try? bench.operations().readIdentity().status
                do {
                    // PIN checked: a record rebuilt after the tear asks for it (today's total unknown).
                    try bench.operations().debit(Fen(100), terminal: pos, pin: CardBench.pin)
                    #expect(identityStatus == .normal, "APDU \(index) \(effect): debited a card whose identity says \(identityStatus)")
                } catch let error as CardOperationError {
                    #expect(error.code == .cardLocked, "APDU \(index) \(effect): \(error)")
                }
                // Repeating the lock always completes it, whatever the tear left.
                try bench.operations().setStatus(.frozen)
                #expect(try bench.operations().readIdentity().status == .frozen, "APDU \(index) \(effect)")
            }
        }
        print("tear matrix (lock): \(apdus) APDU indices x \(TearEffect.allCases.count) effects = \(apdus * TearEffect.allCases.count) scenarios")
    }
}
