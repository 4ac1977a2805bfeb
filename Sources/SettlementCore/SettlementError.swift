/// A settlement error: a code the API returns and a one-line message (what, why, what to do).
public struct SettlementError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable, Codable, CaseIterable {
        case badRequest = "bad-request"
        case notFound = "not-found"
        case conflict
        case unauthorized
        case unavailable
        case storage
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
