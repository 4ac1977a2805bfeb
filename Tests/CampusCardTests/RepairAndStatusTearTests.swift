import CampusCard
import CardEmulator
import Foundation
import MifareClassic
import Testing

/// Issue 8, item 5: after any tear of a status change the office's next tap decides it and goes on; the card office's
/// repair brings a card back from states no terminal can decide alone.
@Suite struct RepairAndStatusTearTests {
    /// Overwrites a block of the emulated card, as a second tear (or damage) would.
    func overwrite(_ bench: CardBench, block: Int, with bytes: [UInt8]) throws {
        var image = try #require(bench.reader.currentCard).memory
        image.replaceSubrange(block * 16..<(block + 1) * 16, with: bytes)
        bench.reader.insert(try EmulatedCard(image: image))
    }

    enum Change: String, CaseIterable { case lost, frozen, cancelled, unlock }

    /// Every APDU of every status change (lock as lost / frozen / cancelled, and unlock) torn with every effect: the
    /// office's next tap reads the identity and the purse without an error (an identity torn mid-write is decided from
    /// the purse record), both show the same status, either the old or the new one, the balance is untouched, and
    /// repeating the change completes it.
    @Test(arguments: Change.allCases)
    func everyTornStatusChangeIsDecidedAtTheNextTap(change: Change) throws {
        let target: Identity.Status = change == .unlock ? .normal : Identity.Status.allCases.first { $0.name == change.rawValue }!
        let initial: Identity.Status = change == .unlock ? .lost : .normal
        func scene() throws -> CardBench {
            let bench = try CardBench()
            try bench.issueAndLoad(5_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
            if initial != .normal { try bench.operations().setStatus(initial) }
            return bench
        }
        let probe = try scene()
        let probeOps = probe.operations()
        try probeOps.setStatus(target)
        let apdus = probeOps.session.apduCount
        var scenarios = 0, newStatus = 0
        for index in 1...apdus {
            for effect in TearEffect.allCases {
                let bench = try scene()
                let label = "\(change.rawValue) torn at APDU \(index)/\(apdus) (\(effect.rawValue))"
                bench.tear(atAPDU: index, effect, { try bench.operations().setStatus(target) })
                do {
                    let office = bench.operations()
                    let purse = try office.readPurse()
                    let identity = try office.reconcileStatus(office.readIdentity(), with: purse)
                    #expect(try bench.operations().readIdentity(repairing: false).status == identity.status, "\(label): written")
                    #expect(identity.status == purse.record.status, "\(label): identity \(identity.status), purse \(purse.record.status)")
                    #expect([initial, target].contains(purse.record.status), "\(label)")
                    #expect(purse.balance == Fen(5_000), "\(label)")
                    if purse.record.status == target { newStatus += 1 }
                    try bench.operations().setStatus(target)
                    #expect(try bench.operations().readIdentity().status == target, "\(label)")
                } catch {
                    Issue.record("\(label): the office's next tap failed: \(error)")
                }
                scenarios += 1
            }
        }
        print("tear matrix (status change: \(change.rawValue)): \(apdus) APDU indices x \(TearEffect.allCases.count) effects = \(scenarios) scenarios (\(newStatus) already in the new status at the next tap)")
        #expect(scenarios == apdus * TearEffect.allCases.count)
    }

    /// The issue's reproduction: lock lost, then an unlock torn during its identity write (garbled). The office's
    /// next `show`-like tap and a load go on (the unlock is not done: the purse record still says lost).
    @Test func anUnlockTornDuringItsIdentityWriteIsDecidedNotDone() throws {
        let bench = try CardBench()
        let office = Terminal(id: 1, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(5_000, terminal: office)
        try bench.operations().setStatus(.lost)
        // Unlock writes the identity first: find that write by probing (its tear garbles block 5).
        var torn = false
        for index in 1...30 where !torn {
            let copy = try CardBench()
            try copy.issueAndLoad(5_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
            try copy.operations().setStatus(.lost)
            copy.tear(atAPDU: index, .garbled, { try copy.operations().setStatus(.normal) })
            if (try? copy.operations().readIdentity(repairing: false)) == nil {
                torn = true
                bench.tear(atAPDU: index, .garbled, { try bench.operations().setStatus(.normal) })
            }
        }
        #expect(torn)
        #expect(throws: CardOperationError.self) { try bench.operations().readIdentity(repairing: false) }
        #expect(try bench.operations().readIdentity().status == .lost)
        let load = #expect(throws: CardOperationError.self) { try bench.operations().load(Fen(100), terminal: office) }
        #expect(load?.code == .cardLocked, "the unlock did not happen: the card is still lost")
        try bench.operations().setStatus(.normal)
        #expect(try bench.operations().load(Fen(100), terminal: office).balance == Fen(5_100))
    }

    /// A card no terminal can decide alone: the purse record torn and the log entry that would rebuild it destroyed
    /// (two tears), the water values forged, block 5 garbled. The office's repair puts the purse record back from the
    /// POS's journal, rewrites the identity, resets the water wallet, and says so; the card is valid everywhere after.
    @Test func theOfficeRepairsWhatNoTerminalCanDecide() throws {
        let bench = try CardBench()
        let office = Terminal(id: 1, journal: InMemoryTerminalJournal())
        let pos = Terminal(id: 21, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(5_000, terminal: office)
        try bench.operations().waterSettle(terminal: office, reference: 1)
        let commit = try CardBench.commitIndex(scene: {
            let copy = try CardBench()
            try copy.issueAndLoad(5_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
            try copy.operations().waterSettle(terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()), reference: 1)
            return (copy, Terminal(id: 21, journal: InMemoryTerminalJournal()))
        }, operation: { copy, terminal in try copy.operations().debit(Fen(700), terminal: terminal) })
        bench.tear(atAPDU: commit, .garbled, { try bench.operations().debit(Fen(700), terminal: pos) })
        let garbage = [UInt8](repeating: 0x5C, count: 16)
        for block in LogEntry.blocks { try overwrite(bench, block: block, with: garbage) }
        try overwrite(bench, block: 5, with: garbage)
        try overwrite(bench, block: 13, with: ValueBlock(value: 1_000, address: 13).block)
        try overwrite(bench, block: 14, with: ValueBlock(value: 1_000, address: 13).block)
        try overwrite(bench, block: 12, with: garbage)
        let elsewhere = #expect(throws: CardOperationError.self) { try bench.operations().readPurse() }
        #expect(elsewhere?.code == .tampered, "no terminal but the POS can vouch for the purse")

        let posRecords = (pos.journal as! InMemoryTerminalJournal).entries.map(\.intent)
        let report = try bench.operations().repair(terminal: office, records: posRecords)
        #expect(report.isValid, "\(report)")
        #expect(report.purse.result == "repaired" && report.purseState?.balance == Fen(5_000), "\(report.purse)")
        #expect(report.identity.result == "repaired", "\(report.identity)")
        #expect(report.water.result == "reset" && report.unverifiedWater == Fen(1_000) && report.waterState?.balance == .zero, "\(report.water)")
        #expect(try bench.operations().readPurse().resolution == .consistent)
        #expect(try bench.operations().readIdentity(repairing: false).status == .normal)
        #expect(try bench.operations().readWater().balance == .zero)
        #expect(try bench.operations().debit(Fen(100), terminal: pos).balance == Fen(4_900))
        try bench.operations().tap(terminal: pos)
        #expect(try pos.journal.outcome(terminalSequence: 1) == .notDone)
        // Repairing a valid card changes nothing.
        let again = try bench.operations().repair(terminal: office)
        #expect([again.identity.result, again.purse.result, again.water.result] == ["ok", "ok", "ok"], "\(again)")
    }
}

extension RepairAndStatusTearTests {
    /// Found by the soak (seed 1, 20,000 operations): a debit's log write torn after its backup copy leaves a gap no
    /// tap notices; the office's lock then tears its record write (garbled). The lock fills the gap before writing, so
    /// the torn record is rebuilt from it instead of stranding the card.
    @Test func aLockTornAfterALogGapLeavesAWorkingCard() throws {
        func scene() throws -> (CardBench, Terminal) {
            let bench = try CardBench()
            try bench.issueAndLoad(5_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
            let pos = Terminal(id: 21, journal: InMemoryTerminalJournal())
            bench.tearAfterCommit(atAPDU: 12, .leftOld) { try bench.operations().debit(Fen(300), terminal: pos).warnings }
            return (bench, pos)
        }
        let (bench, _) = try scene()
        let macKey = try bench.keystore.macKey(uid: bench.uid, version: 1)
        #expect(try bench.operations().readLog(uid: bench.uid, macKey: macKey, version: 1).contains { $0.counter == 2 } == false, "a gap")
        // Every APDU of the lock torn garbled (its record write among them): the card stays readable.
        let (probe, _) = try scene()
        let probeOps = probe.operations()
        try probeOps.setStatus(.frozen)
        for index in 1...probeOps.session.apduCount {
            let (copy, _) = try scene()
            copy.tear(atAPDU: index, .garbled, { try copy.operations().setStatus(.frozen) })
            #expect(throws: Never.self, "lock torn at APDU \(index) (garbled): the card must stay readable") { try copy.operations().readPurse() }
        }
        #expect(try bench.operations().readPurse().balance == Fen(4_700))
    }
}
