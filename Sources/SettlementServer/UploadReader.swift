import NIOCore
import SettlementCore

/// Reads the usual shape of an upload body: `{"records": [{…}, …]}` with each record's known fields once each, in any
/// order, as `WireJSONReader` reads them (what terminals send: `TerminalRecord.uploadBody`).
///
/// It exists for speed (`JSONDecoder` spent ~20 µs a record, as long as PostgreSQL took to store it) and decides
/// nothing itself: anything else — an escape, a fraction, `null`, an unknown, missing or repeated key, non-ASCII, a
/// batch of the wrong size, trailing bytes — makes it answer `nil`, and the body goes through `JSONDecoder` and
/// `WireUpload.init(from:)` as before, with the same answers and errors. The tests hold it to that: whatever it
/// accepts, `JSONDecoder` decodes to the same values.
enum UploadReader {
    static func read(_ body: ByteBuffer) -> WireUpload? {
        body.withUnsafeReadableBytes { bytes in
            var json = WireJSONReader(bytes)
            guard json.take(UInt8(ascii: "{")), json.key() == "records", json.take(UInt8(ascii: "[")) else { return nil }
            var records: [WireRecord] = []
            records.reserveCapacity(min(bytes.count / 200, SettlementLimits.maxRecordsPerBatch))
            repeat {
                guard records.count < SettlementLimits.maxRecordsPerBatch, let record = record(&json) else { return nil }
                records.append(record)
            } while json.take(UInt8(ascii: ","))
            guard json.take(UInt8(ascii: "]")), json.take(UInt8(ascii: "}")), json.atEnd() else { return nil }
            return WireUpload(records: records)
        }
    }

    private typealias Key = WireRecord.CodingKeys

    private static func record(_ json: inout WireJSONReader) -> WireRecord? {
        guard json.take(UInt8(ascii: "{")) else { return nil }
        var integers = [Int64](repeating: 0, count: Key.allCases.count)
        var texts = ["", "", ""]
        var seen: UInt32 = 0
        if !json.take(UInt8(ascii: "}")) {
            repeat {
                guard let name = json.key(), let field = Key(stringValue: name) else { return nil }
                let bit: UInt32 = 1 << field.position
                guard seen & bit == 0 else { return nil }
                seen |= bit
                switch field {
                case .kind, .cardUID, .outcome:
                    guard let text = json.string() else { return nil }
                    texts[field == .kind ? 0 : (field == .cardUID ? 1 : 2)] = text
                default:
                    guard let value = json.integer() else { return nil }
                    integers[field.position] = value
                }
            } while json.take(UInt8(ascii: ","))
            guard json.take(UInt8(ascii: "}")) else { return nil }
        }
        func has(_ key: Key) -> Bool { seen & (1 << key.position) != 0 }
        guard Key.required.allSatisfy(has) else { return nil }
        func value(_ key: Key) -> Int64 { integers[key.position] }
        func optional(_ key: Key) -> Int64? { has(key) ? value(key) : nil }
        return WireRecord(
            terminalID: value(.terminalID), terminalSequence: value(.terminalSequence), kind: texts[0], cardUID: texts[1],
            cardSerial: optional(.cardSerial), amount: value(.amount), balanceBefore: value(.balanceBefore),
            counterBefore: value(.counterBefore), consumption: optional(.consumption),
            referenceBefore: optional(.referenceBefore), settlementReference: optional(.settlementReference),
            outcome: texts[2], balanceAfter: optional(.balanceAfter), counterAfter: optional(.counterAfter),
            createdAt: value(.createdAt))
    }
}

extension WireRecord.CodingKeys {
    /// The key's place in `allCases` (a bit in the reader's set of keys seen).
    var position: Int { Self.allCases.firstIndex(of: self)! }
}
