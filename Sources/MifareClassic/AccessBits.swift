/// The access condition of one block group: the three bits C1 C2 C3 of the datasheet (NXP MF1S50 §8.7).
public struct AccessCondition: Hashable, Sendable, CustomStringConvertible {
    /// `C1 << 2 | C2 << 1 | C3`, 0...7; e.g. 0b110 is the value-block condition, 0b000 the transport one for data.
    public let code: UInt8

    public init?(code: UInt8) {
        guard code < 8 else { return nil }
        self.code = code
    }

    public init(c1: Bool, c2: Bool, c3: Bool) {
        code = (c1 ? 4 : 0) | (c2 ? 2 : 0) | (c3 ? 1 : 0)
    }

    public var c1: Bool { code & 4 != 0 }
    public var c2: Bool { code & 2 != 0 }
    public var c3: Bool { code & 1 != 0 }

    /// "110" style, the way the datasheet writes it.
    public var description: String { "\(c1 ? 1 : 0)\(c2 ? 1 : 0)\(c3 ? 1 : 0)" }

    /// Transport configuration of data blocks: everything with key A or B.
    public static let transportData = AccessCondition(code: 0b000)!
    /// Value block: read A|B, write B, increment B, decrement/transfer/restore A|B.
    public static let valueBlock = AccessCondition(code: 0b110)!
    /// Transport configuration of the trailer: key A writes everything, key B readable.
    public static let transportTrailer = AccessCondition(code: 0b001)!
}

/// Who may do something: the keys that may, in the datasheet's terms.
public struct KeyPermission: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let keyA = KeyPermission(rawValue: 1)
    public static let keyB = KeyPermission(rawValue: 2)
    public static let never: KeyPermission = []
    public static let either: KeyPermission = [.keyA, .keyB]

    public func allows(_ key: KeyType) -> Bool { contains(key == .a ? .keyA : .keyB) }

    public var description: String {
        switch self {
        case .either: return "A|B"
        case .keyA: return "A"
        case .keyB: return "B"
        default: return "never"
        }
    }
}

/// An operation on a data block.
public enum DataBlockOperation: String, Sendable, CaseIterable, CustomStringConvertible {
    case read, write, increment, decrement, transfer, restore
    public var description: String { rawValue }
}

/// A field of the sector trailer.
public enum TrailerField: String, Sendable, CaseIterable, CustomStringConvertible {
    case keyA = "key A", accessBits = "access bits", keyB = "key B"
    public var description: String { rawValue }
}

/// Reading or writing a trailer field.
public enum TrailerAccess: String, Sendable, CaseIterable {
    case read, write
}

/// Why access bits or a trailer were refused.
public struct AccessBitsError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// The access bits of a sector (trailer bytes 6, 7, 8): one condition per block group, group 3 being the trailer.
///
/// Bytes 6-8 hold every bit twice, once inverted. A card whose inverted bits do not match blocks the whole sector
/// for good, so these bytes are only ever built from conditions, and parsing inconsistent bytes throws.
public struct AccessBits: Hashable, Sendable, CustomStringConvertible {
    /// The conditions of groups 0, 1, 2 (data) and 3 (trailer).
    public let groups: [AccessCondition]

    public init(groups: [AccessCondition]) {
        precondition(groups.count == 4, "a sector has four access groups")
        self.groups = groups
    }

    public init(data: AccessCondition, trailer: AccessCondition) {
        self.init(groups: [data, data, data, trailer])
    }

    /// Transport configuration `FF 07 80`: data 000, trailer 001.
    public static let transport = AccessBits(data: .transportData, trailer: .transportTrailer)

    /// Parses trailer bytes 6, 7, 8; throws when an inverted bit disagrees with its twin.
    public init(bytes: [UInt8]) throws {
        guard bytes.count == 3 else {
            throw AccessBitsError(message: "access bits are 3 bytes (trailer bytes 6-8), \(bytes.count) given")
        }
        let c1 = bytes[1] >> 4, notC1 = bytes[0] & 0x0F
        let c2 = bytes[2] & 0x0F, notC2 = bytes[0] >> 4
        let c3 = bytes[2] >> 4, notC3 = bytes[1] & 0x0F
        guard c1 ^ notC1 == 0x0F, c2 ^ notC2 == 0x0F, c3 ^ notC3 == 0x0F else {
            throw AccessBitsError(message: "access bits \(Hex.string(bytes)) are inconsistent (a bit and its inverted copy "
                + "agree): a card would lock this sector for good; rebuild them from conditions")
        }
        func bit(_ nibble: UInt8, _ group: Int) -> Bool { (nibble >> UInt8(group)) & 1 == 1 }
        groups = (0..<4).map { AccessCondition(c1: bit(c1, $0), c2: bit(c2, $0), c3: bit(c3, $0)) }
    }

    /// Trailer bytes 6, 7, 8.
    public var bytes: [UInt8] {
        var c1: UInt8 = 0, c2: UInt8 = 0, c3: UInt8 = 0
        for (index, condition) in groups.enumerated() {
            if condition.c1 { c1 |= 1 << index }
            if condition.c2 { c2 |= 1 << index }
            if condition.c3 { c3 |= 1 << index }
        }
        let byte6: UInt8 = (~c2 & 0x0F) << 4 | (~c1 & 0x0F)
        let byte7: UInt8 = c1 << 4 | (~c3 & 0x0F)
        let byte8: UInt8 = c3 << 4 | c2
        return [byte6, byte7, byte8]
    }

    /// Whether key B can be read from the trailer (trailer conditions 000, 010, 001). Then key B is data, not a key:
    /// authenticating with it succeeds but the card refuses every access that follows (datasheet §8.7.3).
    public var keyBIsReadable: Bool { Self.trailerTable[Int(groups[3].code)].read[2] != .never }

    /// Whether `key` may perform `operation` on a data block of `group` (0...2), both datasheet tables applied,
    /// the readable-key-B rule included.
    public func permits(_ operation: DataBlockOperation, group: Int, key: KeyType) -> Bool {
        precondition((0...2).contains(group), "data groups are 0...2")
        if key == .b && keyBIsReadable { return false }
        return Self.dataPermission(groups[group], operation).allows(key)
    }

    /// Whether `key` may read or write `field` of the trailer.
    public func permitsTrailer(_ access: TrailerAccess, _ field: TrailerField, key: KeyType) -> Bool {
        if key == .b && keyBIsReadable { return false }
        return Self.trailerPermission(groups[3], access, field).allows(key)
    }

    /// The datasheet's data-block table row: who may read, write, increment, decrement/transfer/restore.
    public static func dataPermission(_ condition: AccessCondition, _ operation: DataBlockOperation) -> KeyPermission {
        let row = dataTable[Int(condition.code)]
        switch operation {
        case .read: return row[0]
        case .write: return row[1]
        case .increment: return row[2]
        case .decrement, .transfer, .restore: return row[3]
        }
    }

    /// The datasheet's trailer table row for one field.
    public static func trailerPermission(_ condition: AccessCondition, _ access: TrailerAccess, _ field: TrailerField) -> KeyPermission {
        let row = trailerTable[Int(condition.code)]
        let index = field == .keyA ? 0 : field == .accessBits ? 1 : 2
        return access == .read ? row.read[index] : row.write[index]
    }

    /// Group `group` in words, e.g. "read A|B, write B, increment B, decrement A|B".
    public func describeGroup(_ group: Int) -> String {
        let condition = groups[group]
        if group == 3 {
            let fields = TrailerField.allCases.map { field in
                let read = Self.trailerPermission(condition, .read, field), write = Self.trailerPermission(condition, .write, field)
                return "\(field) read \(read) write \(write)"
            }
            return "[\(condition)] " + fields.joined(separator: ", ")
        }
        let words = [DataBlockOperation.read, .write, .increment, .decrement].map { "\($0) \(Self.dataPermission(condition, $0))" }
        return "[\(condition)] " + words.joined(separator: ", ") + (keyBIsReadable ? " (key B readable: B unusable)" : "")
    }

    public var description: String {
        "access " + groups.map(\.description).joined(separator: " ") + " (" + Hex.string(bytes) + ")"
    }

    // Indexed by code C1C2C3: read, write, increment, decrement/transfer/restore (MF1S50 Table 8).
    private static let dataTable: [[KeyPermission]] = [
        /* 000 */ [.either, .either, .either, .either],
        /* 001 */ [.either, .never, .never, .either],
        /* 010 */ [.either, .never, .never, .never],
        /* 011 */ [.keyB, .keyB, .never, .never],
        /* 100 */ [.either, .keyB, .never, .never],
        /* 101 */ [.keyB, .never, .never, .never],
        /* 110 */ [.either, .keyB, .keyB, .either],
        /* 111 */ [.never, .never, .never, .never],
    ]

    // Indexed by code C1C2C3: (read, write) of key A, access bits, key B (MF1S50 Table 7).
    private static let trailerTable: [(read: [KeyPermission], write: [KeyPermission])] = [
        /* 000 */ ([.never, .keyA, .keyA], [.keyA, .never, .keyA]),
        /* 001 */ ([.never, .keyA, .keyA], [.keyA, .keyA, .keyA]),
        /* 010 */ ([.never, .keyA, .keyA], [.never, .never, .never]),
        /* 011 */ ([.never, .either, .never], [.keyB, .keyB, .keyB]),
        /* 100 */ ([.never, .either, .never], [.keyB, .never, .keyB]),
        /* 101 */ ([.never, .either, .never], [.never, .keyB, .never]),
        /* 110 */ ([.never, .either, .never], [.never, .never, .never]),
        /* 111 */ ([.never, .either, .never], [.never, .never, .never]),
    ]
}

enum Hex {
    private static let digits = Array("0123456789ABCDEF")
    static func string(_ bytes: [UInt8]) -> String {
        String(bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0x0F)]] })
    }

    static func bytes(_ text: String) -> [UInt8]? {
        let nibbles = text.compactMap { $0.isWhitespace ? nil : $0.hexDigitValue.map(UInt8.init) ?? 0xFF }
        guard nibbles.count % 2 == 0, !nibbles.contains(0xFF) else { return nil }
        return stride(from: 0, to: nibbles.count, by: 2).map { nibbles[$0] << 4 | nibbles[$0 + 1] }
    }
}
