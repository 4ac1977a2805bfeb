/// A terminal's id, 1–65535, unique per box: it names the terminal in every intent, log entry and upload, and with
/// the terminal's sequence it is a transaction's permanent identity. 0 means "no terminal" (a read-only tool).
public struct TerminalID: RawRepresentable, Hashable, Comparable, Sendable, Codable, CustomStringConvertible,
    ExpressibleByIntegerLiteral {
    public let rawValue: UInt16

    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public init(_ id: UInt16) { rawValue = id }
    public init(integerLiteral value: UInt16) { rawValue = value }

    /// An id read from a record or a file: `nil` when it does not fit 1–65535.
    public init?(checking value: Int) {
        guard (1...Int(UInt16.max)).contains(value) else { return nil }
        rawValue = UInt16(value)
    }

    /// No terminal: tools that only read cards.
    public static let none = TerminalID(0)

    public var isNone: Bool { rawValue == 0 }
    public static func < (lhs: TerminalID, rhs: TerminalID) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "\(rawValue)" }
}
