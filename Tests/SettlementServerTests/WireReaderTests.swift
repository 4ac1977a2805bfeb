import CampusCard
import Foundation
import NIOCore
import SettlementCore
@testable import SettlementClient
import Testing
@testable import SettlementServer

/// `bytes` with 1–3 random changes: a byte replaced (by JSON's punctuation, digits, white space, non-ASCII or NUL),
/// dropped or doubled.
func damaged(_ bytes: [UInt8]) -> [UInt8] {
    let alphabet = Array(#"{}[],:"\ -.0123456789eEnul"#.utf8) + [0x09, 0xC3, 0xA9, 0x00]
    var text = bytes
    for _ in 0..<Int.random(in: 1...3) {
        let at = Int.random(in: 0..<text.count)
        switch Int.random(in: 0..<3) {
        case 0: text[at] = alphabet.randomElement()!
        case 1: text.remove(at: at)
        default: text.insert(text[at], at: at)
        }
    }
    return text
}

/// The upload body's fast reader against Foundation's `JSONDecoder`: whatever the reader accepts decodes to the same
/// values through `JSONDecoder`, and everything else is left to `JSONDecoder` (the reader answers `nil`).
@Suite struct UploadReaderTests {
    static let base = Date(timeIntervalSince1970: 1_750_000_000)

    /// Records with every optional field both present and absent, as a terminal's journal gives them.
    static func records(_ count: Int) -> [TerminalRecord] {
        (0..<count).map { index in
            let kinds = TransactionIntent.Kind.allCases
            var record = TerminalRecord(
                terminalID: 7, terminalSequence: UInt32(index + 1), kind: kinds[index % kinds.count],
                cardUID: index % 3 == 0 ? "04A1B2C3" : "04A1B2C3D4E5F6", cardSerial: index % 4 == 0 ? nil : UInt32(1000 + index),
                amount: Fen(100 + index), balanceBefore: Fen(10_000 + index), counterBefore: UInt16(index % 65_536),
                consumption: index % 5 == 0 ? Fen(300) : nil, referenceBefore: index % 6 == 0 ? 42 : nil,
                settlementReference: index % 7 == 0 ? 43 : nil,
                outcome: [RecordOutcome.done, .notDone, .undetermined][index % 3], createdAt: base.addingTimeInterval(Double(index)))
            if record.outcome == .done {
                record.balanceAfter = Fen(9_000 + index)
                record.counterAfter = UInt16((index + 1) % 65_536)
            }
            return record
        }
    }

    static func decodedByFoundation(_ text: [UInt8]) -> WireUpload? {
        try? decodeBody(WireUpload.self, from: ByteBuffer(bytes: text))
    }

    static func read(_ text: [UInt8]) -> WireUpload? { UploadReader.read(ByteBuffer(bytes: text)) }

    static func read(_ text: String) -> WireUpload? { read(Array(text.utf8)) }

    @Test(arguments: [1, 2, 17, 500, 1000])
    func aTerminalsBodyIsReadAsJSONDecoderReadsIt(count: Int) throws {
        let body = TerminalRecord.uploadBody(Self.records(count))
        let fast = try #require(Self.read(body))
        #expect(fast == Self.decodedByFoundation(body))
        #expect(fast.records.count == count)
        // And the records the route books are the ones the terminal sent.
        #expect(try fast.records(from: 7) == Self.records(count))
    }

    @Test func whiteSpaceAndKeyOrderDoNotMatter() throws {
        let text = """
             { "records" : [ {"createdAt":1750000000, "outcome":"not-done","counterBefore":3,"balanceBefore":500,
              "amount":\t120,"cardUID":"04A1B2C3","kind":"purse-debit","terminalSequence":9,"terminalID":7} ,
              {"terminalID":7,"terminalSequence":10,"kind":"purse-debit","cardUID":"04A1B2C3","amount":120,"balanceBefore":500,
               "counterBefore":3,"outcome":"done","balanceAfter":380,"counterAfter":4,"createdAt":1750000001,"cardSerial":0}]}\r\n
            """
        let fast = try #require(Self.read(text))
        #expect(fast == Self.decodedByFoundation(Array(text.utf8)))
        #expect(fast.records.map(\.terminalSequence) == [9, 10])
        #expect(fast.records[1].cardSerial == 0)
    }

    /// Outside the usual shape the reader steps aside; `WireUpload.decode` then answers what JSONDecoder answers.
    @Test(arguments: [
        #"{"records":[{"terminalID":7,"terminalSequence":1,"kind":"purse\u002ddebit","cardUID":"04A1B2C3","amount":1,"balanceBefore":5,"counterBefore":1,"outcome":"not-done","createdAt":1750000000}]}"#,
        #"{"records":[{"terminalID":7,"terminalSequence":1.0,"kind":"purse-debit","cardUID":"04A1B2C3","amount":1,"balanceBefore":5,"counterBefore":1,"outcome":"not-done","createdAt":1750000000}]}"#,
        #"{"records":[{"terminalID":7,"terminalSequence":1,"kind":"purse-debit","cardUID":"04A1B2C3","amount":1e2,"balanceBefore":5,"counterBefore":1,"outcome":"not-done","createdAt":1750000000}]}"#,
        #"{"records":[{"terminalID":7,"terminalSequence":1,"kind":"purse-debit","cardUID":"04A1B2C3","amount":1,"balanceBefore":5,"counterBefore":1,"outcome":"not-done","createdAt":1750000000,"cardSerial":null}]}"#,
        #"{"records":[{"terminalID":7,"terminalSequence":1,"kind":"purse-debit","cardUID":"04A1B2C3","amount":1,"balanceBefore":5,"counterBefore":1,"outcome":"not-done","createdAt":1750000000,"note":"x"}]}"#,
        #"{"records":[{"terminalID":7,"terminalSequence":1,"terminalSequence":2,"kind":"purse-debit","cardUID":"04A1B2C3","amount":1,"balanceBefore":5,"counterBefore":1,"outcome":"not-done","createdAt":1750000000}]}"#,
        #"{"records":[{"terminalID":7,"terminalSequence":1,"kind":"purse-débit","cardUID":"04A1B2C3","amount":1,"balanceBefore":5,"counterBefore":1,"outcome":"not-done","createdAt":1750000000}]}"#,
        #"{"records":[{"terminalID":7,"terminalSequence":01,"kind":"purse-debit","cardUID":"04A1B2C3","amount":1,"balanceBefore":5,"counterBefore":1,"outcome":"not-done","createdAt":1750000000}]}"#,
        #"{"records":[{"terminalID":7,"terminalSequence":1234567890123456789,"kind":"purse-debit","cardUID":"04A1B2C3","amount":1,"balanceBefore":5,"counterBefore":1,"outcome":"not-done","createdAt":1750000000}]}"#,
        #"{"records":[{"terminalID":7,"terminalSequence":1,"kind":"purse-debit","cardUID":"04A1B2C3","amount":1,"balanceBefore":5,"counterBefore":1,"outcome":"not-done"}]}"#,
        #"{"records":[{"terminalID":7,"terminalSequence":1,"kind":["purse-debit"],"cardUID":"04A1B2C3","amount":1,"balanceBefore":5,"counterBefore":1,"outcome":"not-done","createdAt":1750000000}]}"#,
        #"{"records":[{"terminalID":"7","terminalSequence":1,"kind":"purse-debit","cardUID":"04A1B2C3","amount":1,"balanceBefore":5,"counterBefore":1,"outcome":"not-done","createdAt":1750000000}]}"#,
        #"{"records":[{"terminalID":7,"terminalSequence":1,"kind":"purse-debit","cardUID":"04A1B2C3","amount":1,"balanceBefore":5,"counterBefore":1,"outcome":"not-done","createdAt":1750000000}]} x"#,
        #"{"records":[{"terminalID":7,"terminalSequence":1,"kind":"purse-debit","cardUID":"04A1B2C3","amount":1,"balanceBefore":5,"counterBefore":1,"outcome":"not-done","createdAt":1750000000}],"extra":1}"#,
        #"{"records":[{"terminalID":7,"terminalSequence":1,"kind":"purse-debit","cardUID":"04A1B2C3","amount":1,"balanceBefore":5,"counterBefore":1,"outcome":"not-done","createdAt":1750000000},]}"#,
        #"{"records":[]}"#,
        #"{"records":[{"terminalID":7,"terminalSequence":1,"kind":"purse-debit""#,
        #"{"records":{}}"#,
        #"[]"#,
        "",
    ])
    func anythingElseIsLeftToJSONDecoder(text: String) {
        #expect(Self.read(text) == nil)
        let viaRoute = Result { try WireUpload.decode(ByteBuffer(string: text)) }
        let viaFoundation = Result { try decodeBody(WireUpload.self, from: ByteBuffer(string: text)) }
        switch (viaRoute, viaFoundation) {
        case let (.success(route), .success(foundation)): #expect(route == foundation)
        case let (.failure(route as APIError), .failure(foundation as APIError)): #expect(route.message == foundation.message)
        default: Issue.record("the route and JSONDecoder disagree on \(text.prefix(60)): \(viaRoute) vs \(viaFoundation)")
        }
    }

    @Test func moreThanABatchIsLeftToJSONDecoderWhichRefusesIt() {
        let body = TerminalRecord.uploadBody(Self.records(SettlementLimits.maxRecordsPerBatch + 1))
        #expect(Self.read(body) == nil)
        #expect(throws: APIError.self) { try WireUpload.decode(ByteBuffer(bytes: body)) }
    }

    /// Random damage to a terminal's body (bytes changed, dropped, doubled): whatever the reader still accepts,
    /// JSONDecoder reads the same way. Most damaged bodies are refused by both; some stay valid JSON.
    @Test func damagedBodiesAreReadAsJSONDecoderReadsThemOrLeftToIt() {
        let body = TerminalRecord.uploadBody(Self.records(3))
        var accepted = 0
        for _ in 0..<4_000 {
            let text = damaged(body)
            guard let fast = Self.read(text) else { continue }
            accepted += 1
            let foundation = Self.decodedByFoundation(text)
            #expect(foundation == fast, "the reader and JSONDecoder disagree on \(String(decoding: text, as: UTF8.self))")
        }
        // Changes inside digits and white space keep a body readable: the comparison above did run.
        #expect(accepted > 0)
    }
}

/// The terminal's reader of the service's upload answer against `JSONDecoder`, on the bytes settlementd writes.
@Suite struct AnswerReaderTests {
    static func answer(_ count: Int) -> [UInt8] {
        let acks = (0..<count).map { index in
            RecordAck(terminalSequence: UInt32(index + 1), status: RecordAck.Status.allCases[index % 3],
                      booking: RecordAck.Booking.allCases[index % RecordAck.Booking.allCases.count],
                      flags: index % 4 == 0 ? [] : (index % 4 == 1 ? ["counter-gap"] : ["counter-gap", "unknown-card"]),
                      receivedAt: UploadReaderTests.base.addingTimeInterval(Double(index)))
        }
        return WireUploadResponse(acks: acks.map(WireAck.init), serverTime: 1_750_000_100).json
    }

    static func decodedByFoundation(_ bytes: [UInt8]) -> [RecordAck]? {
        try? SettlementJSON.decoder().decode(SettlementClient.UploadAnswer.self, from: Data(bytes)).acks
    }

    @Test(arguments: [0, 1, 7, 500, 1000])
    func theServicesAnswerIsReadAsJSONDecoderReadsIt(count: Int) throws {
        let bytes = Self.answer(count)
        let fast = try #require(AnswerReader.acks(Data(bytes)))
        #expect(fast == Self.decodedByFoundation(bytes))
        #expect(fast.map(\.terminalSequence) == (0..<count).map { UInt32($0 + 1) })
    }

    @Test(arguments: [
        #"{"acks":[{"booking":"booked","flags":[],"receivedAt":1750000000,"status":"accepted","terminalSequence":1}],"serverTime":1,"x":2}"#,
        #"{"acks":[{"booking":"booked","flags":[],"receivedAt":1750000000,"status":"accepted"}],"serverTime":1}"#,
        #"{"acks":[{"booking":"bought","flags":[],"receivedAt":1750000000,"status":"accepted","terminalSequence":1}],"serverTime":1}"#,
        #"{"acks":[{"booking":"booked","flags":[],"receivedAt":5000000000,"status":"accepted","terminalSequence":1}],"serverTime":1}"#,
        #"{"acks":[{"booking":"booked","flags":[],"receivedAt":1750000000,"status":"accepted","terminalSequence":4294967296}],"serverTime":1}"#,
        #"{"acks":[{"booking":"booked","flags":[null],"receivedAt":1750000000,"status":"accepted","terminalSequence":1}],"serverTime":1}"#,
        #"{"acks":[{"booking":"b\u006fked","flags":[],"receivedAt":1750000000,"status":"accepted","terminalSequence":1}],"serverTime":1}"#,
        #"{"acks":[{"booking":"booked","flags":[],"receivedAt":1750000000.5,"status":"accepted","terminalSequence":1}],"serverTime":1}"#,
        #"{"serverTime":1}"#,
        #"{"acks":[],"acks":[]}"#,
        #"{"acks":[]} []"#,
        "",
    ])
    func anythingElseIsLeftToJSONDecoder(text: String) {
        #expect(AnswerReader.acks(Data(text.utf8)) == nil)
    }

    /// Random damage to an answer: whatever the reader still accepts, JSONDecoder reads the same way.
    @Test func damagedAnswersAreReadAsJSONDecoderReadsThemOrLeftToIt() {
        let bytes = Self.answer(3)
        var accepted = 0
        for _ in 0..<4_000 {
            let text = damaged(bytes)
            guard let fast = AnswerReader.acks(Data(text)) else { continue }
            accepted += 1
            #expect(Self.decodedByFoundation(text) == fast, "the reader and JSONDecoder disagree on \(String(decoding: text, as: UTF8.self))")
        }
        #expect(accepted > 0)
    }
}
