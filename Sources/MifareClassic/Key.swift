/// Which of a sector's two keys.
public enum KeyType: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    case a = "A"
    case b = "B"

    /// The MIFARE authentication command code the reader sends (60 = key A, 61 = key B).
    public var authenticationCode: UInt8 { self == .a ? 0x60 : 0x61 }

    public init?(authenticationCode: UInt8) {
        switch authenticationCode {
        case 0x60: self = .a
        case 0x61: self = .b
        default: return nil
        }
    }

    public var description: String { "key \(rawValue)" }
}

/// A 6-byte MIFARE Classic key.
///
/// Its descriptions never show the bytes: keys must not reach logs, errors or screens. Code that
/// must write a key (a dump file, a LOAD KEYS APDU) reads `bytes` explicitly.
public struct MifareKey: Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public let bytes: [UInt8]

    /// `nil` unless exactly six bytes.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 6 else { return nil }
        self.bytes = bytes
    }

    /// Parses 12 hex digits (spaces and colons allowed).
    public init?(hex: String) {
        var nibbles: [UInt8] = []
        for scalar in hex.utf8 {
            switch scalar {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): nibbles.append(scalar - 48)
            case UInt8(ascii: "a")...UInt8(ascii: "f"): nibbles.append(scalar - 87)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): nibbles.append(scalar - 55)
            case UInt8(ascii: " "), UInt8(ascii: ":"): continue
            default: return nil
            }
        }
        guard nibbles.count == 12 else { return nil }
        self.bytes = stride(from: 0, to: 12, by: 2).map { nibbles[$0] << 4 | nibbles[$0 + 1] }
    }

    /// FF FF FF FF FF FF: the transport key of a new card.
    public static let transport = MifareKey(bytes: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])!
    /// 00 00 00 00 00 00.
    public static let zero = MifareKey(bytes: [0, 0, 0, 0, 0, 0])!

    /// Redacted: a key is never printed.
    public var description: String { "<key redacted>" }
    public var debugDescription: String { "MifareKey(<redacted>)" }
}
