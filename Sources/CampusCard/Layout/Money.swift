/// An amount of money in fen (分), the only unit the project computes in. Never a floating-point number.
public struct Fen: RawRepresentable, Hashable, Comparable, Sendable, Codable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    public let rawValue: Int

    public init(rawValue: Int) { self.rawValue = rawValue }
    public init(_ fen: Int) { rawValue = fen }
    /// A literal is fen: `Fen(1250)` and `1250 as Fen` are 12.50 yuan.
    public init(integerLiteral fen: Int) { rawValue = fen }

    public static func < (lhs: Fen, rhs: Fen) -> Bool { lhs.rawValue < rhs.rawValue }
    /// Sums and differences stay in fen (and trap on overflow, like Int).
    public static func + (lhs: Fen, rhs: Fen) -> Fen { Fen(lhs.rawValue + rhs.rawValue) }
    public static func - (lhs: Fen, rhs: Fen) -> Fen { Fen(lhs.rawValue - rhs.rawValue) }
    public static func += (lhs: inout Fen, rhs: Fen) { lhs = lhs + rhs }
    public static func -= (lhs: inout Fen, rhs: Fen) { lhs = lhs - rhs }
    public static let zero = Fen(0)

    /// The most a card value block can hold (Int32).
    public static let cardMaximum = Fen(Int(Int32.max))

    /// "12.50", "-0.05": yuan with two decimals.
    public var yuan: String {
        let magnitude = rawValue.magnitude
        let cents = magnitude % 100
        return (rawValue < 0 ? "-" : "") + "\(magnitude / 100)." + (cents < 10 ? "0" : "") + "\(cents)"
    }

    public var description: String { "¥" + yuan }

    /// Parses an amount typed in yuan: "12", "12.5", "12.50". Refuses negatives, more than two decimals,
    /// anything that is not a number, and amounts a card cannot hold.
    public init(yuan text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { throw AmountError(.empty, "no amount given: type it in yuan, e.g. 12.50") }
        if trimmed.hasPrefix("-") { throw AmountError(.negative, "\"\(text)\" is negative: amounts are positive yuan, e.g. 12.50") }
        let parts = trimmed.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, let whole = parts.first, !whole.isEmpty || parts.count == 2,
              whole.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            throw AmountError(.notANumber, "\"\(text)\" is not an amount in yuan: use digits and at most one point, e.g. 12.50")
        }
        let fraction = parts.count == 2 ? parts[1] : ""
        guard fraction.allSatisfy({ $0.isASCII && $0.isNumber }), !(parts.count == 2 && fraction.isEmpty && whole.isEmpty) else {
            throw AmountError(.notANumber, "\"\(text)\" is not an amount in yuan: use digits and at most one point, e.g. 12.50")
        }
        guard fraction.count <= 2 else {
            throw AmountError(.tooManyDecimals, "\"\(text)\" has more than two decimals: the smallest unit is 0.01 yuan (1 fen)")
        }
        let wholeDigits = whole.drop { $0 == "0" }
        guard wholeDigits.count <= 8, let yuan = Int(whole.isEmpty ? "0" : String(whole)) else {
            throw AmountError(.tooLarge, "\"\(text)\" is too large: a card holds at most \(Fen.cardMaximum.yuan) yuan")
        }
        let fen = yuan * 100 + (Int(fraction.padding(toLength: 2, withPad: "0", startingAt: 0)) ?? 0)
        guard fen <= Fen.cardMaximum.rawValue else {
            throw AmountError(.tooLarge, "\"\(text)\" is too large: a card holds at most \(Fen.cardMaximum.yuan) yuan")
        }
        rawValue = fen
    }
}

/// An amount that could not be parsed: why (a code) and the one-line message (what, why, what to type instead).
public struct AmountError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case empty, negative, notANumber = "not-a-number", tooManyDecimals = "too-many-decimals", tooLarge = "too-large"
    }
    public let code: Code
    public let description: String
    public init(_ code: Code, _ description: String) {
        self.code = code
        self.description = description
    }
}
