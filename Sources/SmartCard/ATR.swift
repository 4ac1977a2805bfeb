/// An Answer To Reset, decoded as far as a contactless storage card needs (PC/SC Part 3, section 3.1.3.2.3).
///
/// Contactless readers synthesise `3B 8F 80 01 80 4F 0C A0 00 00 03 06 SS NN NN 00 00 00 00 TCK`
/// for storage cards: SS is the standard, NN NN the card name.
public struct ATR: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) { self.bytes = bytes }

    /// What a contactless storage-card ATR names.
    public enum CardName: Hashable, Sendable, CustomStringConvertible {
        case mifareClassic1K
        case mifareClassic4K
        case mifareUltralight
        case mifareMini
        /// A storage-card ATR with another name code.
        case otherStorageCard(UInt16)
        /// Not a PC/SC Part 3 storage-card ATR (a processor card, or a reader that does not follow Part 3).
        case notStorageCard

        public var description: String {
            switch self {
            case .mifareClassic1K: return "MIFARE Classic 1K"
            case .mifareClassic4K: return "MIFARE Classic 4K"
            case .mifareUltralight: return "MIFARE Ultralight"
            case .mifareMini: return "MIFARE Mini"
            case .otherStorageCard(let code): return "storage card, name code \(Hex.encode([UInt8(code >> 8), UInt8(code & 0xFF)]))"
            case .notStorageCard: return "not a contactless storage card"
            }
        }
    }

    /// The PC/SC registered application provider id for storage cards.
    static let pcscRID: [UInt8] = [0xA0, 0x00, 0x00, 0x03, 0x06]

    /// The card name the ATR declares.
    public var cardName: CardName {
        guard bytes.count == 20, bytes[0] == 0x3B, bytes[1] == 0x8F, bytes[4] == 0x80, bytes[5] == 0x4F, bytes[6] == 0x0C,
              Array(bytes[7..<12]) == Self.pcscRID
        else { return .notStorageCard }
        switch UInt16(bytes[13]) << 8 | UInt16(bytes[14]) {
        case 0x0001: return .mifareClassic1K
        case 0x0002: return .mifareClassic4K
        case 0x0003: return .mifareUltralight
        case 0x0026: return .mifareMini
        case let code: return .otherStorageCard(code)
        }
    }

    /// The standard byte SS (03 = ISO 14443 A part 3), when this is a storage-card ATR.
    public var standard: UInt8? { cardName == .notStorageCard ? nil : bytes[12] }

    /// Whether the check byte TCK (XOR of every byte after TS) is right. ATRs without TCK are not checked here.
    public var checksumIsValid: Bool {
        guard bytes.count > 2 else { return false }
        return bytes.dropFirst().reduce(0, ^) == 0
    }

    /// Builds the storage-card ATR for a card name code (what the emulator presents).
    public static func storageCard(nameCode: UInt16, standard: UInt8 = 0x03) -> ATR {
        var bytes: [UInt8] = [0x3B, 0x8F, 0x80, 0x01, 0x80, 0x4F, 0x0C] + pcscRID
        bytes += [standard, UInt8(nameCode >> 8), UInt8(nameCode & 0xFF), 0, 0, 0, 0]
        bytes.append(bytes.dropFirst().reduce(0, ^))
        return ATR(bytes: bytes)
    }

    public var description: String { Hex.encode(bytes, separator: " ") }
}
