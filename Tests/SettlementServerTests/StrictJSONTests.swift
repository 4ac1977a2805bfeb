import StrictJSON
import Testing

/// The checks settlementd's bodies and cardd's configuration go through before JSONDecoder reads them.
@Suite struct StrictJSONTests {
    func problem(_ text: String, whole: Bool = true) -> String? {
        if case let .problem(problem) = StrictJSON.check(Array(text.utf8), wholeNumbersOnly: whole) { return problem }
        return nil
    }

    @Test func whatTheDecoderReadsAloneIsLetThrough() {
        #expect(problem(#"{"a": [1, -2, 0, {"b": "x\"y\\", "c": null, "d": true}], "e": "\u00e9\ud83d\ude00", "f": {}}"#) == nil)
        #expect(problem(#"{"a": 1.5}"#, whole: false) == nil)
        // The same key in two objects is two keys.
        #expect(problem(#"{"a": {"k": 1}, "b": {"k": 2}, "c": [{"k": 1}, {"k": 2}]}"#) == nil)
    }

    @Test func whatItCannotReadIsNotJSONThoughTheDecoderMightReadIt() {
        for text in [#"{"a": "#, #"{"a" 1, "a": 2}"#, #"{"a": 1} {"a": 2}"#, #"{"a": nul}"#, #"{"a": truer}"#, "records=1"] {
            #expect(StrictJSON.check(Array(text.utf8), wholeNumbersOnly: true) == .notJSON, "\(text)")
        }
        // A byte-order mark, UTF-16 and UTF-32 (all of which JSONDecoder reads, duplicate keys and all).
        let text = #"{"a": 1, "a": 2}"#
        let encodings: [[UInt8]] = [
            [0xEF, 0xBB, 0xBF] + Array(text.utf8),
            Array(text.utf16).flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] },
            Array(text.utf16).flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] },
            text.unicodeScalars.flatMap { [UInt8($0.value & 0xFF), 0, 0, 0] },
        ]
        for bytes in encodings { #expect(StrictJSON.check(bytes, wholeNumbersOnly: true) == .notJSON, "\(bytes.prefix(6))") }
    }

    @Test func aKeyTwiceIsNamedWhereverItIs() {
        #expect(problem(#"{"a": 1, "a": 1}"#) == "a is given twice: give each field once")
        #expect(problem(#"{"r": [{"x": 1}, {"x": 1, "y": 2, "x": 3}]}"#)?.hasPrefix("r[1].x is given twice") == true)
        // Spelled with escapes, a surrogate pair included, it is still the same key.
        #expect(problem(#"{"\ud83d\ude00": 1, "😀": 2}"#)?.hasPrefix("😀 is given twice") == true)
        #expect(problem(#"{"a\/b": 1, "a/b": 2}"#)?.hasPrefix("a/b is given twice") == true)
    }

    @Test func aNumberWithAFractionOrAnExponentIsNotACount() {
        for spelled in ["1e3", "1E3", "1.0", "-0.5", "2e-2", "1.5E+2"] {
            #expect(problem(#"{"n": [\#(spelled)]}"#) == "n[0] is \(spelled): give a whole number, without a fraction or an exponent")
        }
        #expect(problem(#"{"n": "1e3"}"#) == nil)
    }

    @Test func nestingIsBounded() {
        let deep = String(repeating: "[", count: 1_000_000) + String(repeating: "]", count: 1_000_000)
        #expect(problem(deep)?.contains("deeper than \(StrictJSON.maximumDepth) levels") == true)
        let allowed = String(repeating: "[", count: StrictJSON.maximumDepth) + String(repeating: "]", count: StrictJSON.maximumDepth)
        #expect(problem(allowed) == nil)
    }
}
