import CampusCard
import Crypto
import Foundation
import Testing

@Suite struct RecordTests {
    let uid: [UInt8] = [0xDE, 0xAD, 0xBE, 0xEF]
    let macKey = SymmetricKey(size: .bits128)

    @Test func cardDays() {
        #expect(CardDay(Date(timeIntervalSince1970: 946_684_800 - 8 * 3600)).rawValue == 0)
        // 2026-11-22 00:30 in Beijing is still 2026-11-21 in UTC: the card counts Beijing days.
        let beijingMidnight = Date(timeIntervalSince1970: 1_795_278_600)  // 2026-11-21T16:30:00Z
        #expect(CardDay(beijingMidnight).description == "2026-11-22")
        #expect(CardDay(rawValue: 0).description == "2000-01-01")
    }

    @Test func identityRoundTripsAndDetectsTampering() throws {
        let identity = Identity(serial: 20_260_001, account: 3_120_456, type: .student, keyVersion: 1,
                                issued: CardDay(rawValue: 9_822), expires: CardDay(rawValue: 11_283))
        let (first, second) = identity.encode(uid: uid, macKey: macKey)
        #expect(try Identity(first: first, second: second, uid: uid, macKey: macKey) == identity)
        #expect(try Identity.versions(of: first) == (1, 1))
        // Any single changed byte of either block, another card's UID, or another MAC key: refused.
        for index in 0..<32 where index != 9 {
            var a = first, b = second
            if index < 16 { a[index] ^= 0x01 } else { b[index - 16] ^= 0x01 }
            let error = #expect(throws: CardOperationError.self) { try Identity(first: a, second: b, uid: uid, macKey: macKey) }
            #expect(error?.code == .tampered, "byte \(index)")
        }
        #expect(throws: CardOperationError.self) { try Identity(first: first, second: second, uid: [1, 2, 3, 4], macKey: macKey) }
        var future = first
        future[9] = 2
        let layout = #expect(throws: CardOperationError.self) { try Identity(first: future, second: second, uid: uid, macKey: macKey) }
        #expect(layout?.code == .unsupportedLayout)
    }

    @Test func purseRecordVouchesForExactlyOneBalance() throws {
        let record = PurseRecord(counter: 42, status: .normal, lastOperation: .debit, lastDay: CardDay(rawValue: 9_822),
                                 debitedToday: Fen(1_250), expires: CardDay(rawValue: 11_283), terminalID: 7, terminalSequence: 0xE9)
        let block = record.encode(uid: uid, balance: Fen(8_750), macKey: macKey)
        #expect(PurseRecord.vouches(block, for: Fen(8_750), uid: uid, macKey: macKey))
        #expect(!PurseRecord.vouches(block, for: Fen(8_751), uid: uid, macKey: macKey))
        #expect(!PurseRecord.vouches(block, for: Fen(8_750), uid: [1, 2, 3, 4], macKey: macKey))
        #expect(try PurseRecord(block: block) == record)
        var torn = block
        torn[2] = 0xFF
        #expect(throws: CardOperationError.self) { try PurseRecord(block: torn) }
        #expect(!PurseRecord.vouches(torn, for: Fen(8_750), uid: uid, macKey: macKey))
    }
}

/// CardDay's text is computed by arithmetic; Foundation's Gregorian calendar is the oracle, over every day a card holds.
@Suite struct CardDayTextTests {
    @Test func everyDayReadsAsTheGregorianCalendarHasIt() {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(secondsFromGMT: 8 * 3600)!
        var mismatches: [String] = []
        for raw in stride(from: 0, through: Int(UInt16.max), by: 1) {
            let day = CardDay(rawValue: UInt16(raw))
            let parts = calendar.dateComponents([.year, .month, .day], from: Date(timeIntervalSince1970: 946_684_800 - 8 * 3600 + Double(raw) * 86_400))
            let expected = String(format: "%04d-%02d-%02d", parts.year!, parts.month!, parts.day!)
            if day.description != expected { mismatches.append("\(raw): \(day.description) != \(expected)") }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(5))")
    }
}
