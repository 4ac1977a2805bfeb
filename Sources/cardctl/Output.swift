import Foundation
import SmartCard

/// Writes to standard error without buffering surprises.
func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// Encodes a value as pretty JSON with sorted keys on standard output.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// One block as a terminal hex line: "  12  00 11 22 ... |ascii|".
/// Whether byte `index` of a sector trailer is key material (key A 0-5, key B 10-15), never printed.
func isTrailerKeyByte(_ index: Int) -> Bool { index < 6 || index >= 10 }

/// Hex bytes joined by `separator`; with `maskKeys` the key bytes of a sector trailer show as "••".
func maskedHex(_ bytes: [UInt8], maskKeys: Bool, separator: String = "") -> String {
    bytes.enumerated().map { maskKeys && isTrailerKeyByte($0.offset) ? "••" : Hex.encode([$0.element]) }.joined(separator: separator)
}

/// With `maskKeys` the key bytes of a sector trailer (0-5, 10-15) show as "••".
func hexLine(block: Int, bytes: [UInt8]?, note: String = "", maskKeys: Bool = false) -> String {
    let number = String(block).leftPadded(to: 4)
    guard let bytes else { return "\(number)  -- -- -- -- -- -- -- -- -- -- -- -- -- -- -- --  \(note)" }
    let hex = maskedHex(bytes, maskKeys: maskKeys, separator: " ")
    let ascii = String(bytes.enumerated().map {
        maskKeys && isTrailerKeyByte($0.offset) || !(0x20..<0x7F).contains($0.element) ? "." : Character(UnicodeScalar($0.element))
    })
    return "\(number)  \(hex)  |\(ascii)|\(note.isEmpty ? "" : "  " + note)"
}

extension String {
    func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
    func rightPadded(to width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
