import StrictJSON
import Testing

/// The checks settlementd's bodies and cardd's configuration go through before JSONDecoder reads them.
@Suite struct StrictJSONTests {
    func problem(_ text: String, whole: Bool = true) -> String? { StrictJSON.problem(in: Array(text.utf8), wholeNumbersOnly: whole) }

    @Test func whatTheDecoderReadsAloneIsLetThrough() {
        #expect(problem(#"{"a": [1, -2, 0, {"b": "x\"y\\", "c": null, "d": true}], "e": "\u00e9\ud83d\ude00", "f": {}}"#) == nil)
        #expect(problem(#"{"a": 1.5}"#, whole: false) == nil)
        // The same key in two objects is two keys.
        #expect(problem(#"{"a": {"k": 1}, "b": {"k": 2}, "c": [{"k": 1}, {"k": 2}]}"#) == nil)
        // Not JSON: left to the decoder, which names what is wrong.
        #expect(problem(#"{"a": "#) == nil)
        #expect(problem(#"{"a" 1, "a": 2}"#) == nil)
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
