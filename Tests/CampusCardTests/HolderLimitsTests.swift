import CampusCard
import CardEmulator
import CardReader
import Crypto
import Foundation
import MifareClassic
import SmartCard
import Testing
import TestSupport

extension CardBench {
    static let pin = try! PIN("123456")
    static let otherPIN = try! PIN("654321")

    /// The card office sets the test PIN.
    func setPIN(_ pin: PIN = CardBench.pin) throws { try operations().setPIN(pin) }

    /// The purse record as on the card (after resolving it).
    func record() throws -> PurseRecord { try operations().readPurse().record }

    /// Bytes of a block as the emulated card holds them.
    func block(_ number: Int) throws -> [UInt8] {
        Array(try #require(reader.currentCard).memory[number * 16..<(number + 1) * 16])
    }
}

/// nil only for success: any other kind of error fails the test here, so "== nil" cannot pass on one.
private func code(_ body: () throws -> Void) -> CardOperationError.Code? {
    do { try body(); return nil } catch let error as CardOperationError { return error.code } catch {
        Issue.record("expected success or a typed refusal, got \(error)")
        return nil
    }
}

/// 一密两限: the holder's limits and PIN on the card (docs/card-layout.md "Holder limits and PIN").
@Suite struct HolderLimitsTests {
    let pos = Terminal(id: 7, journal: InMemoryTerminalJournal())

    func card(_ fen: Int = 100_000, pin: Bool = true) throws -> CardBench {
        let bench = try CardBench()
        try bench.issueAndLoad(fen, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        if pin { try bench.setPIN() }
        return bench
    }

    // MARK: Limits

    /// The defaults (50.00 / 100.00): exactly at a limit is allowed without the PIN, one fen over needs it.
    @Test func exactlyAtEachDefaultLimitIsAllowedOneFenOverNeedsThePIN() throws {
        let bench = try card()
        #expect(code { try bench.operations().debit(Fen(5_001), terminal: pos) } == .pinRequired)
        #expect(code { try bench.operations().debit(Fen(5_000), terminal: pos) } == nil)
        #expect(code { try bench.operations().debit(Fen(5_000), terminal: pos) } == nil, "today's total exactly 100.00")
        let daily = #expect(throws: CardOperationError.self) { try bench.operations().debit(Fen(1), terminal: pos) }
        #expect(daily?.code == .pinRequired && daily?.message.contains("100.00 yuan daily limit") == true)
        #expect(try bench.operations().debit(Fen(1), terminal: pos, pin: CardBench.pin).balance == Fen(89_999))
        #expect(try bench.operations().debit(Fen(5_001), terminal: pos, pin: CardBench.pin).balance == Fen(84_998))
    }

    /// A holder who lowered the limits below the defaults is asked for the PIN above them, even for an amount within
    /// the defaults (the purse record's bit makes the POS read the identity).
    @Test func aLoweredLimitIsHonouredWithinTheDefaults() throws {
        let bench = try card()
        try bench.operations().setHolderLimits(HolderLimits(perTransaction: Fen(1_000), daily: Fen(2_000)))
        #expect(try bench.record().holderLimitsLowered)
        #expect(code { try bench.operations().debit(Fen(1_001), terminal: pos) } == .pinRequired)
        #expect(code { try bench.operations().debit(Fen(1_000), terminal: pos) } == nil)
        #expect(code { try bench.operations().debit(Fen(1_000), terminal: pos) } == nil)
        #expect(code { try bench.operations().debit(Fen(1), terminal: pos) } == .pinRequired, "daily: 20.00 + 0.01")
        #expect(code { try bench.operations().debit(Fen(1), terminal: pos, pin: CardBench.pin) } == nil)
        #expect(try bench.record().holderLimitsLowered, "a debit keeps the bit")
        // Zero: every debit asks for the PIN.
        try bench.operations().setHolderLimits(HolderLimits(perTransaction: .zero, daily: .zero))
        #expect(code { try bench.operations().debit(Fen(1), terminal: pos) } == .pinRequired)
    }

    /// Raised limits let a debit above the defaults through without the PIN; back to the defaults clears the bit.
    @Test func raisedLimitsAndBackToTheDefaults() throws {
        let bench = try card()
        try bench.operations().setHolderLimits(HolderLimits(perTransaction: Fen(20_000), daily: Fen(30_000)))
        #expect(try !bench.record().holderLimitsLowered)
        #expect(code { try bench.operations().debit(Fen(15_000), terminal: pos) } == nil)
        #expect(code { try bench.operations().debit(Fen(15_001), terminal: pos) } == .pinRequired, "daily: 150.00 + 150.01")
        try bench.operations().setHolderLimits(HolderLimits(perTransaction: Fen(1_000), daily: Fen(1_000)))
        #expect(try bench.record().holderLimitsLowered)
        try bench.operations().setHolderLimits(.defaults)
        #expect(try !bench.record().holderLimitsLowered)
        #expect(try bench.operations().readIdentity().holder.limits == nil, "the defaults are stored as 'not set'")
    }

    @Test func limitsTheCardCannotHoldAreRefused() {
        #expect(code { _ = try HolderLimits(perTransaction: Fen(5_001), daily: Fen(5_000)) } == .invalidHolderSetting)
        #expect(code { _ = try HolderLimits(perTransaction: Fen(100), daily: Fen(65_535)) } == .invalidHolderSetting)
        #expect(code { _ = try HolderLimits(perTransaction: Fen(-1), daily: Fen(100)) } == .invalidHolderSetting)
        #expect(code { _ = try HolderLimits(perTransaction: HolderLimits.maximum, daily: HolderLimits.maximum) } == nil)
    }

    // MARK: PIN

    @Test func wrongPINCountsDownBlocksAndTheOfficeResetsIt() throws {
        let bench = try card()
        let before = try bench.operations().readPurse()
        let wrong = try PIN("000000")
        for left in [2, 1] {
            let error = #expect(throws: CardOperationError.self) { try bench.operations().debit(Fen(6_000), terminal: pos, pin: wrong) }
            #expect(error?.code == .pinWrong && error?.pinTriesLeft == left && error?.message.contains("\(left)") == true)
        }
        #expect(code { try bench.operations().debit(Fen(6_000), terminal: pos, pin: wrong) } == .pinBlocked)
        let after = try bench.operations().readPurse()
        #expect(after.balance == before.balance && after.record.counter == before.record.counter && after.resolution == .consistent,
                "a wrong PIN moves no money and no card counter")
        #expect(after.record.wrongPINTries == PINTries.blocked)
        #expect(code { try bench.operations().debit(Fen(6_000), terminal: pos, pin: CardBench.pin) } == .pinBlocked, "blocked even for the right PIN")
        #expect(code { try bench.operations().debit(Fen(6_000), terminal: pos) } == .pinBlocked)
        #expect(code { try bench.operations().debit(Fen(1_000), terminal: pos) } == nil, "within the limits a blocked PIN does not matter")
        #expect(try bench.record().wrongPINTries == PINTries.blocked, "and a debit within the limits keeps the count")
        try bench.operations().resetPINTries()
        #expect(try bench.record().wrongPINTries == 0)
        #expect(code { try bench.operations().debit(Fen(6_000), terminal: pos, pin: CardBench.pin) } == nil)
    }

    /// A right PIN resets the counter in the debit's own record write: no extra write.
    @Test func aRightPINResetsTheCounterInTheDebitsOwnWrite() throws {
        let bench = try card()
        #expect(code { try bench.operations().debit(Fen(6_000), terminal: pos, pin: PIN("111111")) } == .pinWrong)
        #expect(try bench.record().wrongPINTries == 1)
        let writes = bench.reader.statistics.blockWrites
        try bench.operations().debit(Fen(6_000), terminal: pos, pin: CardBench.pin)
        #expect(bench.reader.statistics.blockWrites - writes == 4)
        #expect(try bench.record().wrongPINTries == 0)
    }

    /// The PIN is checked only when a limit requires it: a wrong PIN given for a small debit is neither checked nor counted.
    @Test func thePINIsCheckedOnlyWhenALimitRequiresIt() throws {
        let bench = try card()
        #expect(code { try bench.operations().debit(Fen(100), terminal: pos, pin: PIN("999999")) } == nil)
        #expect(try bench.record().wrongPINTries == 0)
    }

    @Test func setPINReplacesThePINAndResetsTheTries() throws {
        let bench = try card()
        #expect(code { try bench.operations().debit(Fen(6_000), terminal: pos, pin: CardBench.otherPIN) } == .pinWrong)
        try bench.setPIN(CardBench.otherPIN)
        #expect(try bench.record().wrongPINTries == 0)
        #expect(code { try bench.operations().debit(Fen(6_000), terminal: pos, pin: CardBench.pin) } == .pinWrong, "the old PIN is gone")
        #expect(code { try bench.operations().debit(Fen(6_000), terminal: pos, pin: CardBench.otherPIN) } == nil)
    }

    /// A card of the first layout (block 5 bytes 3–11 zero; a freshly issued card is byte-identical) debits within the
    /// default limits; over them it has no PIN to check until the card office sets one, which migrates it.
    @Test func aCardOfTheFirstLayoutDebitsWithTheDefaultsAndIsMigratedAtTheOffice() throws {
        let bench = try card(pin: false)
        #expect(try bench.block(5)[3..<12].allSatisfy { $0 == 0 }, "a first-layout block 5")
        #expect(try bench.operations().readIdentity().holder == .defaults)
        #expect(code { try bench.operations().debit(Fen(5_000), terminal: pos) } == nil)
        #expect(code { try bench.operations().debit(Fen(5_001), terminal: pos, pin: CardBench.pin) } == .pinNotSet)
        try bench.setPIN()
        #expect(try bench.block(5)[3] == 0x02, "PIN set, limits still the defaults")
        #expect(code { try bench.operations().debit(Fen(5_001), terminal: pos, pin: CardBench.pin) } == nil)
        let identity = try bench.operations().readIdentity()
        #expect(identity.serial == bench.serial && identity.status == .normal && identity.holder.limits == nil)
    }

    // MARK: Tears

    /// A wrong PIN's record write torn: the card resolves, the balance is untouched, and the count never goes back
    /// below what it was (garbled: rebuilt from the log with one try left).
    @Test(arguments: [UInt8(0), 1])
    func aTornWrongPINWriteIsResolvedSafely(startingTries: UInt8) throws {
        let wrong = try PIN("000000")
        for effect in TearEffect.allCases {
            let bench = try card()
            for _ in 0..<startingTries { _ = code { try bench.operations().debit(Fen(6_000), terminal: pos, pin: wrong) } }
            let before = try bench.operations().readPurse()
            let probe = bench.operations()
            _ = code { try probe.debit(Fen(6_000), terminal: pos, pin: wrong) }
            let write = probe.session.apduCount  // the wrong-PIN write is the attempt's last APDU
            _ = code { try bench.operations().resetPINTries() }
            for _ in 0..<startingTries { _ = code { try bench.operations().debit(Fen(6_000), terminal: pos, pin: wrong) } }
            bench.tear(atAPDU: write, effect) { try bench.operations().debit(Fen(6_000), terminal: pos, pin: wrong) }
            let after = try bench.operations().readPurse()
            #expect(after.balance == before.balance, "\(effect)")
            let expected: UInt8 = switch effect {
            case .notExecuted, .leftOld: startingTries
            case .executed: startingTries + 1
            case .garbled: max(startingTries, PINTries.afterRebuild)
            }
            #expect(after.record.wrongPINTries == expected, "\(effect): \(after.record.wrongPINTries) tries")
            #expect(after.record.wrongPINTries >= startingTries, "\(effect): a tear never gives tries back")
            #expect(code { try bench.operations().debit(Fen(6_000), terminal: pos, pin: CardBench.pin) } == nil, "\(effect)")
            #expect(try bench.record().wrongPINTries == 0, "\(effect)")
        }
    }

    enum OfficeCommand: String, CaseIterable { case lowerLimits = "set-limits (lower)", raiseLimits = "set-limits (raise)", setPIN = "set-pin" }

    /// Every APDU of set-limits and set-pin torn with every effect: the card still resolves and debits 1.00 (with the
    /// PIN, in case a rebuilt record asks for it); a lowered limit in the identity always comes with the record's bit;
    /// repeating the command completes it.
    @Test(arguments: OfficeCommand.allCases)
    func tornOfficeWritesLeaveTheCardUsable(command: OfficeCommand) throws {
        let lowered = try HolderLimits(perTransaction: Fen(1_000), daily: Fen(2_000))
        let raised = try HolderLimits(perTransaction: Fen(20_000), daily: Fen(30_000))
        func prepare() throws -> CardBench {
            let bench = try card()
            if command == .raiseLimits { try bench.operations().setHolderLimits(lowered) }
            return bench
        }
        func run(_ ops: CampusCardOperations) throws {
            switch command {
            case .lowerLimits: try ops.setHolderLimits(lowered)
            case .raiseLimits: try ops.setHolderLimits(raised)
            case .setPIN: try ops.setPIN(CardBench.otherPIN)
            }
        }
        let probe = try prepare()
        let probeOps = probe.operations()
        try run(probeOps)
        let apdus = probeOps.session.apduCount
        for index in 1...apdus {
            for effect in TearEffect.allCases {
                let label = "\(command.rawValue) torn at APDU \(index)/\(apdus) (\(effect.rawValue))"
                let bench = try prepare()
                bench.tear(atAPDU: index, effect) { try run(bench.operations()) }
                let state = try bench.operations().readPurse()
                if let identity = try? bench.operations().readIdentity(), identity.holder.effectiveLimits.lowered {
                    #expect(state.record.holderLimitsLowered, "\(label): a lowered limit without the record's bit")
                }
                let macKey = try bench.keystore.macKey(uid: bench.uid, version: 1)
                func cardPIN() -> PIN? {
                    guard let verifier = try? bench.operations().readIdentity().holder.pinVerifier else { return nil }
                    return verifier.matches(CardBench.otherPIN, uid: bench.uid, macKey: macKey) ? CardBench.otherPIN : CardBench.pin
                }
                #expect(code { try bench.operations().debit(Fen(100), terminal: pos, pin: cardPIN()) } == nil, "\(label)")
                try run(bench.operations())
                let identity = try bench.operations().readIdentity()
                switch command {
                case .lowerLimits: #expect(identity.holder.limits == lowered, "\(label)")
                case .raiseLimits: #expect(identity.holder.limits == raised, "\(label)")
                case .setPIN: #expect(cardPIN() == CardBench.otherPIN, "\(label)")
                }
                #expect(try bench.record().holderLimitsLowered == identity.holder.effectiveLimits.lowered, "\(label)")
                // A block 5 torn mid-write loses the other setting (the PIN, for set-limits): `card show` says so, and
                // the office sets it again; a rebuilt record left one try, which the office resets.
                if identity.holder.pinVerifier == nil { try bench.setPIN() }
                try bench.operations().resetPINTries()
                let over = Fen(identity.holder.effectiveLimits.perTransaction.rawValue + 1)
                #expect(code { try bench.operations().debit(over, terminal: pos) } == .pinRequired, "\(label)")
                let ok = code { try bench.operations().debit(over, terminal: pos, pin: cardPIN()) } == nil
                #expect(ok, "\(label): a debit over the limit with the PIN")
            }
        }
    }

    /// A debit torn at its record write on a card with lowered limits: the rebuilt record takes the bit from the
    /// identity and gets one PIN try left.
    @Test func aRebuiltRecordKeepsTheLoweredBitAndHasOneTryLeft() throws {
        let bench = try card()
        try bench.operations().setHolderLimits(HolderLimits(perTransaction: Fen(1_000), daily: Fen(2_000)))
        let probe = bench.operations()
        try probe.debit(Fen(100), terminal: pos)
        let commit = probe.session.apduCount - 4  // the record write: before copy, LOAD KEY, AUTH, log write
        bench.tear(atAPDU: commit, .garbled) { try bench.operations().debit(Fen(100), terminal: pos) }
        let state = try bench.operations().readPurse()
        #expect(state.resolution == .recordRebuilt)
        #expect(state.record.holderLimitsLowered && state.record.wrongPINTries == PINTries.afterRebuild)
        #expect(code { try bench.operations().debit(Fen(100), terminal: pos, pin: PIN("000000")) } == .pinBlocked)
        try bench.operations().resetPINTries()
        #expect(code { try bench.operations().debit(Fen(100), terminal: pos, pin: CardBench.pin) } == nil)
    }

    // MARK: Cost

    /// Within the default limits on a card whose limits are not lowered: 12 APDUs (debitCostsOnACR122U). When a limit
    /// may require the PIN, the identity is read: +5 on the ACR122U (LOAD KEY, AUTH, READ 4, READ 5, AUTH back to
    /// sector 2, whose key is still in a reader slot), +4 on the ACR1252U (one read for blocks 4-5).
    @Test(arguments: [(ReaderKind.acr122u, 17), (.acr1252u, 14)])
    func aDebitThatReadsTheIdentityCosts(kind: ReaderKind, apdus: Int) throws {
        let bench = try CardBench(kind: kind)
        try bench.issueAndLoad(100_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        try bench.setPIN()
        let ops = bench.operations()
        let writes = bench.reader.statistics.blockWrites
        try ops.debit(Fen(6_000), terminal: pos, pin: CardBench.pin)
        #expect(ops.session.apduCount == apdus)
        #expect(bench.reader.statistics.blockWrites - writes == 4)
        // A card whose holder lowered the limits: the identity is read for a debit within them too, no PIN needed.
        let other = try CardBench(kind: kind)
        try other.issueAndLoad(100_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        try other.operations().setHolderLimits(HolderLimits(perTransaction: Fen(1_000), daily: Fen(2_000)))
        let lowered = other.operations()
        try lowered.debit(Fen(100), terminal: pos)
        #expect(lowered.session.apduCount == apdus, "a lowered card reads the identity for every debit")
    }

    // MARK: Codec

    @Test func blockFiveAndTheRecordBitsAtTheDocumentedOffsets() throws {
        let uid: [UInt8] = [0x5A, 0x17, 0x01, 0x99]
        let macKey = SymmetricKey(data: [UInt8](repeating: 0x42, count: 16))
        let verifier = PINVerifier(pin: CardBench.pin, uid: uid, macKey: macKey)
        let settings = HolderSettings(limits: try HolderLimits(perTransaction: Fen(0x1234), daily: Fen(0x5678)), pinVerifier: verifier)
        let identity = Identity(serial: 1, account: 2, type: .student, keyVersion: 1, issued: CardDay(rawValue: 1), expires: CardDay(rawValue: 2),
                                holder: settings)
        let blocks = identity.encode(uid: uid, macKey: macKey)
        #expect(Array(blocks.second[3..<8]) == [0x03, 0x12, 0x34, 0x56, 0x78])
        #expect(try Identity(first: blocks.first, second: blocks.second, uid: uid, macKey: macKey) == identity)
        // The verifier: not the PIN, bound to the PIN, the UID and the MAC key; never printed.
        #expect(Array(blocks.second[8..<12]) != Array("1234".utf8) && verifier.matches(CardBench.pin, uid: uid, macKey: macKey))
        #expect(!verifier.matches(CardBench.otherPIN, uid: uid, macKey: macKey))
        #expect(!verifier.matches(CardBench.pin, uid: [0x5A, 0x17, 0x01, 0x98], macKey: macKey))
        #expect(!verifier.matches(CardBench.pin, uid: uid, macKey: SymmetricKey(data: [UInt8](repeating: 0x43, count: 16))))
        #expect("\(verifier) \(CardBench.pin) \(settings)".contains("123456") == false)
        #expect("\(CardBench.pin)" == "<PIN redacted>")
        #expect(code { _ = try PIN("12a456") } == .invalidHolderSetting && code { _ = try PIN("123") } == .invalidHolderSetting)
        // Unknown flags under a valid MAC: newer software wrote them.
        var future = blocks.second
        future[3] = 0x07
        let signed = Array(future[0..<12]) + CardMAC.compute(key: macKey, uid: uid, block: 4, record: blocks.first + Array(future[0..<12]))
        #expect(code { _ = try Identity(first: blocks.first, second: signed, uid: uid, macKey: macKey) } == .unsupportedLayout)
        // Record byte 2: tries << 6 | status << 4 | lowered << 3 | operation.
        let record = PurseRecord(counter: 1, status: .frozen, lastOperation: .debit, lastDay: CardDay(rawValue: 1), debitedToday: .zero,
                                 expires: CardDay(rawValue: 2), terminalID: 1, terminalSequence: 1, wrongPINTries: 2, holderLimitsLowered: true)
        let block = record.encode(uid: uid, balance: Fen(100), macKey: macKey)
        #expect(block[2] == 0b10_10_1_001)
        #expect(try PurseRecord(block: block) == record)
    }
}
