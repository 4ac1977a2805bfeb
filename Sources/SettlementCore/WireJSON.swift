import Foundation

/// The upload's JSON written by hand: a batch of records (the terminal's request) and their acknowledgements (the
/// service's answer) are the API's only large bodies, and Foundation's `JSONEncoder` costs ~10 µs a record here
/// (settlebench upload: half of what HTTP added to a 1,000-record batch). The bytes are those of
/// `SettlementJSON.encoder()` — keys sorted, absent optionals left out, dates as whole Unix seconds — which the tests
/// check byte for byte. Reading them: `WireJSONReader` below, with Foundation's `JSONDecoder` for anything unusual.
public struct WireJSONWriter: Sendable {
    public private(set) var bytes: [UInt8] = []
    private var needsComma = false

    public init(capacity: Int = 0) {
        bytes.reserveCapacity(capacity)
    }

    public mutating func beginObject() { separate(); bytes.append(UInt8(ascii: "{")); needsComma = false }
    public mutating func endObject() { bytes.append(UInt8(ascii: "}")); needsComma = true }
    public mutating func beginArray() { separate(); bytes.append(UInt8(ascii: "[")); needsComma = false }
    public mutating func endArray() { bytes.append(UInt8(ascii: "]")); needsComma = true }

    /// `"name":`, the next value's key (names are our own ASCII identifiers: written as they are).
    public mutating func key(_ name: StaticString) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        name.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
        needsComma = false
    }

    public mutating func value(_ number: Int64) {
        separate()
        bytes.append(contentsOf: String(number).utf8)
        needsComma = true
    }

    public mutating func value(_ text: String) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0x0A: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case 0x0D: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case 0x09: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0x08: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "b")])
            case 0x0C: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "f")])
            case 0x00..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                          hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]])
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    public mutating func field(_ name: StaticString, _ number: Int64) { key(name); value(number) }
    public mutating func field(_ name: StaticString, _ text: String) { key(name); value(text) }
    /// Left out when `nil`, as `encodeIfPresent` does.
    public mutating func field(_ name: StaticString, _ number: Int64?) {
        guard let number else { return }
        key(name)
        value(number)
    }

    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }
}

extension TerminalRecord {
    /// This record as `SettlementJSON.encoder()` writes it.
    public func writeJSON(to writer: inout WireJSONWriter) {
        writer.beginObject()
        writer.field("amount", Int64(amount.rawValue))
        writer.field("balanceAfter", balanceAfter.map { Int64($0.rawValue) })
        writer.field("balanceBefore", Int64(balanceBefore.rawValue))
        writer.field("cardSerial", cardSerial.map(Int64.init))
        writer.field("cardUID", cardUID)
        writer.field("consumption", consumption.map { Int64($0.rawValue) })
        writer.field("counterAfter", counterAfter.map(Int64.init))
        writer.field("counterBefore", Int64(counterBefore))
        writer.field("createdAt", Int64(createdAt.timeIntervalSince1970.rounded(.down)))
        writer.field("kind", kind.rawValue)
        writer.field("outcome", outcome.rawValue)
        writer.field("referenceBefore", referenceBefore.map(Int64.init))
        writer.field("settlementReference", settlementReference.map(Int64.init))
        writer.field("terminalID", Int64(terminalID.rawValue))
        writer.field("terminalSequence", Int64(terminalSequence))
        writer.endObject()
    }

    /// An upload request's body, `{"records":[…]}`.
    public static func uploadBody(_ records: [TerminalRecord]) -> [UInt8] {
        var writer = WireJSONWriter(capacity: 64 + records.count * 300)
        writer.beginObject()
        writer.key("records")
        writer.beginArray()
        for record in records { record.writeJSON(to: &writer) }
        writer.endArray()
        writer.endObject()
        return writer.bytes
    }
}

/// The tokens of the JSON our own writers produce, read forward without allocating: the fast path of the two large
/// bodies' readers (the service reading a batch, a terminal reading its acknowledgements), where Foundation's
/// `JSONDecoder` cost ~20 µs a record. It accepts a strict subset of JSON — strings of printable ASCII without
/// escapes, integers of at most 18 digits without fraction or exponent — and answers `nil` for anything else, so that
/// its callers can leave that body to `JSONDecoder` (which then answers, or refuses it, as before). `bytes` must stay
/// valid while the reader is used.
public struct WireJSONReader {
    private let bytes: UnsafeRawBufferPointer
    private var index = 0

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// Skips white space and takes `byte` if it comes next.
    public mutating func take(_ byte: UInt8) -> Bool {
        skipSpace()
        guard index < bytes.count, bytes[index] == byte else { return false }
        index += 1
        return true
    }

    /// Whether only white space is left.
    public mutating func atEnd() -> Bool {
        skipSpace()
        return index == bytes.count
    }

    /// `"name":`, an object's next key.
    public mutating func key() -> String? {
        guard let name = string(), take(UInt8(ascii: ":")) else { return nil }
        return name
    }

    /// A string of printable ASCII without escapes.
    public mutating func string() -> String? {
        guard take(UInt8(ascii: "\"")) else { return nil }
        let start = index
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                defer { index += 1 }
                return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
            }
            guard byte >= 0x20, byte < 0x7F, byte != UInt8(ascii: "\\") else { return nil }
            index += 1
        }
        return nil
    }

    /// An integer of 1–18 digits, optionally negative, without leading zeros, fraction or exponent.
    public mutating func integer() -> Int64? {
        skipSpace()
        let negative = index < bytes.count && bytes[index] == UInt8(ascii: "-")
        if negative { index += 1 }
        let start = index
        var value: Int64 = 0
        while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
            guard index - start < 18 else { return nil }
            value = value * 10 + Int64(bytes[index] - UInt8(ascii: "0"))
            index += 1
        }
        let digits = index - start
        guard digits > 0, digits == 1 || bytes[start] != UInt8(ascii: "0") else { return nil }
        // What follows must end the number: a fraction or an exponent is left to JSONDecoder.
        if index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: ","), UInt8(ascii: "}"), UInt8(ascii: "]"), 0x20, 0x0A, 0x0D, 0x09: break
            default: return nil
            }
        }
        return negative ? -value : value
    }

    private mutating func skipSpace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x0A, 0x0D, 0x09: index += 1
            default: return
            }
        }
    }
}
