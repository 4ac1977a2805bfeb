import CampusCard
import Foundation
import SettlementCore
import Testing

/// The hand-written upload body must be byte for byte what `SettlementJSON.encoder()` writes: the service parses it
/// with `JSONDecoder`, and a body that differed would change what the signature covers.
@Suite struct WireJSONTests {
    static let sparse = TerminalRecord(terminalID: TerminalID(1), terminalSequence: 0, kind: .purseDebit, cardUID: "04A1B2C3",
                                       cardSerial: nil, amount: 1, balanceBefore: 0, counterBefore: 0, outcome: .undetermined,
                                       createdAt: Date(timeIntervalSince1970: 0))
    static let full = TerminalRecord(terminalID: TerminalID(65535), terminalSequence: UInt32.max, kind: .waterSettle,
                                     cardUID: "04A1B2C3D4E5F60718293A", cardSerial: UInt32.max, amount: Fen(Int(Int32.max)),
                                     balanceBefore: Fen(Int(Int32.max)), counterBefore: UInt16.max, consumption: 1_234,
                                     referenceBefore: 7, settlementReference: 8, outcome: .done, balanceAfter: 0,
                                     counterAfter: 0, createdAt: Date(timeIntervalSince1970: 4_102_444_799.9))

    func foundation(_ records: [TerminalRecord]) throws -> [UInt8] {
        [UInt8](try SettlementJSON.encoder().encode(["records": records]))
    }

    @Test func anUploadBodyIsWhatJSONEncoderWrites() throws {
        let kinds = TransactionIntent.Kind.allCases
        let outcomes = RecordOutcome.allCases
        var records = [Self.sparse, Self.full]
        for index in 0..<60 {
            records.append(TerminalRecord(
                terminalID: TerminalID(UInt16(index + 1)), terminalSequence: UInt32(index * 7919), kind: kinds[index % kinds.count],
                cardUID: String(format: "%08X", index * 104_729), cardSerial: index % 3 == 0 ? nil : UInt32(100_000 + index),
                amount: Fen(index + 1), balanceBefore: Fen(index * 50), counterBefore: UInt16(index),
                consumption: index % 4 == 0 ? Fen(index) : nil, referenceBefore: index % 5 == 0 ? UInt32(index) : nil,
                settlementReference: index % 6 == 0 ? UInt32(index) : nil, outcome: outcomes[index % outcomes.count],
                balanceAfter: index % 2 == 0 ? Fen(index) : nil, counterAfter: index % 2 == 0 ? UInt16(index + 1) : nil,
                createdAt: Date(timeIntervalSince1970: 1_764_460_800 + Double(index) * 61.5)))
        }
        #expect(TerminalRecord.uploadBody(records) == (try foundation(records)))
        #expect(TerminalRecord.uploadBody([]) == (try foundation([])))
        #expect(TerminalRecord.uploadBody([Self.sparse]) == Array(#"{"records":[{"amount":1,"balanceBefore":0,"cardUID":"04A1B2C3","counterBefore":0,"createdAt":0,"kind":"purse-debit","outcome":"undetermined","terminalID":1,"terminalSequence":0}]}"#.utf8))
    }

    /// A UID is checked by the service, not here: whatever the journal holds is escaped as JSONEncoder escapes it.
    @Test(arguments: ["a\"b", "back\\slash", "line\nbreak\r\t", "\u{0}\u{1}\u{1F}\u{7F}", "slash/ok", "é汉字🙂", "\u{2028}"])
    func stringsAreEscapedAsJSONEncoderEscapesThem(_ text: String) throws {
        var record = Self.sparse
        record.cardUID = text
        #expect(TerminalRecord.uploadBody([record]) == (try foundation([record])))
        let parsed = try JSONSerialization.jsonObject(with: Data(TerminalRecord.uploadBody([record]))) as? [String: [[String: Any]]]
        #expect(parsed?["records"]?.first?["cardUID"] as? String == text)
    }
}
