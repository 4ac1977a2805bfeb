import CampusCard
import CardEmulator
import SmartCard
import Testing

@Suite struct WaterWalletTests {
    /// A blank card (or another system's) is `not-campus-card` at every water operation, as at the POS: the first
    /// sector each opens (identity or water wallet) does not open with our keys.
    @Test func aBlankCardIsNotACampusCardAtTheWaterController() throws {
        let bench = try CardBench()
        let terminal = Terminal(id: 9, journal: InMemoryTerminalJournal())
        let calls: [(String, (CampusCardOperations) throws -> Void)] = [
            ("identity", { _ = try $0.readIdentity() }),
            ("tap", { _ = try $0.waterTap(terminal: terminal) }),
            ("debit", { _ = try $0.waterDebit(Fen(5), terminal: terminal) }),
            ("settle", { _ = try $0.waterSettle(terminal: terminal) }),
            ("purse debit", { _ = try $0.debit(Fen(5), terminal: terminal) }),
        ]
        for (name, call) in calls {
            let error = #expect(throws: CardOperationError.self, "\(name)") { try call(bench.operations()) }
            #expect(error?.code == .notCampusCard, "\(name): \(String(describing: error))")
        }
        #expect(try terminal.journal.openIntents(cardUID: bench.uidHex).isEmpty)
    }

    @Test func settleRefillDebitAndSettleAgain() throws {
        let bench = try CardBench()
        let station = Terminal(id: 3, journal: InMemoryTerminalJournal())
        let shower = Terminal(id: 40, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(0, terminal: station)
        let first = try bench.operations().waterSettle(terminal: station, reference: 1)
        #expect(first.consumption == .zero && first.refill == Fen(1_000) && first.state.balance == Fen(1_000))
        let ops = bench.operations()
        let writesBefore = bench.reader.statistics.blockWrites
        try ops.waterDebit(Fen(5), terminal: shower)
        #expect(bench.reader.statistics.blockWrites - writesBefore == 3, "a unit debit writes 3 blocks")
        #expect(ops.session.apduCount == 14, "one-shot: the identity (status, expiry) is read too")
        // A controller that checked the card's status when it arrived debits the following units with 9 APDUs.
        let unit = bench.operations()
        try unit.waterDebit(Fen(5), terminal: shower, validityChecked: true)
        #expect(unit.session.apduCount == 9)
        for _ in 0..<8 { try bench.operations().waterDebit(Fen(5), terminal: shower) }
        #expect(try bench.operations().readWater().balance == Fen(950))
        // A partial refill (the account can pay only 0.20): the next settlement still charges exactly what was used.
        let partial = try bench.operations().waterSettle(terminal: station, reference: 2, maximumRefill: Fen(20))
        #expect(partial.consumption == Fen(50) && partial.refill == Fen(20) && partial.state.balance == Fen(970))
        try bench.operations().waterDebit(Fen(70), terminal: shower)
        let second = try bench.operations().waterSettle(terminal: station, reference: 3)
        #expect(second.consumption == Fen(70) && second.refill == Fen(100) && second.state.balance == Fen(1_000))
        let error = #expect(throws: CardOperationError.self) { try bench.operations().waterDebit(Fen(1_001), terminal: shower) }
        #expect(error?.code == .insufficientFunds)
    }

    enum Operation: String, CaseIterable { case waterDebit = "water debit", waterSettle = "water settle" }

    @Test(arguments: Operation.allCases)
    func tearMatrix(operation: Operation) throws {
        func setUp() throws -> (CardBench, Terminal) {
            let bench = try CardBench()
            let terminal = Terminal(id: 9, journal: InMemoryTerminalJournal())
            try bench.issueAndLoad(0, terminal: terminal)
            try bench.operations().waterSettle(terminal: terminal, reference: 1)
            try bench.operations().waterDebit(Fen(300), terminal: terminal)
            return (bench, terminal)
        }
        @discardableResult
        func run(_ ops: CampusCardOperations, _ terminal: Terminal) throws -> [String] {
            switch operation {
            case .waterDebit: try ops.waterDebit(Fen(5), terminal: terminal).warnings
            case .waterSettle: try ops.waterSettle(terminal: terminal, reference: 2).state.warnings
            }
        }
        let (probe, probeTerminal) = try setUp()
        let probeOps = probe.operations()
        try run(probeOps, probeTerminal)
        let apdus = probeOps.session.apduCount
        var scenarios = 0, undetermined = 0, refusedElsewhere = 0
        for index in 1...apdus {
            for effect in TearEffect.allCases {
                for retap in TearMatrixTests.Retap.allCases {
                    let (bench, terminal) = try setUp()
                    let start = try bench.operations().readWater().balance
                    let journal = terminal.journal as! InMemoryTerminalJournal
                    let intentsBefore = journal.entries.count
                    let label = "\(operation.rawValue) torn at APDU \(index)/\(apdus) (\(effect.rawValue)), re-tap: \(retap.rawValue)"
                    bench.reader.arm(TearPlan(atAPDU: index, effect: effect))
                    do {
                        // Torn after its commit: done, so it returns, saying what failed after the commit.
                        let warnings = try run(bench.operations(), terminal)
                        #expect(!warnings.isEmpty, "\(label): not interrupted")
                    } catch let error as any TransportError {
                        #expect(error.transportFailure == .cardRemoved, "\(label)")
                    } catch {
                        Issue.record("\(label): \(error)")
                        continue
                    }
                    bench.reader.reinsert()
                    var state: WaterState
                    var elsewhere = retap == .debitElsewhere ? 5 : 0
                    do {
                        let other = Terminal(id: 10, journal: InMemoryTerminalJournal())
                        do {
                            switch retap {
                            case .here: state = try bench.operations().waterTap(terminal: terminal)
                            case .elsewhere: state = try bench.operations().waterTap(terminal: other)
                            case .debitElsewhere: state = try bench.operations().waterDebit(Fen(5), terminal: other)
                            }
                        } catch let error as CardOperationError where error.code == .waterInterrupted && retap != .here {
                            // The commit tore the record: nothing on the card vouches for a balance, so another
                            // controller refuses it and only the interrupted one restores it, from its journal.
                            refusedElsewhere += 1
                            elsewhere = 0
                            state = try bench.operations().waterTap(terminal: terminal)
                            #expect(state.resolution == .rolledBack, "\(label)")
                        }
                        let again = try bench.operations().readWater()
                        #expect(again.resolution == .consistent && again.balance == state.balance, "\(label)")
                        if retap != .here { try bench.operations().waterTap(terminal: terminal) }
                    } catch {
                        Issue.record("\(label): re-tap failed: \(error)")
                        continue
                    }
                    let expected = operation == .waterDebit ? Fen(start.rawValue - 5) : Fen(1_000)
                    let done = state.balance.rawValue + elsewhere != start.rawValue
                    #expect(state.balance.rawValue + elsewhere == (done ? expected : start).rawValue, "\(label): \(state.balance)")
                    if journal.entries.count == intentsBefore {
                        #expect(!done, "\(label): changed without an intent")
                    } else {
                        let outcome = journal.entries.last?.outcome
                        #expect(outcome != nil, "\(label): left open")
                        switch outcome {
                        case .done: #expect(done, "\(label)")
                        case .notDone: #expect(!done, "\(label)")
                        // There is no water log: once another controller moved the counter on, the card cannot say.
                        case .undetermined: #expect(retap == .debitElsewhere, "\(label): undetermined")
                        case nil: break
                        }
                        if outcome == .undetermined { undetermined += 1 }
                    }
                    scenarios += 1
                }
            }
        }
        print("tear matrix (\(operation.rawValue)): \(apdus) APDU indices x \(TearEffect.allCases.count) effects x \(TearMatrixTests.Retap.allCases.count) re-taps = \(scenarios) scenarios (\(undetermined) left undetermined at the interrupted controller; \(refusedElsewhere) refused elsewhere until the interrupted one restored the card)")
        #expect(scenarios == apdus * TearEffect.allCases.count * TearMatrixTests.Retap.allCases.count)
    }
}
