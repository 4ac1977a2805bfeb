import CampusCard
import CardEmulator
import Foundation
import Testing

/// A blacklisted card locked at a terminal that holds key A only (issue 10, item 5).
@Suite struct TerminalLockTests {
    func posKeystore(_ bench: CardBench) throws -> FileKeystore {
        let path = NSTemporaryDirectory() + "pos-\(UUID().uuidString).json"
        return try FileKeystore.export(from: bench.path, to: path, roles: [.terminal, .mac])
    }

    @Test func aPosLocksTheCardAndEveryDebitThenRefusesIt() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let pos = try posKeystore(bench)
        let state = try bench.operations(keystore: pos).lockAtTerminal(.lost)
        #expect(state.record.status == .lost && state.balance == Fen(10_000))
        let terminal = Terminal(id: 7, journal: InMemoryTerminalJournal())
        #expect(throws: CardOperationError.self) { try bench.operations(keystore: pos).debit(Fen(100), terminal: terminal) }
        do {
            _ = try bench.operations(keystore: pos).debit(Fen(100), terminal: terminal)
        } catch let error as CardOperationError {
            #expect(error.code == .cardLocked)
        }
        // The lock has its log entry (no gap for a rebuild), and the card office reconciles the identity from it.
        let purse = try bench.operations().readPurse()
        #expect(purse.resolution == .consistent && purse.record.status == .lost)
        let office = bench.operations()
        let identity = try office.reconcileStatus(office.readIdentity(), with: purse)
        #expect(identity.status == .lost)
    }

    /// A load or a water settlement needs key B: on a POS keystore it is refused before its intent is journalled
    /// (a not-done record would otherwise be queued for upload) and before the card is touched.
    @Test func aPosKeystoreLoadsNothingAndJournalsNothing() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(100, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let before = try bench.operations().readPurse()
        let journal = InMemoryTerminalJournal()
        let terminal = Terminal(id: 9, journal: journal)
        let pos = try posKeystore(bench)
        for attempt in [{ _ = try bench.operations(keystore: pos).load(Fen(500), terminal: terminal) },
                        { _ = try bench.operations(keystore: pos).waterSettle(terminal: terminal) }] as [() throws -> Void] {
            do {
                try attempt()
                Issue.record("a POS keystore wrote with key B")
            } catch let error as CardOperationError {
                #expect(error.code == .unknownKeyVersion && error.message.contains("loader master"), "\(error.message)")
            }
        }
        #expect(journal.entries.isEmpty)
        let after = try bench.operations().readPurse()
        #expect(after.balance == before.balance && after.record.counter == before.record.counter)
    }

    @Test func aTerminalCannotUnlock() throws {
        let bench = try CardBench()
        try bench.issueAndLoad(100, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        #expect(throws: CardOperationError.self) { try bench.operations(keystore: try posKeystore(bench)).lockAtTerminal(.normal) }
    }

    /// Torn at every APDU of the lock: the card stays readable and consistent at the next tap, and a second lock
    /// (the blacklist still lists it) locks it.
    @Test func aTornLockIsDoneAgainAtTheNextTap() throws {
        for index in 1...14 {
            let bench = try CardBench()
            try bench.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
            let pos = try posKeystore(bench)
            for effect in [TearEffect.leftOld, .executed, .garbled] {
                bench.reader.arm(TearPlan(atAPDU: index, effect: effect))
                _ = try? bench.operations(keystore: pos).lockAtTerminal(.frozen)
                _ = bench.reader.reinsert()
                bench.reader.arm(nil)
                let state = try bench.operations(keystore: pos).lockAtTerminal(.frozen)
                #expect(state.record.status == .frozen && state.balance == Fen(10_000), "tear at \(index) (\(effect))")
            }
        }
    }
}
