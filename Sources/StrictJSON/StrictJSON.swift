/// What Foundation's `JSONDecoder` lets through and the files and bodies we read must not carry:
/// - a key given twice in one object: decoders disagree on which one wins, so a proxy, a log reader or an auditor's
///   tool may read another request (or another configuration) than the one acted on;
/// - with `wholeNumbersOnly`, a number with a fraction or an exponent (`1e3`, `250.0`): every number the API takes
///   is a count (fen, seconds, ids), and a decoder that reads `1e3` as 1000 reads a spelling no terminal sends;
/// - nesting deeper than `maximumDepth`.
///
/// Text it cannot read as UTF-8 JSON — a byte-order mark, UTF-16 or UTF-32 (which `JSONDecoder` reads), or text
/// that is not JSON at all — is `notJSON`: a check the decoder could be walked around is no check.
public enum StrictJSON {
    /// Objects and arrays inside one another, at most (the API's deepest body has 3, a cardd configuration 2).
    public static let maximumDepth = 32

    public enum Finding: Sendable, Equatable {
        /// None of the above.
        case clean
        /// One line naming where: `records[0].amount is given twice: give each field once`.
        case problem(String)
        /// Not UTF-8 JSON without a byte-order mark.
        case notJSON
    }

    /// What `bytes` hold of the above; the first problem found.
    public static func check(_ bytes: some Collection<UInt8>, wholeNumbersOnly: Bool) -> Finding {
        var scanner = Scanner(bytes: Array(bytes), wholeNumbersOnly: wholeNumbersOnly)
        do {
            try scanner.document()
            return .clean
        } catch let stop {
            if case let .problem(text) = stop { return .problem(text) }
            return .notJSON
        }
    }

    enum Stop: Error {
        /// Not JSON, or not UTF-8.
        case malformed
        case problem(String)
    }

    private enum Step {
        case key(String)
        case index(Int)
    }

    private struct Scanner {
        let bytes: [UInt8]
        let wholeNumbersOnly: Bool
        var index = 0
        var path: [Step] = []

        init(bytes: [UInt8], wholeNumbersOnly: Bool) {
            self.bytes = bytes
            self.wholeNumbersOnly = wholeNumbersOnly
        }

        /// Where the scanner is, spelled as the API's messages spell fields: `records[3].amount`.
        var place: String {
            var text = ""
            for step in path {
                switch step {
                case let .key(name): text += (text.isEmpty ? "" : ".") + name
                case let .index(index): text += "[\(index)]"
                }
            }
            return text.isEmpty ? "the top level" : text
        }

        /// One value and nothing after it but white space.
        mutating func document() throws(Stop) {
            try value(depth: 0)
            skipSpace()
            guard index == bytes.count else { throw .malformed }
        }

        mutating func value(depth: Int) throws(Stop) {
            skipSpace()
            guard index < bytes.count else { throw .malformed }
            switch bytes[index] {
            case UInt8(ascii: "{"):
                guard depth < StrictJSON.maximumDepth else {
                    throw .problem("\(place) nests objects and arrays deeper than \(StrictJSON.maximumDepth) levels: send the documented shape")
                }
                try object(depth: depth + 1)
            case UInt8(ascii: "["):
                guard depth < StrictJSON.maximumDepth else {
                    throw .problem("\(place) nests objects and arrays deeper than \(StrictJSON.maximumDepth) levels: send the documented shape")
                }
                try array(depth: depth + 1)
            case UInt8(ascii: "\""):
                _ = try string()
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                try number()
            default:
                for literal in Self.literals where bytes[index...].starts(with: literal) {
                    index += literal.count
                    return
                }
                throw .malformed
            }
        }

        private mutating func object(depth: Int) throws(Stop) {
            index += 1
            var seen = Set<String>()
            skipSpace()
            if take(UInt8(ascii: "}")) { return }
            repeat {
                skipSpace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw .malformed }
                let key = try string()
                guard seen.insert(key).inserted else {
                    path.append(.key(key))
                    throw .problem("\(place) is given twice: give each field once")
                }
                skipSpace()
                guard take(UInt8(ascii: ":")) else { throw .malformed }
                path.append(.key(key))
                try value(depth: depth)
                path.removeLast()
                skipSpace()
            } while take(UInt8(ascii: ","))
            guard take(UInt8(ascii: "}")) else { throw .malformed }
        }

        private mutating func array(depth: Int) throws(Stop) {
            index += 1
            skipSpace()
            if take(UInt8(ascii: "]")) { return }
            var count = 0
            repeat {
                path.append(.index(count))
                try value(depth: depth)
                path.removeLast()
                count += 1
                skipSpace()
            } while take(UInt8(ascii: ","))
            guard take(UInt8(ascii: "]")) else { throw .malformed }
        }

        /// A string's text, escapes decoded (a key spelled `"\u0061mount"` is `amount` to every decoder).
        private mutating func string() throws(Stop) -> String {
            index += 1
            var text: [UInt8] = []
            while index < bytes.count {
                let byte = bytes[index]
                index += 1
                switch byte {
                case UInt8(ascii: "\""):
                    return String(decoding: text, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    guard index < bytes.count else { throw .malformed }
                    let escape = bytes[index]
                    index += 1
                    switch escape {
                    case UInt8(ascii: "u"):
                        var scalar = try hex4()
                        if (0xD800..<0xDC00).contains(scalar), index + 1 < bytes.count,
                           bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") {
                            index += 2
                            let low = try hex4()
                            guard (0xDC00..<0xE000).contains(low) else { throw .malformed }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        }
                        guard let unicode = Unicode.Scalar(scalar) else { throw .malformed }
                        text += Array(String(Character(unicode)).utf8)
                    case UInt8(ascii: "n"): text.append(0x0A)
                    case UInt8(ascii: "t"): text.append(0x09)
                    case UInt8(ascii: "r"): text.append(0x0D)
                    case UInt8(ascii: "b"): text.append(0x08)
                    case UInt8(ascii: "f"): text.append(0x0C)
                    default: text.append(escape)  // \" \\ \/ (anything else the decoder refuses)
                    }
                default:
                    text.append(byte)
                }
            }
            throw .malformed
        }

        private mutating func hex4() throws(Stop) -> UInt32 {
            guard index + 4 <= bytes.count else { throw .malformed }
            var value: UInt32 = 0
            for byte in bytes[index..<index + 4] {
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: throw .malformed
                }
                value = value << 4 | UInt32(digit)
            }
            index += 4
            return value
        }

        private mutating func number() throws(Stop) {
            let start = index
            while index < bytes.count, Self.numberBytes.contains(bytes[index]) { index += 1 }
            guard wholeNumbersOnly else { return }
            let spelled = bytes[start..<index]
            if spelled.contains(where: { $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "e") || $0 == UInt8(ascii: "E") }) {
                throw .problem("\(place) is \(String(decoding: spelled.prefix(40), as: UTF8.self)): give a whole number, without a fraction or an exponent")
            }
        }

        private static let literals = [Array("true".utf8), Array("false".utf8), Array("null".utf8)]
        private static let numberBytes = Set(Array("0123456789-+.eE".utf8))

        private mutating func take(_ byte: UInt8) -> Bool {
            guard index < bytes.count, bytes[index] == byte else { return false }
            index += 1
            return true
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
}
