/// Hexadecimal text for byte arrays: the form field technicians read and type.
public enum Hex {
    /// Upper-case hex with an optional separator: `Hex.encode([0xFF, 0xCA], separator: " ")` is `"FF CA"`.
    public static func encode<Bytes: Sequence<UInt8>>(_ bytes: Bytes, separator: String = "") -> String {
        let digits: [Character] = Array("0123456789ABCDEF")
        var text = ""
        for (index, byte) in bytes.enumerated() {
            if index > 0 { text += separator }
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return text
    }

    /// Parses hex text, ignoring spaces, colons and dashes; `nil` when a character is not hex or a digit is odd.
    public static func decode(_ text: String) -> [UInt8]? {
        var nibbles: [UInt8] = []
        nibbles.reserveCapacity(text.utf8.count)
        for scalar in text.utf8 {
            switch scalar {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): nibbles.append(scalar - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): nibbles.append(scalar - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): nibbles.append(scalar - UInt8(ascii: "A") + 10)
            case UInt8(ascii: " "), UInt8(ascii: ":"), UInt8(ascii: "-"), UInt8(ascii: "\t"): continue
            default: return nil
            }
        }
        guard nibbles.count % 2 == 0 else { return nil }
        return stride(from: 0, to: nibbles.count, by: 2).map { nibbles[$0] << 4 | nibbles[$0 + 1] }
    }
}
