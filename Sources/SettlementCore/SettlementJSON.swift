import Foundation

/// The wire's JSON: dates as RFC 3339 / ISO 8601 strings in UTC ("2026-11-30T17:42:00Z"), amounts as integer fen,
/// keys sorted (stable bodies, stable signatures). Both ends of the API use these.
public enum SettlementJSON {
    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
