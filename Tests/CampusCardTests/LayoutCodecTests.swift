import CampusCard
import Crypto
import Foundation
import Testing

/// The layout v1 codecs on their own (no card): round trips and every refusal, including blocks that carry a valid
/// MAC but a value the layout does not define (what a MAC check alone would let through).
@Suite struct LayoutCodecTests {
    let uid: [UInt8] = [0x04, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6]
    let macKey = SymmetricKey(size: .bits128)

    /// A block whose bytes 0–11 are `body` under a valid MAC (as a key holder would write it).
    func signed(_ body: [UInt8], block: Int, value: Int32? = nil) -> [UInt8] {
        body + CardMAC.compute(key: macKey, uid: uid, block: block, record: body, value: value)
    }

    // MARK: Log ring

    @Test func logEntriesRoundTripInTheirRingSlot() throws {
        #expect(LogEntry.blocks == [16, 17, 18, 20, 21, 22])
        for counter: UInt16 in [0, 1, 5, 6, 11, 65_535] {
            let entry = LogEntry(operation: .debit, amount: Fen(1_250), balanceAfter: Fen(8_750), counter: counter, terminal: TerminalTag(terminalID: 0xBEEF, sequenceByte: 0x42))
            let number = LogEntry.block(forCounter: counter)
            #expect(number == LogEntry.blocks[Int(counter) % 6])
            let block = entry.encode(uid: uid, macKey: macKey)
            #expect(block.count == 16)
            #expect(Array(block[0..<12]) == [0x10, 0x04, 0xE2, 0x00, 0x00, 0x22, 0x2E, UInt8(counter >> 8), UInt8(counter & 0xFF), 0xBE, 0xEF, 0x42])
            #expect(LogEntry(block: block, number: number, uid: uid, macKey: macKey) == entry)
            // Moved to another slot, another card, another MAC key, any changed byte: not an entry.
            for other in LogEntry.blocks where other != number {
                #expect(LogEntry(block: block, number: other, uid: uid, macKey: macKey) == nil)
            }
            #expect(LogEntry(block: block, number: number, uid: [1, 2, 3, 4], macKey: macKey) == nil)
            #expect(LogEntry(block: block, number: number, uid: uid, macKey: SymmetricKey(size: .bits128)) == nil)
            for index in 0..<16 {
                var changed = block
                changed[index] ^= 0x80
                #expect(LogEntry(block: changed, number: number, uid: uid, macKey: macKey) == nil, "byte \(index)")
            }
        }
    }

    @Test func logEntryRefusals() {
        #expect(LogEntry(block: [UInt8](repeating: 0, count: 16), number: 16, uid: uid, macKey: macKey) == nil, "an empty slot")
        #expect(LogEntry(block: [0x01], number: 16, uid: uid, macKey: macKey) == nil, "a short block")
        // A valid MAC over an operation code the layout does not define.
        let unknown = signed([0xF0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0], block: 16)
        #expect(LogEntry(block: unknown, number: 16, uid: uid, macKey: macKey) == nil)
        let known = signed([0x20, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0], block: 16)
        #expect(LogEntry(block: known, number: 16, uid: uid, macKey: macKey)?.operation == .load)
    }

    @Test func logEntryHoldsItsLargestAmountExactly() {
        let entry = LogEntry(operation: .load, amount: LogEntry.maximumAmount, balanceAfter: Fen.cardMaximum, counter: 7, terminal: TerminalTag(terminalID: 1, sequence: 1))
        #expect(LogEntry.maximumAmount.yuan == "10485.75")
        #expect(LogEntry(block: entry.encode(uid: uid, macKey: macKey), number: 17, uid: uid, macKey: macKey) == entry)
    }

    // MARK: Purse record and identity

    @Test func purseRecordEncodesEveryStatusAndOperation() throws {
        for status in Identity.Status.allCases {
            for operation in PurseRecord.Operation.allCases {
                let record = PurseRecord(counter: 513, status: status, lastOperation: operation, lastDay: CardDay(rawValue: 9_822),
                                         debitedToday: Fen(65_535), expires: CardDay(rawValue: 11_283), terminalID: 0x0102, terminalSequence: 0xFE)
                let block = record.encode(uid: uid, balance: Fen(-1), macKey: macKey)
                #expect(block[2] == status.rawValue << 4 | operation.rawValue)
                #expect(PurseRecord.vouches(block, for: Fen(-1), uid: uid, macKey: macKey))
                #expect(try PurseRecord(block: block) == record)
            }
        }
        // Today's debits saturate at 655.34 yuan rather than wrap; FF FF is written only for "unknown" (a rebuilt record).
        var over = PurseRecord(counter: 1, status: .normal, lastOperation: .debit, lastDay: CardDay(rawValue: 1), debitedToday: Fen(70_000),
                               expires: CardDay(rawValue: 2), terminalID: 1, terminalSequence: 1)
        #expect(try PurseRecord(block: over.encode(uid: uid, balance: .zero, macKey: macKey)).debitedToday == PurseRecord.saturatedDebitedToday)
        over.debitedToday = PurseRecord.unknownDebitedToday
        #expect(try PurseRecord(block: over.encode(uid: uid, balance: .zero, macKey: macKey)).debitedToday == PurseRecord.unknownDebitedToday)
    }

    /// Every field at the offset docs/card-layout.md gives, each with a distinct value: counter 0-1, status/operation
    /// 2, last day 3-4, today's debits 5-6, expiry 7-8, terminal id 9-10, terminal sequence 11, MAC 12-15 (over the
    /// UID, block 8, bytes 0-11 and the balance); and each field decodes from its own offset.
    @Test func purseRecordEncodesEveryFieldAtItsDocumentedOffset() throws {
        let record = PurseRecord(counter: 0x0102, status: .frozen, lastOperation: .subsidy, lastDay: CardDay(rawValue: 0x0304),
                                 debitedToday: Fen(0x0506), expires: CardDay(rawValue: 0x0708), terminalID: 0x090A, terminalSequence: 0x0B)
        let block = record.encode(uid: uid, balance: Fen(0x1234), macKey: macKey)
        #expect(Array(block[0..<12]) == [0x01, 0x02, 0x23, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B])
        #expect(Array(block[12..<16]) == CardMAC.compute(key: macKey, uid: uid, block: 8, record: Array(block[0..<12]), value: 0x1234))
        let decoded = try PurseRecord(block: [0xA1, 0xA2, 0x14, 0xA3, 0xA4, 0x05, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xAB, 0, 0, 0, 0])
        #expect(decoded == PurseRecord(counter: 0xA1A2, status: .lost, lastOperation: .repair, lastDay: CardDay(rawValue: 0xA3A4),
                                       debitedToday: Fen(0x05A6), expires: CardDay(rawValue: 0xA7A8), terminalID: 0xA9AA, terminalSequence: 0xAB))
    }

    @Test func purseRecordRefusesUndefinedCodesEvenUnderAValidMAC() {
        // Bits 3, 6 and 7 are the holder bits (HolderLimitsTests); undefined operations 6 and 7 stay garbled.
        for byte2: UInt8 in [0x06, 0x07, 0x0E, 0xCF] {
            let block = signed([0, 1, byte2, 0, 1, 0, 0, 0, 2, 0, 1, 1], block: PurseRecord.block, value: 100)
            #expect(PurseRecord.vouches(block, for: Fen(100), uid: uid, macKey: macKey))
            let error = #expect(throws: CardOperationError.self) { try PurseRecord(block: block) }
            #expect(error?.code == .garbled)
        }
        #expect(!PurseRecord.vouches([0x00], for: .zero, uid: uid, macKey: macKey))
        #expect(#expect(throws: CardOperationError.self) { try PurseRecord(block: [0x00]) }?.code == .garbled)
    }

    @Test func identityEncodesItsFieldsAtTheDocumentedOffsets() throws {
        let identity = Identity(serial: 0x0132_5AA1, account: 0x002F_9D48, type: .staff, keyVersion: 3, issued: CardDay(rawValue: 0x265E),
                                expires: CardDay(rawValue: 0x2C13), status: .frozen, statusChanged: CardDay(rawValue: 0x2700))
        let (first, second) = identity.encode(uid: uid, macKey: macKey)
        #expect(first == [0x01, 0x32, 0x5A, 0xA1, 0x00, 0x2F, 0x9D, 0x48, 0x01, 0x01, 0x03, 0x26, 0x5E, 0x2C, 0x13, 0x00])
        #expect(Array(second[0..<12]) == [0x02, 0x27, 0x00] + [UInt8](repeating: 0, count: 9))
        #expect(try Identity(first: first, second: second, uid: uid, macKey: macKey) == identity)
        #expect(try Identity.versions(of: first) == (layout: 1, key: 3))
    }

    @Test func identityRefusals() {
        // Undefined card type or status under a valid MAC: garbled, not accepted.
        let first: [UInt8] = [0, 0, 0, 1, 0, 0, 0, 2, 0x09, 0x01, 0x01, 0x26, 0x5E, 0x2C, 0x13, 0x00]
        let secondBody: [UInt8] = [0x00, 0x26, 0x5E] + [UInt8](repeating: 0, count: 9)
        let second = secondBody + CardMAC.compute(key: macKey, uid: uid, block: 4, record: first + secondBody)
        #expect(#expect(throws: CardOperationError.self) { try Identity(first: first, second: second, uid: uid, macKey: macKey) }?.code == .garbled)
        var goodType = first
        goodType[8] = Identity.CardType.student.rawValue
        let badStatusBody: [UInt8] = [0x07, 0x26, 0x5E] + [UInt8](repeating: 0, count: 9)
        let badStatus = badStatusBody + CardMAC.compute(key: macKey, uid: uid, block: 4, record: goodType + badStatusBody)
        #expect(#expect(throws: CardOperationError.self) { try Identity(first: goodType, second: badStatus, uid: uid, macKey: macKey) }?.code == .garbled)
        // Wrong sizes, and block 4 read unverified when it does not decode.
        #expect(#expect(throws: CardOperationError.self) { try Identity(first: [1], second: second, uid: uid, macKey: macKey) }?.code == .garbled)
        #expect(#expect(throws: CardOperationError.self) { try Identity.versions(of: [1, 2, 3]) }?.code == .garbled)
        #expect(#expect(throws: CardOperationError.self) { try Identity(unverifiedFirst: first, status: .normal, on: CardDay(rawValue: 1)) }?.code == .garbled)
        var futureLayout = goodType
        futureLayout[9] = 2
        #expect(#expect(throws: CardOperationError.self) { try Identity(unverifiedFirst: futureLayout, status: .normal, on: CardDay(rawValue: 1)) }?.code == .garbled)
        let repaired = try? Identity(unverifiedFirst: goodType, status: .lost, on: CardDay(rawValue: 0x2701))
        #expect(repaired?.status == .lost && repaired?.statusChanged == CardDay(rawValue: 0x2701) && repaired?.serial == 1 && repaired?.account == 2)
    }

    // MARK: Water wallet

    @Test func waterSettlementRoundTripsAndRefusesAnyChange() throws {
        let settlement = WaterSettlement(cap: WaterSettlement.maximumCap, balanceAfterRefill: Fen(730), reference: 0xA1B2_C3D4, day: CardDay(rawValue: 9_900))
        let block = settlement.encode(uid: uid, macKey: macKey)
        #expect(Array(block[0..<12]) == [0x27, 0x10, 0x02, 0xDA, 0xA1, 0xB2, 0xC3, 0xD4, 0x26, 0xAC, 0x00, 0x00])
        #expect(try WaterSettlement(block: block, uid: uid, macKey: macKey) == settlement)
        for index in 0..<16 {
            var changed = block
            changed[index] ^= 0x01
            #expect(#expect(throws: CardOperationError.self) { try WaterSettlement(block: changed, uid: uid, macKey: macKey) }?.code == .tampered)
        }
        #expect(#expect(throws: CardOperationError.self) { try WaterSettlement(block: Array(block[0..<15]), uid: uid, macKey: macKey) }?.code == .tampered)
        #expect(WaterSettlement.defaultCap == Fen(1_000))
    }

    /// Bit 15 of the cap field marks a record rebuilt from block 6; the cap itself reads without it.
    @Test func waterRecordCarriesTheRebuiltMark() {
        let settlement = WaterSettlement(cap: WaterSettlement.maximumCap, balanceAfterRefill: Fen(500), reference: 9, day: CardDay(rawValue: 9_900))
        for rebuilt in [false, true] {
            let record = WaterRecord(counter: 0, settlement: settlement, terminal: 0, rebuilt: rebuilt)
            let block = record.encode(uid: uid, balance: Fen(500), macKey: macKey)
            #expect(Array(block[2..<4]) == (rebuilt ? [0xA7, 0x10] : [0x27, 0x10]))
            let decoded = WaterRecord(block: block)
            #expect(decoded.rebuilt == rebuilt && decoded.cap == WaterSettlement.maximumCap && decoded == record)
        }
    }

    @Test func waterRecordVouchesForExactlyOneBalance() {
        let settlement = WaterSettlement(cap: WaterSettlement.defaultCap, balanceAfterRefill: Fen(999), reference: 42, day: CardDay(rawValue: 9_900))
        let record = WaterRecord(counter: 300, settlement: settlement, terminal: 0x1234)
        let block = record.encode(uid: uid, balance: Fen(995), macKey: macKey)
        // counter 0-1 | cap 2-3 | balance after the last refill 4-5 | reference 6-9 | terminal 10-11 | MAC 12-15
        #expect(Array(block[0..<12]) == [0x01, 0x2C, 0x03, 0xE8, 0x03, 0xE7, 0x00, 0x00, 0x00, 0x2A, 0x12, 0x34])
        #expect(WaterRecord.vouches(block, for: 995, uid: uid, macKey: macKey))
        #expect(!WaterRecord.vouches(block, for: 996, uid: uid, macKey: macKey))
        #expect(!WaterRecord.vouches(block, for: 995, uid: [1, 2, 3, 4], macKey: macKey))
        #expect(!WaterRecord.vouches(Array(block[0..<8]), for: 995, uid: uid, macKey: macKey))
        #expect(WaterRecord(block: block) == record)
        // The same bytes in the purse's record block are not a purse record: the MAC binds the block number.
        #expect(!PurseRecord.vouches(block, for: Fen(995), uid: uid, macKey: macKey))
    }

    // MARK: MAD

    /// CRC-8/MIFARE-MAD in the CRC catalogue (poly 0x1D, init 0xC7, no reflection, no xor-out): check value 0x99 over
    /// "123456789" — an independent confirmation of AN10787's preset (0xE3 bit-mirrored), as libfreefare notes.
    @Test func madCRCMatchesTheCatalogueCheckValue() {
        #expect(MAD.crc(Array("123456789".utf8)) == 0x99)
    }

    @Test func madRefusalsAreTyped() {
        #expect(#expect(throws: MADError.self) { try MAD(blocks: [UInt8](repeating: 0, count: 31)) }?.code == .length)
        var blocks = MAD(aids: [UInt16](repeating: MAD.free, count: 15)).blocks
        blocks[5] = 0x01
        #expect(#expect(throws: MADError.self) { try MAD(blocks: blocks) }?.code == .crc)
        // A card formatted for another application decodes, and registers none of our sectors.
        var aids = [UInt16](repeating: 0xE103, count: 15)
        aids[14] = MAD.cardHolder
        let foreign = MAD(aids: aids, info: 0x0F)
        let decoded = try? MAD(blocks: foreign.blocks)
        #expect(decoded == foreign && decoded?.sectors(of: 0x8D01) == [] && decoded?.info == 0x0F)
    }

    // MARK: Money

    @Test(arguments: [("", AmountError.Code.empty), ("  ", .empty), ("-1", .negative), ("-0.01", .negative), ("1.234", .tooManyDecimals),
                      ("0.001", .tooManyDecimals), ("abc", .notANumber), ("1.2.3", .notANumber), ("1e3", .notANumber), ("１２", .notANumber),
                      ("12,50", .notANumber), ("+5", .notANumber), (".", .notANumber), ("21474836.48", .tooLarge), ("99999999999", .tooLarge)])
    func amountRefusalsSayWhy(text: String, code: AmountError.Code) {
        let error = #expect(throws: AmountError.self) { try Fen(yuan: text) }
        #expect(error?.code == code, "\(text)")
        #expect(error.map { !$0.description.contains("\n") && $0.description.count > 20 } == true)
    }
}
